/**
 * A pg-boss worker process for the peer comparison, started by bench/peers/pgboss.ts
 * (`node bench/.build/pgboss-worker.js` from the repository root: this file as plain JavaScript,
 * ./build-workers.ts) with `workerEnv`'s variables plus `BENCH_PG_URL` and `BENCH_PGBOSS_SCHEMA`.
 * It works the `bench` queue only; `other` jobs wait in a queue of their own.
 *
 * Configured for many small jobs:
 * - one `work()` loop fetching `batchSize` = concurrency jobs in one statement and running them
 *   together (pg-boss 10 hands a handler the whole batch, and completes it in one statement), so
 *   at most `concurrency` jobs are in flight. Several `work()` registrations of one job each
 *   would cost a query per job and poll `concurrency` times as often;
 * - `pollingIntervalSeconds` at its minimum, 0.5 s (pg-boss 10 has no LISTEN/NOTIFY);
 * - after a full batch, `notifyWorker` skips the wait: pg-boss's loop otherwise sleeps out the
 *   polling interval even with jobs waiting, capping a worker at `batchSize` jobs per 0.5 s;
 * - every instance supervises (maintenance); pg-boss lets one of them run it per interval,
 *   through a timestamp in its `version` table, so any surviving worker expires lost jobs;
 * - no cron (`schedule: false`), which would add its own queue and polling loop.
 *
 * A worker started with `hold: true` (the one to be killed) fetches with `fetch()` instead:
 * `work()` fails a job whose handler outlives the job's expiry from inside the process, then
 * fetches it again, where a killed worker would just leave it active.
 */
import PgBoss from "pg-boss";
import { type JobData, POLLING_INTERVAL_S, QUEUE, SETTINGS } from "./pgboss.js";
import { emit, wallNow, workerOptions } from "./worker-process.js";

const { concurrency, settings, events, hold } = workerOptions();
const connectionString = process.env.BENCH_PG_URL;
const schema = process.env.BENCH_PGBOSS_SCHEMA;
if (!connectionString || !schema) {
  throw new Error("BENCH_PG_URL and BENCH_PGBOSS_SCHEMA must be set");
}
const { expireInSeconds, maintenanceIntervalSeconds } = SETTINGS[settings];

const boss = new PgBoss({
  connectionString,
  schema,
  schedule: false,
  // Omitted, not undefined: pg-boss validates any key present.
  ...(maintenanceIntervalSeconds !== undefined && { maintenanceIntervalSeconds }),
});
boss.on("error", (err) => console.error("pg-boss error:", err));
await boss.start();
// pg-boss stamps a job with its queue's expiry when it is inserted: this worker's settings apply
// to the jobs enqueued after it started.
await boss.updateQueue(QUEUE, { name: QUEUE, expireInSeconds });

async function run({ id, kind }: JobData): Promise<void> {
  if (kind === "noop") return;
  if (events) emit({ ev: "start", id, t: wallNow(), pid: process.pid });
  // Held until the process is SIGKILLed, so the job stays active with no worker.
  if (kind === "hold" && hold) await new Promise<never>(() => undefined);
  if (events) emit({ ev: "done", id, t: wallNow(), pid: process.pid });
}

/** The `hold: true` worker's loop: up to `concurrency` jobs in flight, no in-process expiry. */
async function fetchLoop(): Promise<void> {
  let free = concurrency;
  for (;;) {
    const jobs = free > 0 ? await boss.fetch<JobData>(QUEUE, { batchSize: free }) : [];
    free -= jobs.length;
    for (const job of jobs) {
      run(job.data)
        .then(() => boss.complete(QUEUE, job.id))
        .then(
          () => free++,
          (err: unknown) => console.error("pg-boss complete:", err),
        );
    }
    if (jobs.length === 0) await new Promise((r) => setTimeout(r, POLLING_INTERVAL_S * 1000));
  }
}

if (hold) {
  void fetchLoop();
} else {
  // The handler first runs after a fetch's round trip to the database, by when work() resolved.
  const workerId: string = await boss.work<JobData>(
    QUEUE,
    { batchSize: concurrency, pollingIntervalSeconds: POLLING_INTERVAL_S },
    async (jobs) => {
      await Promise.all(jobs.map((j) => run(j.data)));
      // A full batch suggests more are waiting: fetch again at once.
      if (jobs.length === concurrency) boss.notifyWorker(workerId);
    },
  );
}

process.once("SIGTERM", () => {
  // Graceful: stops fetching, waits for the jobs in flight, closes the pool.
  void boss.stop({ graceful: true }).then(() => process.exit(0));
});

emit({ ev: "ready", pid: process.pid });
