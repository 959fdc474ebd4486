/** The shape of `npm run bench:peers` results (bench/results/peers-*.json), and their statistics. */
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

export interface Recovery {
  settings: Settings;
  description: string;
  /** Kill → another worker starts the job, and → it is done (ms); per job, p50 and p99. */
  restartP50?: number;
  restartP99?: number;
  doneP99?: number;
  lost?: number;
  duplicates?: number;
  /** Not measured: the documented detection time, and where it is documented. */
  documented?: { ms: number; source: string };
}

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

export const median = (xs: number[]) => quantile(xs, 0.5);

/** One system's trials, by workload. */
export interface Trials {
  name: string;
  version: string;
  backend: string;
  kind: System["kind"];
  throughput: Throughput[][];
  latency: Latency[];
  recovery: Recovery[][];
}

export interface PeerResults {
  at: string;
  machine: { cpus: number; model: string; memoryGiB: number; node: string };
  tasks: number;
  trials: number;
  samples: number;
  systems: Trials[];
}
