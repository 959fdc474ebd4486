/**
 * Real `mend worker` processes on one PostgreSQL schema (issue 5, part 7): workers SIGKILLed
 * again and again during a 10,000-task run, every connection of every worker terminated by the
 * server mid-run, and the leading monitor's process killed. Every task must complete exactly once,
 * nothing may be left leased or held, and the log must still replay to the state.
 *
 * Each worker's connections carry an application_name of their own (`<schema>_w<n>`), so the test
 * can terminate or find exactly its workers' backends, never those of its own store or of another
 * test file using the same database.
 */
import { afterEach, describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { waitExit } from "./helpers/cli.js";
import { expectReplayable } from "./helpers/expect.js";
import { freshSchema } from "./helpers/pg.js";
import {
  adminClient,
  alive,
  expectCompletedExactlyOnce,
  leaderApplication,
  monitorLeader,
  type PgWorker,
  startPgWorker,
  statusCounts,
  submitRun,
  terminateBackends,
} from "./helpers/pg-processes.js";
import { sleep, waitFor } from "./helpers/wait.js";

/** Every worker process a test started, SIGKILLed after it (before its schema is dropped). */
let started: PgWorker[] = [];
/** Stores and schemas to close and drop after each test, once its processes are gone. */
let cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const w of started) if (alive(w)) w.child.kill("SIGKILL");
  await Promise.all(started.map((w) => w.exited));
  started = [];
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  cleanups = [];
});

/** A fresh schema and a store on it (the test's own connections are named `mend`). */
async function setup(): Promise<{ url: string; schema: string; store: Store }> {
  const fresh = await freshSchema();
  cleanups.push(fresh.drop);
  const store = await openStore(fresh.url);
  cleanups.push(() => store.close());
  return { url: fresh.url, schema: fresh.schema, store };
}

function start(
  url: string,
  application: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): PgWorker {
  const w = startPgWorker(url, application, extra, env);
  started.push(w);
  return w;
}

/** Stops every live worker with SIGTERM; each must exit 0 (none crashed or hung). */
async function stopAll(workers: PgWorker[]): Promise<void> {
  const live = workers.filter(alive);
  for (const w of live) w.child.kill("SIGTERM");
  for (const w of live)
    expect(await waitExit(w, 15_000), w.stderr()).toEqual({ code: 0, signal: null });
}

/** Whether every workstream has ended. */
async function allEnded(store: Store, ids: string[]): Promise<boolean> {
  const statuses = await Promise.all(
    ids.map(async (id) => (await store.getWorkstream(id))?.status),
  );
  return statuses.every((s) => s !== "active");
}

describe("worker processes on PostgreSQL", () => {
  it("SIGKILLs of random workers during a 10,000-task run: every task completed exactly once, no hold leaked", async () => {
    const { url, schema, store } = await setup();
    const admin = await adminClient(schema);
    const wsIds = await submitRun(store, 5, 2_000);
    let n = 0;
    const workers = [0, 1, 2].map(() => start(url, `${schema}_w${++n}`));

    await waitFor(
      async () => ((await statusCounts(admin)).completed ?? 0) > 0,
      20_000,
      "the first completions",
    );
    // Every ~500 ms, one worker of the three is SIGKILLed and replaced: one chosen at random
    // among those holding leases (a replacement still starting up has nothing to lose yet).
    const kills: { pid: number; at: number; completedBefore: number }[] = [];
    const deadline = Date.now() + 45_000;
    while (!(await allEnded(store, wsIds))) {
      expect(Date.now(), "the run to end within 45 s").toBeLessThan(deadline);
      await sleep(500);
      if (kills.length >= 8) continue;
      const holding = new Set((await store.listLeases()).map((l) => l.workerId));
      const pids = new Set(
        (await store.listWorkers()).filter((w) => holding.has(w.id)).map((w) => w.pid),
      );
      const candidates = workers.filter((w) => pids.has(w.pid));
      const pool = candidates.length > 0 ? candidates : workers;
      const victim = pool[Math.floor(Math.random() * pool.length)]!;
      const completedBefore = (await statusCounts(admin)).completed ?? 0;
      if (completedBefore === 10_000) break;
      victim.child.kill("SIGKILL");
      kills.push({ pid: victim.pid, at: Date.now(), completedBefore });
      expect((await waitExit(victim, 5_000)).signal).toBe("SIGKILL");
      workers[workers.indexOf(victim)] = start(url, `${schema}_w${++n}`);
    }
    // The kills landed while there was work left.
    expect(kills.length).toBeGreaterThanOrEqual(5);
    expect(kills.at(-1)!.completedBefore).toBeLessThan(10_000);

    await stopAll(workers);
    const { workerLost } = await expectCompletedExactlyOnce(store, wsIds, 10_000);
    // Killed workers held running tasks; the monitor requeued them when their leases expired.
    expect(workerLost).toBeGreaterThan(0);

    // How long after each kill the victim's leases were reaped (the server's clock is this host's).
    const registered = new Map((await store.listWorkers()).map((w) => [w.pid, w.id]));
    const swept = await admin.query<{ worker: string; first: string; last: string; n: string }>(
      `SELECT detail::jsonb->>'worker' AS worker, MIN(at) AS first, MAX(at) AS last, COUNT(*) AS n
       FROM transitions WHERE event = 'worker_lost' GROUP BY 1`,
    );
    const reaped = kills.flatMap((k) => {
      const row = swept.rows.find((r) => r.worker === registered.get(k.pid));
      return row ? [{ tasks: Number(row.n), ms: Number(row.last) - k.at }] : [];
    });
    // Most kills hit a worker running tasks; each one's tasks were requeued within a second or so
    // (its lease, 500 ms past its last heartbeat, then a sweep).
    expect(reaped.length).toBeGreaterThanOrEqual(4);
    for (const r of reaped) expect(r.ms).toBeLessThan(3_000);
    console.info(
      `[pg-processes] 10,000 tasks, ${kills.length} SIGKILLs, ${workerLost} tasks requeued as worker_lost; ` +
        `reaped after kill: ${reaped.map((r) => `${r.tasks} in ${r.ms} ms`).join(", ")}`,
    );
  }, 90_000);

  it("every worker connection terminated by the server mid-run, several times: the workers recover and every task completes once", async () => {
    const { url, schema, store } = await setup();
    const admin = await adminClient(schema);
    const total = 3_000;
    const wsIds = await submitRun(store, 3, total / 3);
    const prefix = `${schema}_w`;
    const workers = [1, 2, 3].map((i) => start(url, `${prefix}${i}`));

    const completed = async () => (await statusCounts(admin)).completed ?? 0;
    await waitFor(async () => (await completed()) >= 300, 20_000, "300 completions");
    const rounds: { terminated: number; resumedMs: number }[] = [];
    for (let round = 0; round < 4; round++) {
      const before = await completed();
      if (before >= total - 200) break;
      const at = Date.now();
      const terminated = await terminateBackends(admin, prefix);
      // At least one of each worker's connections: its pool's, its LISTEN one, the leader's lock.
      expect(terminated).toBeGreaterThanOrEqual(workers.length);
      // Completions resume: a worker reconnected and committed. (A worker that died says why.)
      await waitFor(
        async () => {
          for (const w of workers) {
            if (!alive(w)) throw new Error(`worker ${w.application} exited: ${w.stderr()}`);
          }
          return (await completed()) > before + 50;
        },
        10_000,
        "completions to resume",
      );
      rounds.push({ terminated, resumedMs: Date.now() - at });
      await sleep(400);
    }
    expect(rounds.length).toBeGreaterThanOrEqual(3);

    await waitFor(() => allEnded(store, wsIds), 40_000, "the run to end", 100);
    // No worker died of it.
    for (const w of workers) expect(alive(w), w.stderr()).toBe(true);
    // Each worker listens again (its LISTEN connection came back) ...
    await waitFor(
      async () => {
        const r = await admin.query<{ n: string }>(
          `SELECT COUNT(DISTINCT application_name) AS n FROM pg_stat_activity
           WHERE starts_with(application_name, $1) AND query = $2`,
          [prefix, `LISTEN mend_wake_${schema}`],
        );
        return Number(r.rows[0]!.n) === workers.length;
      },
      10_000,
      "every worker to listen again",
    );
    // ... and a monitor leads again, holding the lock and renewing its row.
    await waitFor(
      async () => {
        const leader = await leaderApplication(admin, schema, prefix);
        const row = await monitorLeader(admin);
        const now = Number(
          (
            await admin.query<{ now: string }>(
              "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now",
            )
          ).rows[0]!.now,
        );
        return leader !== null && row !== null && row.expiresAt > now;
      },
      10_000,
      "a monitor to lead again",
    );
    const retried = workers.map(
      (w) => w.stderr().split("store exchange failed; retrying").length - 1,
    );

    await stopAll(workers);
    await expectCompletedExactlyOnce(store, wsIds, total);
    console.info(
      `[pg-processes] connections terminated ${rounds.length} times: ` +
        rounds
          .map((r) => `${r.terminated} backends, +50 completions after ${r.resumedMs} ms`)
          .join("; ") +
        `; exchanges retried per worker: ${retried.join(", ")}`,
    );
  }, 90_000);

  it("the leading monitor's process killed: another process leads within a sweep and reaps its leases", async () => {
    const { url, schema, store } = await setup();
    const admin = await adminClient(schema);
    const prefix = `${schema}_w`;
    // One task per worker: each runs `hold` until its worker dies or stops.
    const holdWorker = (i: number) =>
      start(url, `${prefix}${i}`, ["--concurrency", "1", "--grace", "100ms"], {
        MEND_TEST_HOLD: "1",
      });
    const { workstreamId, taskIds } = await store.submit(
      validateDefinition({
        name: "leaders",
        tasks: ["h1", "h2", "h3"].map((id) => ({
          id,
          handler: "hold",
          retry: { maxAttempts: 10, backoff: "constant", initial: "10ms", jitter: "none" },
        })),
      }),
    );

    // The first worker starts alone, so its monitor leads and it runs a task.
    const first = holdWorker(1);
    await waitFor(
      async () => (await leaderApplication(admin, schema, prefix)) === first.application,
      20_000,
      "the first worker to lead",
    );
    const others = [holdWorker(2), holdWorker(3)];
    const workers = [first, ...others];
    const runningBy = async () => {
      const ids = new Map((await store.listWorkers()).map((w) => [w.id, w.pid]));
      const out = new Map<number, string>();
      for (const t of await store.listTasks(workstreamId)) {
        if (t.status === "running" && t.leaseWorker) out.set(ids.get(t.leaseWorker)!, t.id);
      }
      return out;
    };
    await waitFor(async () => (await runningBy()).size === 3, 20_000, "each worker to run a task");
    // The others' monitors contend every sweep, yet the first keeps leading while it lives.
    const leaderRow = (await monitorLeader(admin))!;
    await sleep(500);
    expect(await leaderApplication(admin, schema, prefix)).toBe(first.application);
    expect((await monitorLeader(admin))!.holder).toBe(leaderRow.holder);

    // Twice: SIGKILL the process that leads; another one must lead, and reap the dead one's lease.
    const takeovers: { lockMs: number; rowMs: number; reapedMs: number }[] = [];
    let leader = first;
    for (let round = 0; round < 2; round++) {
      const holder = (await monitorLeader(admin))!.holder;
      const task = (await runningBy()).get(leader.pid)!;
      expect(task).toBeDefined();
      const at = Date.now();
      leader.child.kill("SIGKILL");
      const next = await waitFor(
        async () => {
          const app = await leaderApplication(admin, schema, prefix);
          return app !== null && app !== leader.application ? app : null;
        },
        10_000,
        "another process to hold the leadership lock",
        5,
      );
      const lockMs = Date.now() - at;
      await waitFor(
        async () => {
          const row = await monitorLeader(admin);
          return row !== null && row.holder !== holder;
        },
        10_000,
        "the leaders row to name the new leader",
        5,
      );
      const rowMs = Date.now() - at;
      // Only a leading monitor reaps: the dead leader's task is requeued as worker_lost.
      await waitFor(
        async () =>
          (await store.listTransitions({ entityId: task })).some((t) => t.event === "worker_lost"),
        10_000,
        `${task} to be requeued`,
        5,
      );
      const reapedMs = Date.now() - at;
      takeovers.push({ lockMs, rowMs, reapedMs });
      expect(rowMs).toBeLessThan(3_000);
      // Invariant 4: queued again within the lease (500 ms) and a sweep, plus the takeover.
      expect(reapedMs).toBeLessThan(3_000);
      expect((await waitExit(leader, 5_000)).signal).toBe("SIGKILL");
      leader = workers.find((w) => w.application === next)!;
      expect(alive(leader)).toBe(true);
    }

    // A worker that does not hold finishes the requeued tasks; the last holder releases its own.
    const finisher = start(url, `${prefix}9`);
    await stopAll(workers);
    await waitFor(
      async () => (await store.getWorkstream(workstreamId))?.status === "completed",
      20_000,
      "the workstream to complete",
    );
    await stopAll([finisher]);
    const done = await store.countEvents("task_completed", workstreamId);
    const recovered = await store.countEvents("task_recovered", workstreamId);
    for (const id of taskIds) expect((done.get(id) ?? 0) + (recovered.get(id) ?? 0), id).toBe(1);
    expect(await store.listLeases()).toEqual([]);
    await expectReplayable(store);
    console.info(
      `[pg-processes] leader SIGKILLed: ` +
        takeovers
          .map(
            (t) =>
              `lock taken after ${t.lockMs} ms, leaders row after ${t.rowMs} ms, lease reaped after ${t.reapedMs} ms`,
          )
          .join("; "),
    );
  }, 60_000);
});
