import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { ClaimedTask, Actor, FailurePlanner, Outcome } from "../src/store/store.js";
import { failureOf, spec, statusesByKey } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";
import { expectReplayable } from "./helpers/expect.js";

const planner = createPlanner({ random: () => 0 });
const LEASE_MS = 5_000;
const operator: Actor = { actor: "alice", reason: "testing", command: "mend test" };

function setup() {
  const clock = new FakeClock();
  return { clock, ...tempStore(clock) };
}

async function claim(
  store: SqliteStore,
  n: number,
  worker = "w1",
  handlers: string[] = ["work"],
): Promise<ClaimedTask[]> {
  const r = await store.exchange({
    workerId: worker,
    outcomes: [],
    claim: n,
    leaseMs: LEASE_MS,
    handlers,
    planner,
  });
  return r.claimed;
}

async function settle(
  store: SqliteStore,
  outcomes: Outcome[],
  worker = "w1",
  p: FailurePlanner = planner,
) {
  return (
    await store.exchange({
      workerId: worker,
      outcomes,
      claim: 0,
      leaseMs: LEASE_MS,
      handlers: ["work"],
      planner: p,
    })
  ).settled;
}

function complete(t: ClaimedTask, output: unknown = { ok: t.key }): Outcome {
  return { kind: "complete", taskId: t.id, token: t.leaseToken!, output };
}

function fail(t: ClaimedTask, recoverable = false): Outcome {
  return {
    kind: "fail",
    taskId: t.id,
    token: t.leaseToken!,
    failure: failureOf(recoverable ? "network" : "logic", recoverable),
  };
}

/** Claims the one queued task with this key (asserting it is the one claimed). */
async function run(store: SqliteStore, key: string, worker = "w1"): Promise<ClaimedTask> {
  const [t] = await claim(store, 1, worker);
  expect(t?.key, `expected to claim ${key}`).toBe(key);
  return t!;
}

async function expectRefused(p: Promise<unknown>, code = "refused"): Promise<MendError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MendError);
  expect((err as MendError).code).toBe(code);
  return err as MendError;
}

async function logLength(store: SqliteStore): Promise<number> {
  return (await store.listTransitions()).length;
}

describe("submit", () => {
  it("counts each workstream's tasks by status", async () => {
    const { store } = setup();
    const one = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]));
    const two = await store.submit(spec([{ id: "x" }]));
    const counts = await store.countTasks();
    expect(counts.get(one.workstreamId)).toEqual({ queued: 2, pending: 1 });
    expect(counts.get(two.workstreamId)).toEqual({ queued: 1 });
  });

  it("writes the workstream and its tasks: no deps → queued, deps → pending", async () => {
    const { store, clock } = setup();
    const { workstreamId, taskIds } = await store.submit(
      spec(
        [
          { id: "a", input: { n: 1 } },
          { id: "b", deps: ["a"] },
          { id: "c", deps: ["a", "b"], priority: 3, critical: false },
          { id: "d" },
        ],
        { name: "first", onFailure: "stop" },
      ),
      "tester",
    );
    expect(taskIds).toEqual(["a", "b", "c", "d"].map((k) => `${workstreamId}/${k}`));
    const ws = await store.getWorkstream(workstreamId);
    expect(ws).toMatchObject({
      id: workstreamId,
      name: "first",
      status: "active",
      onFailure: "stop",
    });
    expect(ws!.createdAt).toBe(clock.now());
    expect(await statusesByKey(store, workstreamId)).toEqual({
      a: "queued",
      b: "pending",
      c: "pending",
      d: "queued",
    });
    const tasks = await store.listTasks(workstreamId);
    const c = tasks.find((t) => t.key === "c")!;
    expect(c).toMatchObject({
      id: `${workstreamId}/c`,
      workstreamId,
      handler: "work",
      priority: 3,
      critical: false,
      attempts: 0,
      deps: ["a", "b"],
      leaseToken: null,
      idempotencyKey: `${workstreamId}/c`,
    });
    expect(tasks.find((t) => t.key === "a")!.input).toEqual({ n: 1 });
    const log = await store.listTransitions();
    expect(log.map((t) => t.event)).toEqual([
      "workstream_created",
      "task_created",
      "task_created",
      "task_created",
      "task_created",
    ]);
    expect(log.every((t) => t.actor === "tester" && t.workstreamId === workstreamId)).toBe(true);
    await expectReplayable(store);
  });

  it("keeps several workstreams apart", async () => {
    const { store } = setup();
    const one = await store.submit(spec([{ id: "a" }], { name: "one" }));
    const two = await store.submit(spec([{ id: "a" }], { name: "two" }));
    expect(one.workstreamId).not.toBe(two.workstreamId);
    expect((await store.listWorkstreams()).map((w) => w.name).sort()).toEqual(["one", "two"]);
    expect(await store.listTasks(one.workstreamId)).toHaveLength(1);
    expect((await store.findWorkstreamsByName("two"))[0]!.id).toBe(two.workstreamId);
  });
});

describe("exchange: claiming", () => {
  it("claims by priority, highest first", async () => {
    const { store } = setup();
    await store.submit(
      spec([
        { id: "low", priority: 0 },
        { id: "high", priority: 5 },
        { id: "mid", priority: 1 },
      ]),
    );
    const order = [];
    for (let i = 0; i < 3; i++) order.push((await claim(store, 1))[0]!.key);
    expect(order).toEqual(["high", "mid", "low"]);
    expect(await claim(store, 1)).toEqual([]);
  });

  it("among equal priorities claims the earliest run_at first, and nothing not yet due", async () => {
    const { store, clock } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b" }]));
    const a = await run(store, "a");
    // a fails and is due again 1 s later: its run_at is now after b's.
    const [s] = await settle(store, [fail(a, true)]);
    expect(s).toMatchObject({ applied: true, status: "queued" });
    const requeued = (await store.getTask(a.id))!;
    expect(requeued.runAt).toBe(clock.now() + 1000);
    clock.advance(500);
    // a is not due yet: only b can be claimed.
    const first = await claim(store, 5);
    expect(first.map((t) => t.key)).toEqual(["b"]);
    clock.advance(600);
    const second = await claim(store, 5);
    expect(second.map((t) => t.key)).toEqual(["a"]);
    expect(second[0]!.attempts).toBe(2);

    // Same priority, both due: earlier run_at wins over creation order.
    const later = await store.submit(spec([{ id: "x" }, { id: "y" }]));
    const x = await run(store, "x");
    await settle(store, [fail(x, true)]);
    clock.advance(5_000);
    expect((await claim(store, 1))[0]!.key).toBe("y");
    expect((await claim(store, 1))[0]!.key).toBe("x");
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "running", b: "running" });
    expect(await statusesByKey(store, later.workstreamId)).toEqual({ x: "running", y: "running" });
  });

  it("priority beats run_at", async () => {
    const { store, clock } = setup();
    await store.submit(spec([{ id: "old" }]));
    clock.advance(10_000);
    await store.submit(spec([{ id: "urgent", priority: 9 }]));
    expect((await claim(store, 1))[0]!.key).toBe("urgent");
  });

  it("claims only tasks whose handler the worker has, with a lease and a fencing token", async () => {
    const { store, clock } = setup();
    await store.submit(
      spec([
        { id: "a", handler: "alpha" },
        { id: "b", handler: "beta" },
      ]),
    );
    expect(await claim(store, 5, "w1", ["gamma"])).toEqual([]);
    const got = await claim(store, 5, "w1", ["beta"]);
    expect(got.map((t) => t.key)).toEqual(["b"]);
    const t = (await store.getTask(got[0]!.id))!;
    expect(t).toMatchObject({
      status: "running",
      attempts: 1,
      leaseWorker: "w1",
      leaseExpiresAt: clock.now() + LEASE_MS,
    });
    // The token is the seq of the task_started record that granted it.
    const started = (await store.listTransitions({ entityId: t.id })).find(
      (r) => r.event === "task_started",
    )!;
    expect(t.leaseToken).toBe(started.seq);
  });
});

describe("dependencies", () => {
  it("queues a dependent only when all its deps are completed or skipped", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([
        { id: "a" },
        { id: "b", deps: ["a"] },
        { id: "c", deps: ["a"] },
        { id: "d", deps: ["b", "c"] },
      ]),
    );
    const a = await run(store, "a");
    expect(await claim(store, 5)).toEqual([]); // nothing else is ready
    await settle(store, [complete(a)]);
    expect(await statusesByKey(store, workstreamId)).toMatchObject({
      b: "queued",
      c: "queued",
      d: "pending",
    });
    const [b, c] = await claim(store, 2);
    await settle(store, [complete(b!)]);
    expect((await statusesByKey(store, workstreamId)).d).toBe("pending");
    await settle(store, [complete(c!)]);
    expect((await statusesByKey(store, workstreamId)).d).toBe("queued");
    const ready = (await store.listTransitions({ entityId: `${workstreamId}/d` })).map(
      (t) => t.event,
    );
    expect(ready).toEqual(["task_created", "task_ready"]);
    const d = await run(store, "d");
    await settle(store, [complete(d)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("a skipped dependency satisfies its dependents", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "b" }, { id: "c", deps: ["a", "b"] }]),
    );
    await store.skipTask(`${workstreamId}/b`, operator);
    expect((await statusesByKey(store, workstreamId)).c).toBe("pending");
    const a = await run(store, "a");
    await settle(store, [complete(a)]);
    expect((await statusesByKey(store, workstreamId)).c).toBe("queued");
  });

  it("a non-critical task's permanent failure satisfies its dependents, with a warning", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([
        { id: "a", critical: false },
        { id: "b", deps: ["a"] },
      ]),
    );
    const a = await run(store, "a");
    const [s] = await settle(store, [fail(a)]);
    expect(s).toMatchObject({ applied: true, status: "failed", decision: { action: "fail" } });
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "failed", b: "queued" });
    const failed = (await store.listTransitions({ entityId: a.id })).at(-1)!;
    expect(failed).toMatchObject({ event: "task_failed_noncritical", severity: "warning" });
    const b = await run(store, "b");
    await settle(store, [complete(b)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("a critical failure leaves dependents pending; the workstream fails once nothing runs", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }, { id: "d", deps: ["c"] }]),
    );
    const [a, c] = await claim(store, 2);
    expect([a!.key, c!.key]).toEqual(["a", "c"]);
    await settle(store, [fail(a!)]);
    expect(await statusesByKey(store, workstreamId)).toEqual({
      a: "failed",
      b: "pending",
      c: "running",
      d: "pending",
    });
    // The independent branch goes on: the workstream is still active.
    expect((await store.getWorkstream(workstreamId))!.status).toBe("active");
    await settle(store, [complete(c!)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("active");
    const d = await run(store, "d");
    await settle(store, [complete(d)]);
    expect(await statusesByKey(store, workstreamId)).toEqual({
      a: "failed",
      b: "pending",
      c: "completed",
      d: "completed",
    });
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    const wsLog = await store.listTransitions({ entityId: workstreamId });
    expect(wsLog.at(-1)).toMatchObject({ event: "workstream_failed", severity: "error" });
    await expectReplayable(store);
  });

  it("retries a recoverable failure until its attempts run out", async () => {
    const { store, clock } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a", maxAttempts: 2 }]));
    let a = await run(store, "a");
    expect((await settle(store, [fail(a, true)]))[0]).toMatchObject({
      applied: true,
      status: "queued",
      decision: { action: "retry", delayMs: 1000 },
    });
    clock.advance(1000);
    a = await run(store, "a");
    expect(a.attempts).toBe(2);
    expect((await settle(store, [fail(a, true)]))[0]).toMatchObject({
      status: "failed",
      decision: { action: "fail" },
    });
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    const events = (await store.listTransitions({ entityId: a.id })).map((t) => t.event);
    expect(events).toEqual([
      "task_created",
      "task_started",
      "task_retry_scheduled",
      "task_started",
      "task_failed",
    ]);
  });

  it("onFailure: stop cancels the open tasks; running ones finish, then the workstream fails", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec(
        [
          { id: "a", priority: 2 },
          { id: "r", priority: 1 },
          { id: "b", deps: ["a"] },
          { id: "q" },
          { id: "p", deps: ["q"] },
        ],
        { onFailure: "stop" },
      ),
    );
    const [a, r] = await claim(store, 2);
    expect([a!.key, r!.key]).toEqual(["a", "r"]);
    await settle(store, [fail(a!)]);
    expect(await statusesByKey(store, workstreamId)).toEqual({
      a: "failed",
      r: "running",
      b: "cancelled",
      q: "cancelled",
      p: "cancelled",
    });
    expect((await store.getWorkstream(workstreamId))!.status).toBe("active");
    expect(await claim(store, 5)).toEqual([]);
    await settle(store, [complete(r!)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    await expectReplayable(store);
  });

  it("onFailure: continue does not cancel independent branches", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "q" }], { onFailure: "continue" }),
    );
    const a = await run(store, "a");
    await settle(store, [fail(a)]);
    expect((await statusesByKey(store, workstreamId)).q).toBe("queued");
  });
});

describe("operator actions", () => {
  it("retry queues a failed task with a fresh attempt budget, reopens the workstream, and is logged", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([
        { id: "a", maxAttempts: 1 },
        { id: "b", deps: ["a"] },
      ]),
    );
    const a = await run(store, "a");
    await settle(store, [fail(a)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");

    const after = await store.retryTask(a.id, { timeoutMs: 1234 }, operator);
    expect(after).toMatchObject({ status: "queued", attempts: 1, timeoutMs: 1234 });
    expect(after.retry.maxAttempts).toBe(2);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("active");
    const wsEvents = (await store.listTransitions({ entityId: workstreamId })).map((t) => t.event);
    expect(wsEvents).toEqual(["workstream_created", "workstream_failed", "workstream_reopened"]);
    const retried = (await store.listTransitions({ entityId: a.id })).at(-1)!;
    expect(retried).toMatchObject({ event: "task_retried", actor: "alice", from: "failed" });
    expect(retried.detail).toMatchObject({ reason: "testing" });

    const [iv] = await store.listInterventions();
    expect(iv).toMatchObject({
      actor: "alice",
      command: "mend test",
      target: a.id,
      reason: "testing",
      before: { status: "failed", attempts: 1, maxAttempts: 1 },
      after: { status: "queued", attempts: 1, maxAttempts: 2, timeoutMs: 1234 },
    });

    const again = await run(store, "a");
    expect(again.attempts).toBe(2);
    await settle(store, [complete(again)]);
    const b = await run(store, "b");
    await settle(store, [complete(b)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("completed");
    // The second run recovered the task.
    expect((await store.listTransitions({ entityId: a.id })).map((t) => t.event)).toContain(
      "task_recovered",
    );
    await expectReplayable(store);
  });

  it("retry of a failed task whose deps are not satisfied puts it back to pending", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await store.cancelTask(`${workstreamId}/b`, operator);
    const after = await store.retryTask(`${workstreamId}/b`, {}, operator);
    expect(after.status).toBe("pending");
  });

  it("skip and cancel: allowed moves, logged with actor and reason", async () => {
    const { store, clock } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
    );
    const skipped = await store.skipTask(`${workstreamId}/b`, {
      ...operator,
      reason: "not needed",
    });
    expect(skipped.status).toBe("skipped");
    clock.advance(1);
    const cancelled = await store.cancelTask(`${workstreamId}/c`, {
      actor: "bob",
      reason: null,
      command: "mend cancel",
    });
    expect(cancelled.status).toBe("cancelled");
    const ivs = await store.listInterventions();
    expect(
      ivs.map((i) => [i.actor, i.target, i.reason, (i.after as { status: string }).status]),
    ).toEqual([
      ["alice", `${workstreamId}/b`, "not needed", "skipped"],
      ["bob", `${workstreamId}/c`, null, "cancelled"],
    ]);
    const skipEvent = (await store.listTransitions({ entityId: `${workstreamId}/b` })).at(-1)!;
    expect(skipEvent).toMatchObject({ event: "task_skipped", severity: "warning", actor: "alice" });
    await expectReplayable(store);
  });

  it("cancelling a running task releases its lease and the workstream settles", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }]));
    const a = await run(store, "a");
    const after = await store.cancelTask(a.id, operator);
    expect(after).toMatchObject({ status: "cancelled", leaseToken: null, leaseWorker: null });
    // cancelled does not satisfy: the workstream ends failed.
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    // The worker's late outcome is refused.
    expect((await settle(store, [complete(a)]))[0]).toMatchObject({ applied: false });
    await expectReplayable(store);
  });

  it("skipping the last failed task of a failed workstream completes it", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b" }]));
    const [a, b] = await claim(store, 2);
    await settle(store, [fail(a!), complete(b!)]);
    expect((await store.getWorkstream(workstreamId))!.status).toBe("failed");
    await store.skipTask(a!.id, operator);
    // Every task is now completed or skipped: nothing is left that could fail it.
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "skipped", b: "completed" });
    expect((await store.getWorkstream(workstreamId))!.status).toBe("completed");
  });

  it("a cancelled task can be skipped, and its dependents then proceed", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await store.cancelTask(`${workstreamId}/a`, operator);
    const after = await store.skipTask(`${workstreamId}/a`, operator);
    expect(after.status).toBe("skipped");
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "skipped", b: "queued" });
    expect((await store.getWorkstream(workstreamId))!.status).toBe("active");
    await expectReplayable(store);
  });

  it("retrying a skipped dependency makes its not-yet-started dependents wait for it again", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await store.skipTask(`${workstreamId}/a`, operator);
    expect((await statusesByKey(store, workstreamId)).b).toBe("queued");
    await store.retryTask(`${workstreamId}/a`, {}, operator);
    // a will run again: b must not start before a is done (DAG invariant).
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "queued", b: "pending" });
    const claimed = await claim(store, 5);
    expect(claimed.map((t) => t.key)).toEqual(["a"]);
    await settle(store, [complete(claimed[0]!)]);
    expect((await statusesByKey(store, workstreamId)).b).toBe("queued");
  });

  it("retrying a non-critical failed dependency makes its queued dependents wait for it again", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([
        { id: "a", critical: false, maxAttempts: 1 },
        { id: "b", deps: ["a"] },
      ]),
    );
    const a = await run(store, "a");
    await settle(store, [fail(a)]);
    expect((await statusesByKey(store, workstreamId)).b).toBe("queued");
    await store.retryTask(a.id, {}, operator);
    expect(await statusesByKey(store, workstreamId)).toEqual({ a: "queued", b: "pending" });
    expect((await claim(store, 5)).map((t) => t.key)).toEqual(["a"]);
  });

  it("lists interventions in the order they were made, even within one millisecond", async () => {
    const { store } = setup();
    const keys = Array.from({ length: 8 }, (_, i) => `t${i}`);
    const { workstreamId } = await store.submit(spec(keys.map((id) => ({ id }))));
    // The fake clock does not move: every intervention has the same timestamp.
    for (const k of keys) await store.cancelTask(`${workstreamId}/${k}`, operator);
    expect((await store.listInterventions()).map((i) => i.target)).toEqual(
      keys.map((k) => `${workstreamId}/${k}`),
    );
  });

  it("refuses actions the task's state does not allow, writing nothing", async () => {
    const { store, clock } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "done" }, { id: "run" }, { id: "wait", deps: ["done"] }, { id: "q" }]),
    );
    const done = await run(store, "done");
    await settle(store, [complete(done)]);
    await run(store, "run");
    const id = (k: string) => `${workstreamId}/${k}`;
    const before = await logLength(store);
    const snap = await store.snapshot();

    const refusals: [string, Promise<unknown>][] = [
      ["retry completed", store.retryTask(id("done"), {}, operator)],
      ["retry running", store.retryTask(id("run"), {}, operator)],
      ["retry queued", store.retryTask(id("wait"), {}, operator)],
      ["retry queued 2", store.retryTask(id("q"), {}, operator)],
      ["skip completed", store.skipTask(id("done"), operator)],
      ["skip running", store.skipTask(id("run"), operator)],
      ["cancel completed", store.cancelTask(id("done"), operator)],
    ];
    for (const [what, p] of refusals) {
      const err = await expectRefused(p);
      expect(err.exitCode, what).toBe(4);
      expect(err.message).toContain(workstreamId);
    }
    const skipRunning = await expectRefused(store.skipTask(id("run"), operator));
    expect(skipRunning.message).toMatch(/cancel it first/);

    await store.skipTask(id("q"), operator);
    clock.advance(1);
    const afterSkip = await logLength(store);
    await expectRefused(store.skipTask(id("q"), operator)); // already skipped
    await store.cancelTask(id("wait"), operator);
    await expectRefused(store.cancelTask(id("wait"), operator)); // already cancelled
    await expectRefused(store.cancelTask(id("q"), operator)); // skipped
    const nf = await expectRefused(store.retryTask(id("nope"), {}, operator), "not_found");
    expect(nf.exitCode).toBe(3);
    await expectRefused(store.skipTask(id("nope"), operator), "not_found");
    await expectRefused(store.cancelTask(id("nope"), operator), "not_found");

    // Only the two successful actions wrote anything: one record and one intervention each.
    expect(afterSkip).toBeGreaterThan(before);
    expect((await store.listInterventions()).map((i) => i.target)).toEqual([id("q"), id("wait")]);
    expect(snap.tasks[id("done")]).toEqual((await store.snapshot()).tasks[id("done")]);
    await expectReplayable(store);
  });
});

describe("atomicity and durability", () => {
  it("a planner that throws mid-exchange rolls the whole exchange back", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "d", deps: ["a"] }]),
    );
    const [a, b] = await claim(store, 2);
    const lenBefore = await logLength(store);
    const snapBefore = await store.snapshot();
    const boom: FailurePlanner = () => {
      throw new Error("planner exploded");
    };
    // a's completion is settled first (and would promote d), then b's failure calls the planner.
    await expect(
      store.exchange({
        workerId: "w1",
        outcomes: [complete(a!), fail(b!, true)],
        claim: 1,
        leaseMs: LEASE_MS,
        handlers: ["work"],
        planner: boom,
      }),
    ).rejects.toThrow("planner exploded");
    expect(await logLength(store)).toBe(lenBefore);
    expect(await store.snapshot()).toEqual(snapBefore);
    expect(await statusesByKey(store, workstreamId)).toEqual({
      a: "running",
      b: "running",
      c: "queued",
      d: "pending",
    });
    await expectReplayable(store);

    // Nothing was lost: the same outcomes, with a working planner, apply in full.
    const r = await store.exchange({
      workerId: "w1",
      outcomes: [complete(a!), fail(b!, true)],
      claim: 1,
      leaseMs: LEASE_MS,
      handlers: ["work"],
      planner,
    });
    expect(r.settled.map((s) => s.applied)).toEqual([true, true]);
    expect(r.claimed).toHaveLength(1);
    // The log continues the chain without a gap.
    const log = await store.listTransitions();
    expect(log.map((t) => t.seq)).toEqual(log.map((_, i) => i + 1));
    await expectReplayable(store);
  });

  it("a planner that throws during a lease sweep rolls the whole sweep back", async () => {
    const { store, clock } = setup();
    await store.submit(spec([{ id: "a" }, { id: "b" }]));
    await claim(store, 2);
    clock.advance(LEASE_MS + 1);
    const lenBefore = await logLength(store);
    let calls = 0;
    await expect(
      store.sweepExpiredLeases((task, f, now) => {
        if (++calls === 2) throw new Error("second call fails");
        return planner(task, f, now);
      }),
    ).rejects.toThrow("second call fails");
    expect(await logLength(store)).toBe(lenBefore);
    const swept = await store.sweepExpiredLeases(planner);
    expect(swept).toHaveLength(2);
    await expectReplayable(store);
  });

  it("keeps everything across close and reopen of the same file", async () => {
    const { store, path, clock } = setup();
    const { workstreamId } = await store.submit(
      spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
    );
    await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
    const [a, c] = await claim(store, 2);
    await settle(store, [complete(a!, { answer: 42 })]);
    await store.cancelTask(c!.id, operator);
    const snap = await store.snapshot();
    const log = await store.listTransitions();
    const ivs = await store.listInterventions();
    const workers = await store.listWorkers();
    await store.close();

    const reopened = openSqlite(path, clock);
    expect(await reopened.snapshot()).toEqual(snap);
    expect(await reopened.listTransitions()).toEqual(log);
    expect(await reopened.listInterventions()).toEqual(ivs);
    expect(await reopened.listWorkers()).toEqual(workers);
    expect((await reopened.getTask(a!.id))!.output).toEqual({ answer: 42 });
    await expectReplayable(reopened);

    // And it carries on from where it was: the chain and fencing tokens continue.
    const [b] = await claim(reopened, 1);
    expect(b!.key).toBe("b");
    expect(b!.leaseToken).toBe(log.at(-1)!.seq + 1);
    await settle(reopened, [complete(b!)]);
    expect((await reopened.getWorkstream(workstreamId))!.status).toBe("failed"); // c cancelled
    await expectReplayable(reopened);

    // The data is in the file itself (an independent connection sees it).
    const raw = new Database(path, { readonly: true });
    try {
      const n = raw
        .prepare("SELECT COUNT(*) AS n FROM tasks WHERE workstream_id = ?")
        .get(workstreamId) as { n: number };
      expect(n.n).toBe(3);
    } finally {
      raw.close();
    }
  });

  it("a refused transition writes nothing even among successful ones", async () => {
    const { store } = setup();
    await store.submit(spec([{ id: "a" }, { id: "b" }]));
    const [a, b] = await claim(store, 2);
    const r = await store.exchange({
      workerId: "w1",
      outcomes: [complete(a!), { ...complete(b!), token: 999_999 }],
      claim: 0,
      leaseMs: LEASE_MS,
      handlers: ["work"],
      planner,
    });
    expect(r.settled[0]).toMatchObject({ applied: true, status: "completed" });
    expect(r.settled[1]).toMatchObject({ applied: false });
    expect((r.settled[1] as { reason: string }).reason).toMatch(/no longer held/);
    expect((await store.getTask(b!.id))!.status).toBe("running");
    await expectReplayable(store);
  });
});
