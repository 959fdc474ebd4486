/**
 * Real `mend worker` processes on a PostgreSQL schema, and what the tests that kill them need:
 * a large run to submit, an admin connection of its own (so it never terminates itself), and the
 * checks that every task completed exactly once and nothing was left behind.
 */
import { join } from "node:path";
import pg from "pg";
import { expect, onTestFinished } from "vitest";
import { MONITOR_LEADERSHIP } from "../../src/engine/Monitor.js";
import { validateDefinition } from "../../src/model/definition.js";
import { lockKey } from "../../src/store/postgres/connection.js";
import type { Store } from "../../src/store/store.js";
import { type CliProcess, FIXTURES, spawnCli } from "./cli.js";
import { expectReplayable } from "./expect.js";
import { PG_TEST_URL } from "./pg.js";

export const PG_PROCESS_HANDLERS = join(FIXTURES, "pg-process-handlers.mjs");

/** The application_name of the test's admin connection: never one of Mend's (`mend`). */
export const ADMIN_APPLICATION = "mend-test-admin";

/** Short timings, so that a lost worker's tasks run again within about a second. */
export const FAST_TIMINGS = ["--heartbeat", "100ms", "--lease", "500ms", "--sweep", "100ms"];

/**
 * The store URL with an `application_name` for every connection it opens (node-postgres lets the
 * URL's parameters override Mend's default `mend`). It tells a worker process's backends apart in
 * `pg_stat_activity`, so a test can terminate exactly those, and never the backends of another
 * test file running beside it in the same database.
 */
export function urlWithApplication(url: string, application: string): string {
  const u = new URL(url);
  u.searchParams.set("application_name", application);
  return u.toString();
}

/** A `mend worker` process whose connections are all named `application`. */
export interface PgWorker extends CliProcess {
  application: string;
}

/**
 * Starts `mend worker` on `url` with {@link FAST_TIMINGS}, its connections named `application`;
 * SIGKILLed when the test finishes.
 */
export function startPgWorker(
  url: string,
  application: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): PgWorker {
  const proc = spawnCli(
    [
      "--store",
      urlWithApplication(url, application),
      "worker",
      "--handlers",
      PG_PROCESS_HANDLERS,
      "--concurrency",
      "16",
      "--grace",
      "5s",
      ...FAST_TIMINGS,
      ...extra,
    ],
    { env },
  );
  return Object.assign(proc, { application });
}

/** Whether a process is still running. */
export function alive(proc: CliProcess): boolean {
  return proc.child.exitCode === null && proc.child.signalCode === null;
}

/**
 * A connection to the test database under {@link ADMIN_APPLICATION}, closed when the test
 * finishes; `schema` is first on its search path.
 */
export async function adminClient(schema: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: PG_TEST_URL,
    application_name: ADMIN_APPLICATION,
    options: `-c search_path=${schema}`,
  });
  client.on("error", () => {});
  await client.connect();
  onTestFinished(() => client.end().catch(() => {}));
  return client;
}

/**
 * Terminates every backend of the test database whose application_name starts with `prefix`
 * (see {@link urlWithApplication}), never the admin's own; returns how many.
 */
export async function terminateBackends(admin: pg.Client, prefix: string): Promise<number> {
  const r = await admin.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND starts_with(application_name, $1)
       AND pid <> pg_backend_pid() AND pg_terminate_backend(pid)`,
    [prefix],
  );
  return r.rowCount ?? 0;
}

/** Task counts by status, straight from the table (no Mend connection involved). */
export async function statusCounts(admin: pg.Client): Promise<Record<string, number>> {
  const r = await admin.query<{ status: string; n: string }>(
    "SELECT status, COUNT(*) AS n FROM tasks GROUP BY status",
  );
  return Object.fromEntries(r.rows.map((row) => [row.status, Number(row.n)]));
}

/**
 * Submits `workstreams` workstreams of `perWorkstream` `work` tasks each. Every tenth task depends
 * on the three before it, and every fiftieth waits for the previous fiftieth, so dependencies are
 * exercised: each workstream is a DAG with chains and joins. Retries come at once and many times
 * over, so that workers killed again and again never exhaust a task's attempts.
 */
export async function submitRun(
  store: Store,
  workstreams: number,
  perWorkstream: number,
): Promise<string[]> {
  const key = (i: number) => `t${String(i).padStart(5, "0")}`;
  const ids: string[] = [];
  for (let w = 0; w < workstreams; w++) {
    const tasks = Array.from({ length: perWorkstream }, (_, i) => {
      const deps = new Set<string>();
      if (i % 10 === 9) for (const j of [i - 1, i - 2, i - 3]) deps.add(key(j));
      if (i % 50 === 49 && i >= 50) deps.add(key(i - 50));
      return {
        id: key(i),
        handler: "work",
        ...(deps.size > 0 ? { deps: [...deps] } : {}),
        retry: { maxAttempts: 50, backoff: "constant", initial: "10ms", jitter: "none" },
      };
    });
    const { workstreamId } = await store.submit(
      validateDefinition({ name: `run-${w}`, onFailure: "continue", tasks }),
    );
    ids.push(workstreamId);
  }
  return ids;
}

/**
 * After a run: every workstream completed; every task completed, its completion recorded exactly
 * once; nothing running, leased or held; the log replays to the state and its chain verifies.
 * Returns the number of `worker_lost` requeues over the run.
 */
export async function expectCompletedExactlyOnce(
  store: Store,
  workstreamIds: string[],
  total: number,
): Promise<{ workerLost: number }> {
  for (const id of workstreamIds)
    expect((await store.getWorkstream(id))?.status, id).toBe("completed");
  const tasks = (await Promise.all(workstreamIds.map((id) => store.listTasks(id)))).flat();
  expect(tasks).toHaveLength(total);
  expect(tasks.filter((t) => t.status !== "completed").map((t) => [t.id, t.status])).toEqual([]);
  // Resources are the lead's work in progress; whatever they become, a completed task holds none.
  expect(tasks.filter((t) => t.held !== null).map((t) => [t.id, t.held])).toEqual([]);
  expect(tasks.filter((t) => t.leaseToken !== null || t.leaseWorker !== null)).toEqual([]);
  expect(await store.listLeases()).toEqual([]);

  const [completed, recovered, lost] = await Promise.all([
    store.countEvents("task_completed"),
    store.countEvents("task_recovered"),
    store.countEvents("worker_lost"),
  ]);
  const twice: [string, number][] = [];
  for (const t of tasks) {
    const n = (completed.get(t.id) ?? 0) + (recovered.get(t.id) ?? 0);
    if (n !== 1) twice.push([t.id, n]);
  }
  expect(twice).toEqual([]);
  // No completion of a task that is not one of the run's.
  let records = 0;
  for (const n of [...completed.values(), ...recovered.values()]) records += n;
  expect(records).toBe(total);

  await expectReplayable(store);
  let workerLost = 0;
  for (const n of lost.values()) workerLost += n;
  return { workerLost };
}

/** PgStore's advisory lock class for leaderships (`LEADER_LOCK` in src/store/postgres/PgStore.ts). */
const LEADER_LOCK = 0x4d454c44;

/**
 * The application_name of the process whose session holds the monitor's leadership lock on
 * `schema`, among those named with `prefix`; null while none does.
 */
export async function leaderApplication(
  admin: pg.Client,
  schema: string,
  prefix: string,
): Promise<string | null> {
  const r = await admin.query<{ application_name: string }>(
    `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid = $1::bigint::oid AND l.objid = ($2::bigint & 4294967295)::oid
       AND starts_with(a.application_name, $3)`,
    [LEADER_LOCK, lockKey(`${schema}:${MONITOR_LEADERSHIP}`), prefix],
  );
  return r.rows[0]?.application_name ?? null;
}

/** The `leaders` row of the monitor, as the admin reads it. */
export async function monitorLeader(
  admin: pg.Client,
): Promise<{ holder: string; expiresAt: number } | null> {
  const r = await admin.query<{ holder: string; expires_at: string }>(
    "SELECT holder, expires_at FROM leaders WHERE name = $1",
    [MONITOR_LEADERSHIP],
  );
  const row = r.rows[0];
  return row ? { holder: row.holder, expiresAt: Number(row.expires_at) } : null;
}
