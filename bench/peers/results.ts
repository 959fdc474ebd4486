/** The shape of `npm run bench:peers` results (bench/results/peers-*.json). */
import type { PolicyOverhead } from "./policy.js";
import type { Settings, System } from "./system.js";

export interface Throughput {
  concurrency: number;
  enqueuePerSec: number;
  processPerSec: number;
  endToEndPerSec: number;
}

export interface Latency {
  p50: number;
  p99: number;
}

/** One held job of a recovery run, in ms relative to the kill (negative: before it). */
export interface RecoveredJob {
  id: string;
  /** When the killed worker started it. */
  started: number;
  /** When another worker started it again (absent: never). */
  restarted?: number;
  /** When another worker finished it (absent: never, the job is lost). */
  done?: number;
}

export interface Recovery {
  settings: Settings;
  description: string;
  /**
   * Kill → another worker starts the job, and → it is done (ms); per job, p50 and p99. The
   * issue's figure. Not clamped: a system that restarts a job a fixed time after it started,
   * whether or not its worker is alive (pg-boss), can restart it before the kill (below 0).
   */
  restartP50?: number;
  restartP99?: number;
  doneP99?: number;
  /** The same from when the killed worker started the job. */
  fromStart?: { restartP50: number; restartP99: number; doneP99: number };
  /** From the last of the held jobs' starts to the kill (ms). */
  killAfterStart?: number;
  lost?: number;
  duplicates?: number;
  /** Every held job's times. */
  jobs?: RecoveredJob[];
  /** Not measured: the documented detection time, and where it is documented. */
  documented?: { ms: number; source: string };
}

/** An idle worker's memory beside a full queue of jobs it does not take. */
export interface Memory {
  /** Jobs queued, of a kind the worker does not take. */
  queued: number;
  concurrency: number;
  /** How long the worker was idle, after it was ready, when its memory was read (ms). */
  idleMs: number;
  /** VmRSS of the worker process (MiB): the figure. */
  rssMiB: number;
  /** VmHWM: the most it was resident at any time since it started (MiB). */
  hwmMiB: number;
  /** VmRSS each second of the idle time (MiB), the last one before the figure. */
  rssEachSecondMiB: number[];
  /** Jobs the system counted completed by then: 0 unless the worker took the queued jobs. */
  completed: number;
}

/** `bench/replay.ts --json`: Mend's rebuild of a SQLite store from its transition journal. */
export interface Replay {
  transitions: number;
  journalMiB: number;
  /** Filling the store through the write path (not the figure). */
  fillMs: number;
  /** Each rebuild (ms). */
  trialsMs: number[];
  medianMs: number;
}

/** One system's trials, by workload. */
export interface Trials {
  name: string;
  version: string;
  backend: string;
  kind: System["kind"];
  throughput: Throughput[][];
  latency: Latency[];
  recovery: Recovery[][];
  memory: Memory[];
}

export interface PeerResults {
  at: string;
  machine: { cpus: number; model: string; memoryGiB: number; node: string };
  tasks: number;
  trials: number;
  samples: number;
  /** Jobs queued in the memory runs. */
  queued: number;
  systems: Trials[];
  /** Mend only (no peer has an equivalent); absent when not run. */
  replay?: Replay;
  /** In-process call policy overhead, Mend against cockatiel, per trial; absent when not run. */
  policy?: PolicyOverhead[];
}
