/**
 * The demo's seeded fault injector and the simulated flaky tools the agents call. Every decision
 * is a function of the seed, the task and the attempt, never of time or of which worker runs it,
 * so a demo run is reproducible whichever worker happens to pick a task up. The one exception is
 * the staged outage of the search API, which the demo switches on and off while it watches.
 */
import { existsSync } from "node:fs";

/** The ways a simulated tool call can fail. */
export const FAULT_KINDS = ["rate_limited", "unavailable", "connection_reset", "hang"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults are injected only up to this attempt, so that every task eventually succeeds. */
export const MAX_FAULTY_ATTEMPT = 2;

/** What a simulated tool answers a 429 with, in seconds. */
export const RETRY_AFTER_SECONDS = 1;

/** The injector's settings. */
export interface FaultConfig {
  seed: number;
  /** Probability in [0, 1] that one attempt of a task hits a fault. */
  rate: number;
}

/** The fault planned for one attempt: its kind and which of the attempt's tool calls hits it. */
export interface Fault {
  kind: FaultKind;
  /** 0-based index of the failing call. */
  call: number;
}

/** An HTTP error as a client library would raise it: classified by `status` and `Retry-After`. */
export class SimulatedHttpError extends Error {
  override readonly name = "SimulatedHttpError";
  constructor(
    message: string,
    readonly status: number,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/** A socket error as Node raises it: classified by `code`. */
export class SimulatedNetworkError extends Error {
  override readonly name = "SimulatedNetworkError";
  readonly syscall = "read";
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** FNV-1a, 32 bits. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A deterministic generator of numbers in [0, 1) for the given parts (mulberry32). */
export function seededRandom(...parts: (string | number)[]): () => number {
  let state = hash32(parts.join("\u0000"));
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * The fault injected into `attempt` of the task `taskKey`, whose attempt makes `calls` tool calls,
 * or null for a clean attempt.
 */
export function faultFor(
  config: FaultConfig,
  taskKey: string,
  attempt: number,
  calls: number,
  kinds: readonly FaultKind[] = FAULT_KINDS,
): Fault | null {
  if (attempt > MAX_FAULTY_ATTEMPT || config.rate <= 0 || calls <= 0) return null;
  const random = seededRandom(config.seed, "fault", taskKey, attempt);
  if (random() >= config.rate) return null;
  const kind = kinds[Math.floor(random() * kinds.length)]!;
  return { kind, call: Math.floor(random() * calls) };
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Latency range of a simulated tool, in ms. */
export interface Latency {
  minMs: number;
  maxMs: number;
}

/** Where a tool call happens: which task and attempt, and the signal that ends the attempt. */
export interface CallSite {
  taskKey: string;
  attempt: number;
  signal: AbortSignal;
}

/**
 * A simulated external tool (a search API, a model API) with seeded latency and faults. One
 * attempt of a task makes a known number of calls; at most one of them fails.
 */
export class FlakyTool {
  /**
   * @param outage while `outage.file` exists the tool is down: every call fails with a 503 (the
   *   demo creates and removes the file to stage an outage). Its seeded faults are then never a
   *   503, so that only the outage exhausts the attempts a 503 is given.
   */
  constructor(
    readonly name: string,
    private readonly config: FaultConfig,
    private readonly latency: Latency,
    private readonly outage: { file: string | null } | null = null,
  ) {}

  /**
   * Makes call number `index` of the `calls` the attempt at `site` makes: waits the call's
   * latency, then fails if the injector planned a fault for this call, else returns `result()`.
   * A hang waits for the attempt's signal (its timeout) and never answers.
   */
  async call<T>(site: CallSite, index: number, calls: number, result: () => T): Promise<T> {
    const random = seededRandom(this.config.seed, "latency", site.taskKey, site.attempt, index);
    const { minMs, maxMs } = this.latency;
    await sleep(Math.round(minMs + random() * (maxMs - minMs)), site.signal);
    if (this.outage?.file && existsSync(this.outage.file)) {
      throw new SimulatedHttpError(`${this.name}: 503 Service Unavailable (outage)`, 503);
    }
    const kinds = this.outage ? FAULT_KINDS.filter((k) => k !== "unavailable") : FAULT_KINDS;
    const fault = faultFor(this.config, site.taskKey, site.attempt, calls, kinds);
    if (fault === null || fault.call !== index) return result();
    switch (fault.kind) {
      case "rate_limited":
        throw new SimulatedHttpError(`${this.name}: 429 Too Many Requests`, 429, {
          "retry-after": String(RETRY_AFTER_SECONDS),
        });
      case "unavailable":
        throw new SimulatedHttpError(`${this.name}: 503 Service Unavailable`, 503);
      case "connection_reset":
        throw new SimulatedNetworkError(`${this.name}: read ECONNRESET`, "ECONNRESET");
      case "hang":
        return new Promise<never>((_, reject) => {
          if (site.signal.aborted) reject(site.signal.reason);
          site.signal.addEventListener("abort", () => reject(site.signal.reason), { once: true });
        });
    }
  }
}
