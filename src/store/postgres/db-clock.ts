import { performance } from "node:perf_hooks";
import { type Clock, systemClock } from "../../engine/clock.js";

/** How often the offset to the server's clock is measured again. */
const RECALIBRATE_MS = 30_000;

/**
 * The database server's clock, read without a round trip (DESIGN.md invariant 8: PostgreSQL
 * leases use the database's time, so worker machines' clocks may drift). The server's time is
 * measured on open and every 30 s, halfway through the query's round trip as NTP does, and
 * carried forward on this process's monotonic clock in between: every process stamps leases,
 * deadlines and records on the same clock whatever its own wall clock says. It never goes back.
 */
export class DbClock implements Clock {
  private serverAt = 0;
  private localAt = 0;
  private last = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  /** `readServer` returns the server's time in ms since the epoch. */
  constructor(private readonly readServer: () => Promise<number>) {}

  /** Measures the offset once, then keeps it fresh until {@link DbClock.stop}. */
  async start(): Promise<void> {
    await this.calibrate();
    this.timer = setInterval(() => {
      // A failed measurement keeps the last offset: a lost connection is the store's to report.
      this.calibrate().catch(() => undefined);
    }, RECALIBRATE_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async calibrate(): Promise<void> {
    const before = performance.now();
    const server = await this.readServer();
    const after = performance.now();
    this.serverAt = server;
    this.localAt = (before + after) / 2;
  }

  now(): number {
    const t = Math.round(this.serverAt + (performance.now() - this.localAt));
    this.last = Math.max(this.last, t);
    return this.last;
  }

  setTimeout(fn: () => void, ms: number) {
    return systemClock.setTimeout(fn, ms);
  }

  clearTimeout(handle: Parameters<Clock["clearTimeout"]>[0]): void {
    systemClock.clearTimeout(handle);
  }
}
