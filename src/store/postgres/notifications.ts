import pg from "pg";
import type { RetryRule } from "../../model/spec.js";
import { backoffDelay } from "../../recovery/backoff.js";
import { clientConfig, type PgLocation } from "./connection.js";

/** Reconnection delays after the listening connection drops: 100 ms doubling to 5 s, jittered. */
export const RECONNECT_BACKOFF: RetryRule = {
  maxAttempts: Infinity,
  backoff: "exponential",
  initialMs: 100,
  factor: 2,
  maxDelayMs: 5_000,
  jitter: "full",
};

/**
 * Wake-ups between processes over LISTEN/NOTIFY: one connection per process listens on the
 * store's channel and calls every subscriber when a transaction that queued work commits. Idle
 * workers wait on it instead of polling. When the connection drops (a server restart,
 * `pg_terminate_backend`), it reconnects with backoff, and subscribers are woken once it is back,
 * since notifications sent meanwhile were lost.
 */
export class Notifications {
  private readonly listeners = new Set<() => void>();
  private client: pg.Client | null = null;
  private connecting: Promise<void> | null = null;
  private closed = false;
  private failures = 0;
  private retry: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly location: PgLocation,
    /** The channel's name: one per schema, so stores in one database do not wake each other. */
    readonly channel: string,
  ) {}

  /** Calls `fn` on each wake-up; returns an unsubscribe. Starts listening on first use. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    if (!this.client && !this.connecting) void this.connect();
    return () => {
      this.listeners.delete(fn);
    };
  }

  private connect(): Promise<void> {
    this.connecting = (async () => {
      const client = new pg.Client(clientConfig(this.location));
      client.on("error", () => this.lost(client));
      client.on("end", () => this.lost(client));
      client.on("notification", () => this.wakeAll());
      try {
        await client.connect();
        await client.query(`LISTEN ${this.channel}`);
      } catch {
        // No longer connecting, so that losing it schedules the next attempt.
        this.connecting = null;
        this.lost(client);
        return;
      } finally {
        this.connecting = null;
      }
      if (this.closed) {
        await client.end().catch(() => undefined);
        return;
      }
      this.client = client;
      // Anything notified while no connection listened is lost: look for work now.
      if (this.failures > 0) this.wakeAll();
      this.failures = 0;
    })();
    return this.connecting;
  }

  private lost(client: pg.Client): void {
    if (this.client === client) this.client = null;
    client.end().catch(() => undefined);
    if (this.closed || this.retry || this.connecting) return;
    const delay = backoffDelay(RECONNECT_BACKOFF, ++this.failures, null, Math.random);
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.closed && !this.client) void this.connect();
    }, delay);
    this.retry.unref();
  }

  private wakeAll(): void {
    for (const l of this.listeners) l();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    await this.connecting;
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}
