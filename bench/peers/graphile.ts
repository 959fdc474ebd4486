/**
 * graphile-worker as a system under test: its own schema of the local PostgreSQL, jobs added
 * with its bulk API, workers run by bench/peers/graphile-worker.ts (built to plain JavaScript,
 * ./build-workers.ts). `other` jobs get that task identifier, which no worker's task list has.
 */
import { createRequire } from "node:module";
import { makeWorkerUtils, type WorkerUtils } from "graphile-worker";
import { workerScript } from "./build-workers.js";
import { dropSchema, PG_URL, pgBackend } from "./postgres.js";
import type { Job, System, WorkerOptions } from "./system.js";
import { spawnWorker, workerEnv, type WorkerHandle } from "./worker-process.js";

const SCHEMA = "bench_graphile";
const VERSION = (
  createRequire(import.meta.url)("graphile-worker/package.json") as { version: string }
).version;
/** Jobs per `add_jobs` call. */
const CHUNK = 1_000;
/** How long a lost worker's jobs stay locked: a constant in graphile-worker's SQL. */
const STALE_LOCK_MS = 4 * 60 * 60 * 1000;
const STALE_LOCK_SOURCE =
  "https://worker.graphile.org/docs/error-handling (Instantaneous exit); " +
  `\`interval '4 hours'\` in graphile-worker ${VERSION} dist/sql/resetLockedAt.js`;

/**
 * How often, in ms, a worker with `aggressive` settings sweeps for stale locks
 * (`minResetLockedInterval` = `maxResetLockedInterval`; the default is a random 8 to 10 min).
 * Sweeping more often cannot shorten the 4 hours, only the wait after them.
 */
export const AGGRESSIVE_RESET_LOCKED_MS = 1_000;

/** graphile-worker in schema `bench_graphile` of `BENCH_PG_URL` (default the local `test`). */
export function graphileWorker(): System {
  const host = new URL(PG_URL).host;
  let backend = `PostgreSQL at ${host}`;
  let utils: WorkerUtils | null = null;
  // graphile-worker deletes a job when it completes and keeps every other one in its table:
  // waiting, locked, failed and due for a retry, or failed for good (for inspection). So the
  // completed ones are those enqueued in this setup and gone from the table.
  let enqueued = 0;

  return {
    name: "graphile-worker",
    version: `graphile-worker ${VERSION}`,
    get backend() {
      return backend;
    },
    kind: "postgres",
    recovery: {
      default: {
        description:
          "a lost worker's jobs (running, or fetched into its local queue) are unlocked once " +
          "locked over 4 h (fixed, not configurable), by a sweep every 8-10 min (the defaults)",
        documented: { ms: STALE_LOCK_MS, source: STALE_LOCK_SOURCE },
      },
      aggressive: {
        description:
          `4 h lock expiry as by default (not configurable), swept every ` +
          `${AGGRESSIVE_RESET_LOCKED_MS / 1000} s; graphile-worker's own ways out are a graceful ` +
          "shutdown (SIGTERM), which a SIGKILLed worker never gets, or an operator calling " +
          "forceUnlockWorkers with the dead workers' ids",
        documented: { ms: STALE_LOCK_MS, source: STALE_LOCK_SOURCE },
      },
    },
    async setup() {
      await utils?.release();
      utils = null;
      await dropSchema(SCHEMA);
      // Installs the schema (migrations) before it returns.
      utils = await makeWorkerUtils({ connectionString: PG_URL, schema: SCHEMA });
      enqueued = 0;
      backend = await pgBackend();
    },
    async teardown() {
      await utils?.release();
      utils = null;
      await dropSchema(SCHEMA);
    },
    async enqueue(jobs: Job[]) {
      for (let i = 0; i < jobs.length; i += CHUNK) {
        const chunk = jobs.slice(i, i + CHUNK);
        await utils!.addJobs(chunk.map((j) => ({ identifier: j.kind, payload: { id: j.id } })));
        enqueued += chunk.length;
      }
    },
    startWorker(o: WorkerOptions): Promise<WorkerHandle> {
      return spawnWorker([workerScript("graphile-worker")], {
        ...workerEnv(o),
        BENCH_PG_URL: PG_URL,
        BENCH_GRAPHILE_SCHEMA: SCHEMA,
      });
    },
    async completed() {
      const { rows } = await utils!.withPgClient((c) =>
        c.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${SCHEMA}.jobs`),
      );
      return enqueued - rows[0]!.n;
    },
  };
}
