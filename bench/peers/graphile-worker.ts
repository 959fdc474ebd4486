/**
 * A graphile-worker worker process for the peer comparison, started by bench/peers/graphile.ts
 * (`node bench/.build/graphile-worker.js` from the repository root: this file as plain
 * JavaScript, ./build-workers.ts) with `workerEnv`'s variables plus `BENCH_PG_URL` and
 * `BENCH_GRAPHILE_SCHEMA`. Its task list has no `other`, so it never fetches those jobs.
 *
 * Configured as graphile-worker's performance guide (https://worker.graphile.org/docs/performance)
 * configures it for many small jobs:
 * - `localQueue.size`: the pool locks and fetches jobs in batches and hands them to its
 *   `concurrentJobs` slots, instead of one query per job;
 * - `completeJobBatchDelay` / `failJobBatchDelay` 0: completions (failures) made in the same
 *   tick are written in one statement;
 * - LISTEN/NOTIFY (always on) wakes an idle pool when jobs are added; `pollInterval` keeps its
 *   default 2 s, a fallback only;
 * - `maxPoolSize` as the option's documentation recommends (`concurrentJobs + 2`, at least 10);
 *   connections open on demand, and these tasks never use one;
 * - no crontab, and logging of errors and warnings only: per-job info lines would dominate.
 */
import { EventEmitter } from "node:events";
import { Logger, run, type Task, type WorkerEvents } from "graphile-worker";
import { AGGRESSIVE_RESET_LOCKED_MS } from "./graphile.js";
import type { JobKind } from "./system.js";
import { emit, wallNow, workerOptions } from "./worker-process.js";

/**
 * Jobs the pool fetches (and locks) at once: the guide's benchmark uses 500, and on this machine
 * (concurrency 50, noop jobs) it drained faster than 51, 250 or 1,000.
 */
const LOCAL_QUEUE_SIZE = 500;

const { concurrency, settings, events, hold } = workerOptions();
const connectionString = process.env.BENCH_PG_URL;
const schema = process.env.BENCH_GRAPHILE_SCHEMA;
if (!connectionString || !schema) {
  throw new Error("BENCH_PG_URL and BENCH_GRAPHILE_SCHEMA must be set");
}

const payloadId = (payload: unknown) => (payload as { id: string }).id;

const taskList: Record<Exclude<JobKind, "other">, Task> = {
  noop: async () => undefined,
  stamp: async (payload) => {
    if (!events) return;
    const id = payloadId(payload);
    emit({ ev: "start", id, t: wallNow(), pid: process.pid });
    emit({ ev: "done", id, t: wallNow(), pid: process.pid });
  },
  hold: async (payload) => {
    const id = payloadId(payload);
    if (events) emit({ ev: "start", id, t: wallNow(), pid: process.pid });
    // Held until the process is SIGKILLed, so the job stays locked by a lost worker.
    if (hold) await new Promise<never>(() => undefined);
    if (events) emit({ ev: "done", id, t: wallNow(), pid: process.pid });
  },
};

const loud = new Set<string>(["error", "warning"]);
const logger = new Logger(() => (level, message) => {
  if (loud.has(level)) console.error(`graphile-worker ${level}: ${message}`);
});

const workerEvents: WorkerEvents = new EventEmitter();
// Ready once it LISTENs: a job added from then on wakes the pool at once.
workerEvents.once("pool:listen:success", () => emit({ ev: "ready", pid: process.pid }));

const runner = await run({
  taskList,
  parsedCronItems: [],
  // Our SIGTERM handler below exits 0; graphile-worker's re-raises the signal.
  noHandleSignals: true,
  preset: {
    worker: {
      connectionString,
      schema,
      concurrentJobs: concurrency,
      maxPoolSize: Math.max(10, concurrency + 2),
      logger,
      events: workerEvents,
      localQueue: { size: LOCAL_QUEUE_SIZE },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
      ...(settings === "aggressive" && {
        minResetLockedInterval: AGGRESSIVE_RESET_LOCKED_MS,
        maxResetLockedInterval: AGGRESSIVE_RESET_LOCKED_MS,
      }),
    },
  },
});

runner.promise.catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
process.once("SIGTERM", () => {
  runner.stop().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
});
