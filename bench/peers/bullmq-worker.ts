/**
 * A BullMQ worker process for the peer comparison, started by `bullmq().startWorker` as
 * `node bench/.build/bullmq-worker.js` (this file as plain JavaScript, ./build-workers.ts) with
 * `workerEnv`'s variables plus `BENCH_REDIS_URL` and `BENCH_PREFIX`. Runs the `JobKind` handlers
 * and prints `WorkerEvent` lines. It never sees `other` jobs: they are in a queue of their own.
 */
import { Worker, type Job } from "bullmq";
import { DEFAULT_REDIS_URL, PREFIX, QUEUE, WORKER_SETTINGS } from "./bullmq.js";
import type { JobKind } from "./system.js";
import { emit, wallNow, workerOptions } from "./worker-process.js";

const options = workerOptions();
const { pid } = process;

const report = (ev: "start" | "done", id: string): void => {
  if (options.events) emit({ ev, id, t: wallNow(), pid });
};

const worker = new Worker<{ id: string }, void, JobKind>(
  QUEUE,
  async (job: Job<{ id: string }, void, JobKind>) => {
    const { id } = job.data;
    switch (job.name) {
      case "noop":
        return;
      case "stamp":
        report("start", id);
        report("done", id);
        return;
      case "hold":
        report("start", id);
        // Held until SIGKILL, so that its lock lapses and another worker has to recover the job.
        if (options.hold) await new Promise<never>(() => {});
        report("done", id);
        return;
    }
  },
  {
    connection: { url: process.env.BENCH_REDIS_URL ?? DEFAULT_REDIS_URL },
    prefix: process.env.BENCH_PREFIX ?? PREFIX,
    concurrency: options.concurrency,
    ...WORKER_SETTINGS[options.settings],
  },
);
// An `error` event with no listener would crash the process; BullMQ itself retries.
worker.on("error", (err) => console.error(`bullmq worker ${pid}:`, err));

process.once("SIGTERM", () => {
  void worker.close().then(() => process.exit(0));
});

await worker.waitUntilReady();
emit({ ev: "ready", pid });
