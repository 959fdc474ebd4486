/**
 * What every system under test provides to the comparison (`npm run bench:peers`), so that one
 * runner measures all of them the same way. Each system runs its workers as separate processes
 * that speak the same small protocol on stdout (see {@link WorkerEvent}).
 */
import type { WorkerHandle } from "./worker-process.js";

/**
 * The handlers every system's worker implements, with the same meaning; and `other`, which no
 * worker implements.
 */
export type JobKind =
  /** Returns at once: measures the system, not the work. */
  | "noop"
  /** Reports a `start` event, then returns. */
  | "stamp"
  /**
   * Reports `start`; in a worker started with `hold: true` it then never returns (it is killed
   * holding the job); in any other worker it reports `done` and returns.
   */
  | "hold"
  /**
   * Never taken by any worker: jobs that stay queued beside an idle worker (the memory run). Each
   * system routes them where its worker does not fetch, the way its users would keep work from a
   * worker: Mend gives the tasks a handler name the worker's module does not export (a worker
   * claims only tasks whose handler it has); graphile-worker a task identifier not in the
   * worker's task list (it fetches only identifiers it knows); pg-boss and BullMQ a queue of
   * their own, beside the worker's (a pg-boss worker fetches from the queues it `work()`s, a
   * BullMQ worker runs every job of its one queue whatever its name).
   */
  | "other";

/** One job to enqueue: `id` is unique in a run and comes back in the worker's events. */
export interface Job {
  id: string;
  kind: JobKind;
}

/**
 * A line a worker prints on stdout, as JSON, when events are on (`events: true`): once `ready`
 * when it takes jobs; `start` when a handler starts, `done` when it returned (for `stamp` and
 * `hold` jobs). `t` is wall-clock milliseconds with sub-millisecond precision
 * (`performance.timeOrigin + performance.now()`), `pid` the worker's process id.
 */
export type WorkerEvent =
  { ev: "ready"; pid: number } | { ev: "start" | "done"; id: string; t: number; pid: number };

/** Settings a worker runs with: the system's defaults, or its fastest supported failure detection. */
export type Settings = "default" | "aggressive";

export interface WorkerOptions {
  concurrency: number;
  settings: Settings;
  /** Print start/done events (latency and recovery runs; off for throughput). */
  events: boolean;
  /** This worker never finishes `hold` jobs (it is the one to be killed). */
  hold: boolean;
}

/** How a system detects a lost worker with given settings, for the report. */
export interface RecoverySettings {
  /** The settings in words, e.g. "lockDuration 30 s, stalledInterval 30 s". */
  description: string;
  /**
   * When detection takes too long to wait for in a benchmark (hours, or not configurable), the
   * documented time, in ms, reported instead of a measurement, and where it is documented.
   */
  documented?: { ms: number; source: string };
}

export interface System {
  /** Display name, e.g. "BullMQ". */
  readonly name: string;
  /** Package and version, e.g. "bullmq 6.7.6". */
  readonly version: string;
  /** Where it keeps its state, e.g. "Redis 7.0 at 127.0.0.1:6379". */
  readonly backend: string;
  /** "postgres" systems are compared with Mend on PostgreSQL; others with Mend on SQLite. */
  readonly kind: "embedded" | "postgres" | "redis";
  readonly recovery: Record<Settings, RecoverySettings>;
  /** Creates a fresh, empty namespace (schema, key prefix, file), removing any leftovers. */
  setup(): Promise<void>;
  /** Removes everything setup() and the runs created. */
  teardown(): Promise<void>;
  /** Enqueues the jobs durably, with the system's batch API where it has one. */
  enqueue(jobs: Job[]): Promise<void>;
  /** Starts one worker process ({@link spawnWorker}); resolves once it printed `ready`. */
  startWorker(options: WorkerOptions): Promise<WorkerHandle>;
  /** How many jobs have completed (read from the system's own store). */
  completed(): Promise<number>;
}
