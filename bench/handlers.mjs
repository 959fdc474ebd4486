// Handlers for the benchmark's worker processes.
import { setTimeout as sleep } from "node:timers/promises";

export default {
  /** Does nothing: measures the engine, not the work. */
  noop: async () => null,
  /** Reports when it started, on the wall clock with sub-millisecond precision. */
  stamp: async () => ({ startedAt: performance.timeOrigin + performance.now() }),
  /** Holds its first attempt for a minute (until its worker is killed); later attempts finish at once. */
  hold: async ({ attempt, signal }) => {
    if (attempt === 1) await sleep(60_000, undefined, { signal });
    return { attempt, pid: process.pid };
  },
};
