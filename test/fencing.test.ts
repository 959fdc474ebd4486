import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Monitor } from "../src/engine/Monitor.js";
import { createPlanner } from "../src/engine/planner.js";
import { LeaseLostError, Worker } from "../src/engine/Worker.js";
import type { TaskContext } from "../src/model/handler.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type {
  ClaimedTask,
  ExchangeRequest,
  ExchangeResult,
  Settlement,
  Store,
} from "../src/store/store.js";
import { completionsPerTask, failureOf, spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const planner = createPlanner({ random: () => 0 });
const LEASE_MS = 1_000;

async function register(store: Store, id: string): Promise<void> {
  await store.registerWorker({ id, host: "test", pid: 1, concurrency: 1, handlers: ["work"] });
}

async function claimOne(store: Store, worker: string): Promise<ClaimedTask> {
  const { claimed } = await store.exchange({
    workerId: worker,
    outcomes: [],
    claim: 1,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    planner,
  });
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

async function report(
  store: Store,
  worker: string,
  outcome: ExchangeRequest["outcomes"][number],
): Promise<Settlement> {
  const { settled } = await store.exchange({
    workerId: worker,
    outcomes: [outcome],
    claim: 0,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    planner,
  });
  return settled[0]!;
}

/** Takes `old`'s lease away: it expires on the store's clock and the monitor requeues it. */
async function expireAndSweep(store: Store, clock: FakeClock): Promise<void> {
  clock.advance(LEASE_MS + 1);
  const monitor = new Monitor({ store, clock, planner, sweepMs: 100 });
  const result = await monitor.tick();
  expect(result?.requeued.map((r) => r.decision.action)).toEqual(["retry"]);
}

describe("fencing at the store", () => {
  it("refuses a stale holder whose token was granted again to another worker (seqs rewound by a restore)", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await store.submit(spec([{ id: "t" }]));
    await register(store, "w1");
    await register(store, "w2");
    const stale = await claimOne(store, "w1");
    // What a restore to an earlier point can produce: the same token, now held by w2.
    const db = new Database(path);
    db.prepare("UPDATE tasks SET lease_worker = 'w2' WHERE id = ?").run(stale.id);
    db.close();
    const settled = await report(store, "w1", {
      kind: "complete",
      taskId: stale.id,
      token: stale.leaseToken,
      output: null,
    });
    expect(settled.applied).toBe(false);
    const beat = await store.heartbeat(
      "w1",
      "busy",
      [{ taskId: stale.id, token: stale.leaseToken }],
      LEASE_MS,
    );
    expect(beat.lost).toEqual([stale.id]);
    const renewed = await store.heartbeat(
      "w2",
      "busy",
      [{ taskId: stale.id, token: stale.leaseToken }],
      LEASE_MS,
    );
    expect(renewed.lost).toEqual([]);
  });

  it("refuses the stale holder's completion and accepts the new holder's", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await register(store, "old");
    await register(store, "new");
    const { taskIds } = await store.submit(spec([{ id: "a" }]));
    const first = await claimOne(store, "old");
    await expireAndSweep(store, clock);

    const requeued = (await store.getTask(taskIds[0]!))!;
    expect(requeued).toMatchObject({ status: "queued", leaseToken: null, workerLostStreak: 1 });
    const lost = (await store.listTransitions({ entityId: first.id })).at(-1)!;
    expect(lost).toMatchObject({ event: "worker_lost", actor: "monitor", from: "running" });
    expect(lost.detail).toMatchObject({ worker: "old", failure: { category: "worker_lost" } });

    const second = await claimOne(store, "new");
    expect(second.leaseToken).toBeGreaterThan(first.leaseToken!);
    expect(second.attempts).toBe(2);

    const before = (await store.listTransitions()).length;
    const stale = await report(store, "old", {
      kind: "complete",
      taskId: first.id,
      token: first.leaseToken!,
      output: "from old",
    });
    expect(stale.applied).toBe(false);
    expect((stale as { reason: string }).reason).toContain(String(second.leaseToken));
    const staleFail = await report(store, "old", {
      kind: "fail",
      taskId: first.id,
      token: first.leaseToken!,
      failure: failureOf("logic", false),
    });
    expect(staleFail.applied).toBe(false);
    const staleRelease = await report(store, "old", {
      kind: "release",
      taskId: first.id,
      token: first.leaseToken!,
      reason: "stale",
    });
    expect(staleRelease.applied).toBe(false);
    expect((await store.listTransitions()).length).toBe(before);
    expect((await store.getTask(first.id))!).toMatchObject({
      status: "running",
      leaseWorker: "new",
      leaseToken: second.leaseToken,
    });

    const fresh = await report(store, "new", {
      kind: "complete",
      taskId: second.id,
      token: second.leaseToken!,
      output: "from new",
    });
    expect(fresh).toMatchObject({ applied: true, status: "completed" });
    const done = (await store.getTask(first.id))!;
    expect(done.output).toBe("from new");
    // The second attempt completed the task: recorded once, as a recovery.
    const log = await store.listTransitions();
    expect(completionsPerTask(log).get(first.id)).toBe(1);
    expect(log.at(-2)!.event).toBe("task_recovered");
    // Once completed, even the former holder's token is refused again.
    expect(
      (
        await report(store, "new", {
          kind: "complete",
          taskId: second.id,
          token: second.leaseToken!,
          output: "twice",
        })
      ).applied,
    ).toBe(false);
    expect(completionsPerTask(await store.listTransitions()).get(first.id)).toBe(1);
    expect(await store.replay()).toEqual(await store.snapshot());
  });

  it("a stale holder's failure cannot fail the task under its new holder", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await store.submit(spec([{ id: "a", maxAttempts: 5 }]));
    const first = await claimOne(store, "old");
    await expireAndSweep(store, clock);
    const second = await claimOne(store, "new");
    const stale = await report(store, "old", {
      kind: "fail",
      taskId: first.id,
      token: first.leaseToken!,
      failure: failureOf("data_corruption", false),
    });
    expect(stale.applied).toBe(false);
    const fresh = await report(store, "new", {
      kind: "fail",
      taskId: second.id,
      token: second.leaseToken!,
      failure: failureOf("network"),
    });
    expect(fresh).toMatchObject({ applied: true, status: "queued" });
  });

  it("heartbeat renews only leases still held; a stale token is reported lost", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await register(store, "old");
    await register(store, "new");
    await store.submit(spec([{ id: "a" }, { id: "b" }]));
    const a = await claimOne(store, "old");
    const b = await claimOne(store, "old");

    // A live heartbeat renews both leases, and appends nothing (liveness, not state).
    await store.heartbeat("old", "busy", [], LEASE_MS); // idle → busy is a transition
    const len = (await store.listTransitions()).length;
    clock.advance(LEASE_MS - 100);
    const ok = await store.heartbeat(
      "old",
      "busy",
      [
        { taskId: a.id, token: a.leaseToken! },
        { taskId: b.id, token: b.leaseToken! },
      ],
      LEASE_MS,
    );
    expect(ok.lost).toEqual([]);
    expect((await store.listTransitions()).length).toBe(len);
    expect((await store.getTask(a.id))!.leaseExpiresAt).toBe(clock.now() + LEASE_MS);
    // Renewed: a sweep just past the original expiry finds nothing.
    clock.advance(200);
    expect(await store.sweepExpiredLeases(planner)).toEqual([]);

    // b's lease is taken away: the old token is lost, a's still renews.
    clock.advance(LEASE_MS);
    await store.heartbeat("old", "busy", [{ taskId: a.id, token: a.leaseToken! }], LEASE_MS);
    const swept = await store.sweepExpiredLeases(planner);
    expect(swept.map((s) => s.taskId)).toEqual([b.id]);
    const b2 = await claimOne(store, "new");
    const b2Expiry = (await store.getTask(b2.id))!.leaseExpiresAt;
    expect(b2.id).toBe(b.id);
    const hb = await store.heartbeat(
      "old",
      "busy",
      [
        { taskId: a.id, token: a.leaseToken! },
        { taskId: b.id, token: b.leaseToken! },
      ],
      LEASE_MS,
    );
    expect(hb.lost).toEqual([b.id]);
    // The stale heartbeat did not extend the new holder's lease.
    expect((await store.getTask(b.id))!.leaseExpiresAt).toBe(b2Expiry);
    // A wrong token for a task that is still the same holder's is lost as well.
    expect(
      (await store.heartbeat("old", "busy", [{ taskId: a.id, token: a.leaseToken! + 1 }], LEASE_MS))
        .lost,
    ).toEqual([a.id]);
  });

  it("heartbeat of a cancelled running task reports it lost", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await register(store, "w");
    await store.submit(spec([{ id: "a" }]));
    const a = await claimOne(store, "w");
    await store.cancelTask(a.id, { actor: "op", reason: "stop it", command: "test" });
    const hb = await store.heartbeat("w", "busy", [{ taskId: a.id, token: a.leaseToken! }], 1000);
    expect(hb.lost).toEqual([a.id]);
    expect(
      (
        await report(store, "w", {
          kind: "complete",
          taskId: a.id,
          token: a.leaseToken!,
          output: 1,
        })
      ).applied,
    ).toBe(false);
    expect((await store.getTask(a.id))!.status).toBe("cancelled");
  });
});

/** A handler that waits until the test lets it finish, or its signal aborts. */
function gate() {
  const started: TaskContext[] = [];
  const releases: ((v: unknown) => void)[] = [];
  const handler = (ctx: TaskContext) => {
    started.push(ctx);
    return new Promise((resolve, reject) => {
      releases.push(resolve);
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
    });
  };
  return { started, releases, handler };
}

/** Records every exchange result, to see what the store said to a worker. */
function recording(store: SqliteStore): { store: Store; settlements: Settlement[] } {
  const settlements: Settlement[] = [];
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === "exchange") {
        return async (req: ExchangeRequest): Promise<ExchangeResult> => {
          const r = await target.exchange(req);
          settlements.push(...r.settled);
          return r;
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store: proxy, settlements };
}

describe("fencing in the Worker", () => {
  it("a paused worker's late completion is refused; the new holder's is kept", async () => {
    const storeClock = new FakeClock();
    const { store } = tempStore(storeClock);
    const { workstreamId, taskIds } = await store.submit(spec([{ id: "a", maxAttempts: 5 }]));
    const taskId = taskIds[0]!;

    // Worker A runs on its own clock, which the test never advances: it is "paused", sending no
    // heartbeats, while the store's time moves on.
    const pausedClock = new FakeClock();
    const gA = gate();
    const rec = recording(store);
    const a = new Worker({
      store: rec.store,
      handlers: { work: gA.handler },
      clock: pausedClock,
      concurrency: 1, // busy with its one task: it cannot take the requeued task itself
      leaseMs: LEASE_MS,
      heartbeatMs: 200,
      id: "wA",
    });
    await a.start();
    await waitFor(() => gA.started.length === 1, 5_000, "worker A to start the task");

    await expireAndSweep(store, storeClock);
    const gB = gate();
    const b = new Worker({
      store,
      handlers: { work: gB.handler },
      clock: storeClock,
      leaseMs: LEASE_MS,
      heartbeatMs: 200,
      id: "wB",
    });
    await b.start();
    await waitFor(() => gB.started.length === 1, 5_000, "worker B to start the task");
    expect(gB.started[0]!.attempt).toBe(2);

    // A wakes up and reports its result: refused, the task stays with B.
    gA.releases[0]!("from A");
    await waitFor(() => rec.settlements.length > 0, 5_000, "A's outcome to be settled");
    expect(rec.settlements).toEqual([expect.objectContaining({ taskId, applied: false })]);
    expect((await store.getTask(taskId))!).toMatchObject({ status: "running", leaseWorker: "wB" });

    gB.releases[0]!("from B");
    await waitFor(
      async () => (await store.getTask(taskId))!.status === "completed",
      5_000,
      "B's completion",
    );
    expect((await store.getTask(taskId))!.output).toBe("from B");
    expect((await store.getWorkstream(workstreamId))!.status).toBe("completed");
    expect(completionsPerTask(await store.listTransitions()).get(taskId)).toBe(1);

    await Promise.all([a.stop(0), b.stop(0)]);
    expect(await store.replay()).toEqual(await store.snapshot());
  });

  it("a worker whose lease was taken hears it on its next heartbeat and aborts the handler", async () => {
    const storeClock = new FakeClock();
    const { store } = tempStore(storeClock);
    const { taskIds } = await store.submit(spec([{ id: "a", maxAttempts: 5 }]));
    const workerClock = new FakeClock();
    const gA = gate();
    const a = new Worker({
      store,
      handlers: { work: gA.handler },
      clock: workerClock,
      concurrency: 1,
      leaseMs: LEASE_MS,
      heartbeatMs: 200,
      id: "wA",
    });
    await a.start();
    await waitFor(() => gA.started.length === 1, 5_000, "worker A to start the task");
    const ctx = gA.started[0]!;

    await expireAndSweep(store, storeClock);
    const b = await claimOne(store, "wB");
    expect(ctx.signal.aborted).toBe(false);

    // A's next heartbeat: the store says the lease is lost, the worker aborts the handler.
    await workerClock.advanceAsync(250, 50);
    await waitFor(() => ctx.signal.aborted, 5_000, "A's handler signal to abort");
    expect(ctx.signal.reason).toBeInstanceOf(LeaseLostError);
    expect(a.inFlight).toBe(0);
    // And A does not report anything for it: the task is still B's.
    expect((await store.getTask(taskIds[0]!))!).toMatchObject({
      status: "running",
      leaseToken: b.leaseToken,
      leaseWorker: "wB",
    });
    await a.stop(0);
  });

  it("cancelling a running task aborts its handler at the next heartbeat", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { workstreamId, taskIds } = await store.submit(spec([{ id: "a" }, { id: "b" }]));
    const g = gate();
    const worker = new Worker({
      store,
      handlers: { work: g.handler },
      clock,
      leaseMs: LEASE_MS,
      heartbeatMs: 200,
      concurrency: 2,
    });
    await worker.start();
    await waitFor(() => g.started.length === 2, 5_000, "both tasks to start");
    const target = g.started.find((c) => c.taskId === taskIds[0])!;
    const other = g.started.find((c) => c.taskId === taskIds[1])!;

    await store.cancelTask(target.taskId, {
      actor: "op",
      reason: "no longer wanted",
      command: "t",
    });
    expect(target.signal.aborted).toBe(false);
    await clock.advanceAsync(250, 50);
    await waitFor(() => target.signal.aborted, 5_000, "the cancelled task's signal to abort");
    expect(target.signal.reason).toBeInstanceOf(LeaseLostError);
    expect(other.signal.aborted).toBe(false);
    expect(worker.inFlight).toBe(1);

    // The other task is unaffected and completes normally.
    g.releases[g.started.indexOf(other)]!("ok");
    await waitFor(
      async () => (await store.getTask(other.taskId))!.status === "completed",
      5_000,
      "the other task to complete",
    );
    expect((await store.getTask(target.taskId))!.status).toBe("cancelled");
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    await worker.stop(0);
    expect(await store.replay()).toEqual(await store.snapshot());
  });
});
