/**
 * pg-boss as a system under test: its own schema of the local PostgreSQL, jobs added with its
 * batch API (`insert`), workers run by bench/peers/pgboss-worker.ts (built to plain JavaScript,
 * ./build-workers.ts). `other` jobs go to a queue of their own, which no worker works.
 *
 * pg-boss 10 has no worker heartbeat: an active job is failed (and retried, `retryLimit` 2 by
 * default) once `expireInSeconds` have passed since it started, whether or not its worker is
 * alive, by the maintenance that any running instance does every `maintenanceIntervalSeconds`.
 */
import { createRequire } from "node:module";
import PgBoss from "pg-boss";
import { workerScript } from "./build-workers.js";
import { dropSchema, PG_URL, pgBackend } from "./postgres.js";
import type { Job, JobKind, Settings, System, WorkerOptions } from "./system.js";
import { spawnWorker, workerEnv, type WorkerHandle } from "./worker-process.js";

const SCHEMA = "bench_pgboss";
/** The queue every run uses; workers work it. */
export const QUEUE = "bench";
/** The queue `other` jobs go to, which no worker works. */
const OTHER_QUEUE = "bench_other";
const VERSION = (createRequire(import.meta.url)("pg-boss/package.json") as { version: string })
  .version;
/** Jobs per `insert` call (one statement each). */
const CHUNK = 1_000;

/** What a job carries: the benchmark's id (pg-boss ids must be uuids) and its handler. */
export interface JobData {
  id: string;
  kind: JobKind;
}

/**
 * What a worker configures per {@link Settings}. `expireInSeconds` is applied to the queue, not
 * the worker, as pg-boss stamps each job with its expiry when it is inserted. Leaving
 * `maintenanceIntervalSeconds` out keeps pg-boss's default.
 */
export const SETTINGS: Record<
  Settings,
  { expireInSeconds: number; maintenanceIntervalSeconds?: number }
> = {
  // pg-boss's defaults, spelled out so a default worker also undoes an aggressive one's queue.
  default: { expireInSeconds: 15 * 60 },
  // The minimum each option accepts (src/attorney.js: "must be at least every second").
  aggressive: { expireInSeconds: 1, maintenanceIntervalSeconds: 1 },
};

/** pg-boss's `maintenanceIntervalSeconds` default (src/attorney.js applyMaintenanceConfig). */
const DEFAULT_MAINTENANCE_S = 120;
/** The shortest `pollingIntervalSeconds` pg-boss accepts (POLICY.MIN_POLLING_INTERVAL_MS). */
export const POLLING_INTERVAL_S = 0.5;

const DEFAULTS_SOURCE =
  "https://timgit.github.io/pg-boss/api/jobs (expireInSeconds: default 15 minutes); " +
  `pg-boss ${VERSION} src/plans.js (job.expire_in default '15 minutes'), src/attorney.js ` +
  `(maintenanceIntervalSeconds default ${DEFAULT_MAINTENANCE_S}), src/boss.js (failJobsByTimeout)`;

/** pg-boss in schema `bench_pgboss` of `BENCH_PG_URL` (default the local `test`). */
export function pgBoss(): System {
  const host = new URL(PG_URL).host;
  let backend = `PostgreSQL at ${host}`;
  let boss: PgBoss | null = null;

  async function stopBoss(): Promise<void> {
    await boss?.stop({ graceful: false });
    boss = null;
  }

  const sql = async <T>(text: string): Promise<T[]> =>
    (await boss!.getDb().executeSql(text, [])).rows as T[];

  return {
    name: "pg-boss",
    version: `pg-boss ${VERSION}`,
    get backend() {
      return backend;
    },
    kind: "postgres",
    recovery: {
      default: {
        description:
          `expireInSeconds ${SETTINGS.default.expireInSeconds} (15 min) and ` +
          `maintenanceIntervalSeconds ${DEFAULT_MAINTENANCE_S}, the defaults: a job is retried ` +
          "a fixed 15-17 min after it started, whether or not its worker is still alive (pg-boss " +
          "10 has no heartbeat)",
        documented: { ms: SETTINGS.default.expireInSeconds * 1000, source: DEFAULTS_SOURCE },
      },
      aggressive: {
        description:
          `expireInSeconds ${SETTINGS.aggressive.expireInSeconds} and ` +
          `maintenanceIntervalSeconds ${SETTINGS.aggressive.maintenanceIntervalSeconds} (the ` +
          `minimum of each), polling every ${POLLING_INTERVAL_S} s (the minimum): a job is ` +
          "retried a fixed 1-2.5 s after it started (expiry, the next maintenance, the next " +
          "poll), whether or not its worker is still alive (pg-boss 10 has no heartbeat): the " +
          "time after the kill is that less how long the job had run when the worker died, " +
          "below 0 when it restarted before the kill",
      },
    },
    async setup() {
      await stopBoss();
      await dropSchema(SCHEMA);
      // Only workers run maintenance; this instance inserts and counts.
      boss = new PgBoss({
        connectionString: PG_URL,
        schema: SCHEMA,
        supervise: false,
        schedule: false,
      });
      boss.on("error", (err) => console.error("pg-boss error:", err));
      // start() installs the schema, createQueue the queue's partition of the job table.
      await boss.start();
      await boss.createQueue(QUEUE);
      await boss.createQueue(OTHER_QUEUE);
      backend = await pgBackend();
    },
    async teardown() {
      await stopBoss();
      await dropSchema(SCHEMA);
    },
    async enqueue(jobs: Job[]) {
      for (let i = 0; i < jobs.length; i += CHUNK) {
        await boss!.insert(
          jobs.slice(i, i + CHUNK).map((j) => ({
            name: j.kind === "other" ? OTHER_QUEUE : QUEUE,
            data: { id: j.id, kind: j.kind } satisfies JobData,
          })),
        );
      }
    },
    startWorker(o: WorkerOptions): Promise<WorkerHandle> {
      return spawnWorker([workerScript("pgboss-worker")], {
        ...workerEnv(o),
        BENCH_PG_URL: PG_URL,
        BENCH_PGBOSS_SCHEMA: SCHEMA,
      });
    },
    async completed() {
      // Completed jobs move to `archive` after archiveCompletedAfterSeconds (12 h by default).
      const [row] = await sql<{ n: number }>(
        `SELECT (SELECT count(*) FROM ${SCHEMA}.job WHERE name = '${QUEUE}' AND state = 'completed')
              + (SELECT count(*) FROM ${SCHEMA}.archive WHERE name = '${QUEUE}' AND state = 'completed')
              AS n`,
      );
      return Number(row!.n);
    },
  };
}
