import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { submitWorkstream } from "../src/engine/submit.js";
import { Worker } from "../src/engine/Worker.js";
import { MendError } from "../src/errors.js";
import { validateDefinition } from "../src/model/definition.js";
import { type CompensationInput, defineTask } from "../src/model/handler.js";
import type { CompensationPolicy, CompensationSpec } from "../src/model/spec.js";
import type { TaskStatus } from "../src/model/states.js";
import { computeMetrics } from "../src/observe/metrics.js";
import {
  type CompensableTask,
  type CompensationOrder,
  planCompensation,
} from "../src/recovery/compensate.js";
import { DEFAULT_RETRY } from "../src/recovery/retry.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ClaimedTask } from "../src/store/store.js";
import { complete, fail, LEASE_MS, runToCompletion, settle, start } from "./helpers/exchange.js";
import { statusesByKey } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";
import { expectError, expectReplayable, written } from "./helpers/expect.js";

const operator: Actor = { actor: "dana", reason: "the booking was wrong", command: "mend test" };
const UNDO: CompensationSpec = { handler: "undo", idempotent: true, timeoutMs: 5_000 };

// ------------------------------------------------------------------------------------------------
// Planning (pure)

/** a → (b, c) → d, completed in that order (seq 1…4), and e (no compensation) last. */
function diamond(overrides: Partial<Record<string, Partial<CompensableTask>>> = {}) {
  const task = (key: string, deps: string[], seq: number): CompensableTask => ({
    key,
    status: "completed",
    deps,
    compensation: UNDO,
    completedSeq: seq,
    compensatedBy: null,
    ...overrides[key],
  });
  return [
    task("a", [], 1),
    task("b", ["a"], 2),
    task("c", ["a"], 3),
    task("d", ["b", "c"], 4),
    task("e", [], 5),
  ].map((t) => (t.key === "e" ? { ...t, compensation: null, ...overrides.e } : t));
}

function stepsOf(order: CompensationOrder, tasks = diamond()) {
  const plan = planCompensation({ workstreamId: "ws_x", order, tasks });
  return plan.steps.map((s) => [s.key, s.after]);
}

describe("planCompensation", () => {
  it("reverse: a chain, the last completed first", () => {
    expect(stepsOf("reverse")).toEqual([
      ["undo-d", []],
      ["undo-c", ["undo-d"]],
      ["undo-b", ["undo-c"]],
      ["undo-a", ["undo-b"]],
    ]);
  });

  it("parallel: nothing waits", () => {
    expect(stepsOf("parallel")).toEqual([
      ["undo-d", []],
      ["undo-c", []],
      ["undo-b", []],
      ["undo-a", []],
    ]);
  });

  it("dependency: a task's compensation waits for those of its dependents (the DAG reversed)", () => {
    expect(stepsOf("dependency")).toEqual([
      ["undo-d", []],
      ["undo-c", ["undo-d"]],
      ["undo-b", ["undo-d"]],
      ["undo-a", ["undo-c", "undo-b"]],
    ]);
  });

  it("dependency: waits through a dependent without compensation for the ones beyond it", () => {
    const tasks = diamond({ b: { compensation: null }, c: { compensation: null } });
    expect(stepsOf("dependency", tasks)).toEqual([
      ["undo-d", []],
      ["undo-a", ["undo-d"]],
    ]);
  });

  it("lists completed tasks without a compensation, or already compensated, as skipped", () => {
    const plan = planCompensation({
      workstreamId: "ws_x",
      order: "reverse",
      tasks: diamond({ c: { compensatedBy: "ws_c1" }, d: { status: "failed" as TaskStatus } }),
    });
    expect(plan.steps.map((s) => [s.key, s.task, s.after])).toEqual([
      ["undo-b", "b", []],
      ["undo-a", "a", ["undo-b"]],
    ]);
    expect(plan.skipped).toEqual([
      { task: "e", reason: "no compensation declared" },
      { task: "c", reason: "already compensated by ws_c1" },
    ]);
    expect(plan.steps[0]).toMatchObject({ handler: "undo", idempotent: true, timeoutMs: 5_000 });
    expect(plan.compensationId).toBeNull();
  });

  it("only undoes the tasks it is given (a rollback's), keeping the DAG for the order", () => {
    const plan = planCompensation({
      workstreamId: "ws_x",
      order: "dependency",
      tasks: diamond(),
      only: new Set(["a", "d"]),
    });
    expect(plan.steps.map((s) => [s.key, s.after])).toEqual([
      ["undo-d", []],
      ["undo-a", ["undo-d"]],
    ]);
    expect(plan.skipped).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
// Through the store

function setup() {
  const clock = new FakeClock();
  return { clock, ...tempStore(clock) };
}

interface TripTask {
  id: string;
  deps?: string[];
  /** Default: an idempotent compensation by handler `undo`. */
  undo?: "idempotent" | "once" | "none";
}

/** A validated workstream of `work` tasks that fail for good at once when they fail. */
function trip(tasks: TripTask[], compensation?: Partial<CompensationPolicy>, name = "trip") {
  return validateDefinition({
    name,
    ...(compensation ? { compensation } : {}),
    tasks: tasks.map((t) => ({
      id: t.id,
      handler: "work",
      input: { booking: t.id },
      retry: { maxAttempts: 1 },
      ...(t.deps ? { deps: t.deps } : {}),
      ...(t.undo === "none"
        ? {}
        : { compensate: { handler: "undo", idempotent: t.undo !== "once", timeout: "30s" } }),
    })),
  });
}

/** a → b → c: a and b complete, c fails for good. */
async function failedChain(store: SqliteStore, compensation?: Partial<CompensationPolicy>) {
  const { workstreamId } = await store.submit(
    trip([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c", deps: ["b"] }], compensation),
  );
  await runToCompletion(store, ["a"]);
  await runToCompletion(store, ["b"]);
  const [c] = await start(store, ["c"]);
  await settle(store, [fail(c!)]);
  return workstreamId;
}

const planner = createPlanner({ random: () => 0 });

/** Claims the ready compensating tasks (handler `undo`); asserts their keys. */
async function claimUndo(store: SqliteStore, keys: string[]): Promise<ClaimedTask[]> {
  const r = await store.exchange({
    workerId: "w-undo",
    outcomes: [],
    claim: 10,
    leaseMs: LEASE_MS,
    handlers: ["undo"],
    planner,
  });
  expect(r.claimed.map((t) => t.key).sort()).toEqual([...keys].sort());
  return r.claimed;
}

async function settleUndo(store: SqliteStore, outcomes: Parameters<typeof complete>[0][]) {
  const r = await store.exchange({
    workerId: "w-undo",
    outcomes: outcomes.map(complete),
    claim: 0,
    leaseMs: LEASE_MS,
    handlers: ["undo"],
    planner,
  });
  expect(r.settled.every((s) => s.applied)).toBe(true);
}

async function compensationsOf(store: SqliteStore, workstreamId: string) {
  return (await store.listWorkstreams()).filter((w) => w.compensates === workstreamId);
}

describe("automatic compensation", () => {
  it("on failure, when the policy says so: a compensation workstream undoes the completed tasks", async () => {
    const { store, clock } = setup();
    const ws = await failedChain(store, { on: ["failed"] });
    expect((await store.getWorkstream(ws))!.status).toBe("failed");

    const [comp] = await compensationsOf(store, ws);
    expect(comp).toMatchObject({
      name: "compensate trip",
      status: "active",
      onFailure: "continue",
      revive: false,
      compensation: { on: [], order: "reverse" },
      compensates: ws,
    });
    const [created] = await store.listTransitions({ entityId: comp!.id });
    expect(created).toMatchObject({
      event: "compensation_scheduled",
      severity: "warning",
      actor: "engine",
      data: { compensates: ws },
      detail: { trigger: "failed", order: "reverse", tasks: ["b", "a"] },
    });
    const tasks = await store.listTasks(comp!.id);
    expect(tasks.map((t) => [t.key, t.handler, t.deps, t.status, t.critical])).toEqual([
      ["undo-b", "undo", [], "queued", true],
      ["undo-a", "undo", ["undo-b"], "pending", true],
    ]);
    expect(tasks[0]!.input).toEqual({ task: "b", input: { booking: "b" }, output: { ok: "b" } });
    expect(tasks[0]!.retry).toEqual(DEFAULT_RETRY);
    expect(tasks[0]!.timeoutMs).toBe(30_000);

    // Claimed in the planned order: b's undo first, then a's.
    const [undoB] = await claimUndo(store, ["undo-b"]);
    await settleUndo(store, [undoB!]);
    const [undoA] = await claimUndo(store, ["undo-a"]);
    await settleUndo(store, [undoA!]);
    expect((await store.getWorkstream(comp!.id))!.status).toBe("completed");
    // The compensated workstream keeps its outcome; its tasks keep theirs.
    expect((await store.getWorkstream(ws))!.status).toBe("failed");

    const m = computeMetrics({
      transitions: await store.listTransitions(),
      interventions: await store.listInterventions(),
      to: clock.now(),
    });
    expect(m.compensation).toEqual({ scheduled: 1, ended: 1, completed: 1, successRate: 1 });
    await expectReplayable(store);
  });

  it("on cancel by default: the canceller's open tasks are cancelled, completed ones compensated", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      trip([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }, { id: "d", deps: ["b"] }]),
    );
    await runToCompletion(store, ["a", "c"]);
    const [b] = await start(store, ["b"]);

    const done = await store.cancelWorkstream(ws, operator);
    expect(done.workstream.status).toBe("cancelled");
    expect(done.cancelled).toEqual(["b", "d"]);
    expect(await statusesByKey(store, ws)).toEqual({
      a: "completed",
      b: "cancelled",
      c: "completed",
      d: "cancelled",
    });
    // The running task's worker lost its lease: its outcome is refused.
    expect((await settle(store, [complete(b!)]))[0]).toMatchObject({ applied: false });

    expect(done.compensation).toMatchObject({ workstreamId: ws, order: "reverse" });
    const [comp] = await compensationsOf(store, ws);
    expect(done.compensation!.compensationId).toBe(comp!.id);
    const [created] = await store.listTransitions({ entityId: comp!.id });
    expect(created).toMatchObject({ actor: "dana", detail: { trigger: "cancelled" } });
    expect(done.compensation!.steps.map((s) => s.task).sort()).toEqual(["a", "c"]);
    expect((await store.listInterventions()).at(-1)).toMatchObject({
      actor: "dana",
      target: ws,
      before: { status: "active", tasks: { b: "running", d: "pending" } },
      after: { status: "cancelled", compensation: comp!.id },
    });
    await expectReplayable(store);
  });

  it("not when the policy leaves that end out", async () => {
    const { store } = setup();
    // The default policy compensates on cancel only.
    const failed = await failedChain(store);
    expect(await compensationsOf(store, failed)).toEqual([]);

    const { workstreamId: other } = await store.submit(
      trip([{ id: "a" }, { id: "b", deps: ["a"] }], { on: ["failed"] }),
    );
    await runToCompletion(store, ["a"]);
    expect((await store.cancelWorkstream(other, operator)).compensation).toBeNull();
    expect(await compensationsOf(store, other)).toEqual([]);
    await expectReplayable(store);
  });

  it("once: ending again, or a person asking again, does not undo a completion twice", async () => {
    const { store } = setup();
    const ws = await failedChain(store, { on: ["failed", "cancelled"] });
    const [comp] = await compensationsOf(store, ws);
    // Failed, then cancelled, while its compensation runs: nothing more is scheduled.
    expect((await store.cancelWorkstream(ws, operator)).compensation).toBeNull();
    await expectError(
      store.compensateWorkstream(ws, operator),
      "refused",
      new RegExp(`compensation ${comp!.id} of workstream ${ws} is still active`),
    );
    const [undoB] = await claimUndo(store, ["undo-b"]);
    await settleUndo(store, [undoB!]);
    const [undoA] = await claimUndo(store, ["undo-a"]);
    await settleUndo(store, [undoA!]);

    const before = await written(store);
    const plan = await store.compensateWorkstream(ws, operator);
    expect(plan.steps).toEqual([]);
    expect(plan.skipped).toEqual([
      { task: "b", reason: `already compensated by ${comp!.id}` },
      { task: "a", reason: `already compensated by ${comp!.id}` },
    ]);
    expect(await written(store)).toEqual(before);
    expect(await compensationsOf(store, ws)).toHaveLength(1);
  });
});

describe("compensateWorkstream", () => {
  it("a dry run plans and writes nothing; the real one schedules it, logged as an intervention", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      trip([
        { id: "a" },
        { id: "b", deps: ["a"] },
        { id: "c", deps: ["a"], undo: "none" },
        { id: "d", deps: ["b", "c"], undo: "once" },
      ]),
    );
    await runToCompletion(store, ["a"]);
    await runToCompletion(store, ["b", "c"]);
    await runToCompletion(store, ["d"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");

    const before = await written(store);
    const preview = await store.compensateWorkstream(ws, operator, {
      order: "dependency",
      dryRun: true,
    });
    expect(await written(store)).toEqual(before);
    expect(preview.compensationId).toBeNull();
    expect(preview.steps.map((s) => [s.key, s.after])).toEqual([
      ["undo-d", []],
      ["undo-b", ["undo-d"]],
      ["undo-a", ["undo-d", "undo-b"]],
    ]);
    expect(preview.skipped).toEqual([{ task: "c", reason: "no compensation declared" }]);

    const plan = await store.compensateWorkstream(ws, operator, { order: "dependency" });
    expect({ ...plan, compensationId: null }).toEqual(preview);
    const comp = (await store.getWorkstream(plan.compensationId!))!;
    expect(comp.compensation).toEqual({ on: [], order: "dependency" });
    const byKey = new Map((await store.listTasks(comp.id)).map((t) => [t.key, t]));
    // Not idempotent: one attempt only.
    expect(byKey.get("undo-d")!.retry.maxAttempts).toBe(1);
    expect(byKey.get("undo-a")!.retry.maxAttempts).toBe(DEFAULT_RETRY.maxAttempts);
    expect((await store.listInterventions()).at(-1)).toMatchObject({
      actor: "dana",
      reason: "the booking was wrong",
      target: ws,
      before: { status: "completed" },
      after: { compensation: comp.id, order: "dependency", tasks: ["d", "b", "a"] },
    });
    expect((await store.listTransitions({ entityId: comp.id }))[0]).toMatchObject({
      actor: "dana",
      detail: { trigger: "person", reason: "the booking was wrong" },
    });

    // Runs in dependency order: d's undo, then b's, then a's.
    const [undoD] = await claimUndo(store, ["undo-d"]);
    await settleUndo(store, [undoD!]);
    const [undoB] = await claimUndo(store, ["undo-b"]);
    await settleUndo(store, [undoB!]);
    const [undoA] = await claimUndo(store, ["undo-a"]);
    await settleUndo(store, [undoA!]);
    expect((await store.getWorkstream(comp.id))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("a compensation that fails for good holds back those after it and fails its workstream", async () => {
    const { store, clock } = setup();
    const { workstreamId: ws } = await store.submit(
      trip([{ id: "a" }, { id: "b", deps: ["a"], undo: "once" }]),
    );
    await runToCompletion(store, ["a"]);
    await runToCompletion(store, ["b"]);
    const plan = await store.compensateWorkstream(ws, operator);
    const [undoB] = await claimUndo(store, ["undo-b"]);
    const r = await store.exchange({
      workerId: "w-undo",
      outcomes: [
        {
          kind: "fail",
          taskId: undoB!.id,
          token: undoB!.leaseToken,
          failure: { category: "network", recoverable: true, message: "refund API down" },
        },
      ],
      claim: 0,
      leaseMs: LEASE_MS,
      handlers: ["undo"],
      planner,
    });
    // Recoverable, but not idempotent: no second attempt.
    expect(r.settled[0]).toMatchObject({ applied: true, status: "failed" });
    expect(await statusesByKey(store, plan.compensationId!)).toEqual({
      "undo-b": "failed",
      "undo-a": "pending",
    });
    expect((await store.getWorkstream(plan.compensationId!))!.status).toBe("failed");
    const m = computeMetrics({
      transitions: await store.listTransitions(),
      interventions: [],
      to: clock.now(),
    });
    expect(m.compensation).toMatchObject({ ended: 1, completed: 0, successRate: 0 });
    await expectReplayable(store);
  });

  it("refuses an active, archived or merged workstream, a compensation, and an unknown id", async () => {
    const { store } = setup();
    const failed = await failedChain(store, { on: ["failed"] });
    const [comp] = await compensationsOf(store, failed);
    const { workstreamId: active } = await store.submit(trip([{ id: "a" }]));
    const before = await written(store);
    await expectError(
      store.compensateWorkstream(active, operator),
      "refused",
      /is active; compensate it once it has ended/,
    );
    await expectError(
      store.compensateWorkstream(comp!.id, operator, { dryRun: true }),
      "refused",
      /is active/,
    );
    await expectError(store.compensateWorkstream("ws_nope", operator), "not_found", /not found/);
    expect(await written(store)).toEqual(before);

    const [undoB] = await claimUndo(store, ["undo-b"]);
    await settleUndo(store, [undoB!]);
    const [undoA] = await claimUndo(store, ["undo-a"]);
    await settleUndo(store, [undoA!]);
    await expectError(
      store.compensateWorkstream(comp!.id, operator),
      "refused",
      new RegExp(`is the compensation of ${failed}`),
    );
    await store.archiveWorkstream(failed, operator);
    await expectError(store.compensateWorkstream(failed, operator), "refused", /is archived/);
    const err = await store.compensateWorkstream(failed, operator).catch((e: unknown) => e);
    expect((err as MendError).exitCode).toBe(4);
  });

  it("nothing to compensate: an empty plan, and nothing written", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(trip([{ id: "a", undo: "none" }]));
    await runToCompletion(store, ["a"]);
    const before = await written(store);
    const plan = await store.compensateWorkstream(ws, operator);
    expect(plan).toEqual({
      workstreamId: ws,
      order: "reverse",
      steps: [],
      skipped: [{ task: "a", reason: "no compensation declared" }],
      compensationId: null,
    });
    expect(await written(store)).toEqual(before);
  });
});

describe("rollback with compensation", () => {
  /** a → b → c, plus x (no compensation) after a; the checkpoint is a's completion. */
  async function completedSinceCheckpoint(store: SqliteStore) {
    const { workstreamId: ws } = await store.submit(
      trip([
        { id: "a" },
        { id: "b", deps: ["a"] },
        { id: "c", deps: ["b"] },
        { id: "x", deps: ["a"], undo: "none" },
      ]),
    );
    await runToCompletion(store, ["a"]);
    const [checkpoint] = await store.listCheckpoints(ws, 1);
    await runToCompletion(store, ["b", "x"]);
    await runToCompletion(store, ["c"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    return { ws, seq: checkpoint!.seq };
  }

  it("a dry run lists what would be compensated, and writes nothing", async () => {
    const { store } = setup();
    const { ws, seq } = await completedSinceCheckpoint(store);
    const before = await written(store);
    const plan = await store.rollbackWorkstream(ws, seq, operator, {
      dryRun: true,
      compensate: true,
    });
    expect(await written(store)).toEqual(before);
    expect(plan.kept).toEqual(["x"]);
    expect(plan.changes.map((c) => [c.key, c.from, c.to])).toEqual([
      ["b", "completed", "pending"],
      ["c", "completed", "pending"],
    ]);
    expect(plan.changes[0]!.note).toMatch(/its compensation undoes it/);
    expect(plan.compensation).toMatchObject({
      compensationId: null,
      steps: [
        { key: "undo-c", task: "c", after: [] },
        { key: "undo-b", task: "b", after: ["undo-c"] },
      ],
      skipped: [{ task: "x", reason: "no compensation declared" }],
    });
    // Without --compensate, the same rollback keeps them all.
    const keeps = await store.rollbackWorkstream(ws, seq, operator, { dryRun: true });
    expect(keeps.kept).toEqual(["b", "c", "x"]);
    expect(keeps.compensation).toBeUndefined();
  });

  it("undoes the tasks completed since the checkpoint, and runs them again once undone", async () => {
    const { store } = setup();
    const { ws, seq } = await completedSinceCheckpoint(store);
    const plan = await store.rollbackWorkstream(ws, seq, operator, { compensate: true });
    const comp = plan.compensation!.compensationId!;
    expect((await store.getWorkstream(comp))!.compensates).toBe(ws);
    expect((await store.listTransitions({ entityId: comp }))[0]).toMatchObject({
      detail: { trigger: "rollback", tasks: ["c", "b"] },
    });
    // Held: b is not queued while its compensation has yet to run, so nothing of ws can run.
    expect(await statusesByKey(store, ws)).toEqual({
      a: "completed",
      b: "pending",
      c: "pending",
      x: "completed",
    });
    expect(plan.workstream).toEqual({ from: "completed", to: "failed" });
    expect((await store.getWorkstream(ws))!.status).toBe("failed");
    expect((await store.listTransitions({ entityId: ws })).at(-2)).toMatchObject({
      event: "workstream_rolled_back",
      detail: { compensation: comp, kept: ["x"] },
    });
    expect(await compensationsOf(store, ws)).toHaveLength(1);

    const [undoC] = await claimUndo(store, ["undo-c"]);
    await settleUndo(store, [undoC!]);
    const [undoB] = await claimUndo(store, ["undo-b"]);
    expect(undoB!.input).toEqual({ task: "b", input: { booking: "b" }, output: { ok: "b" } });
    await settleUndo(store, [undoB!]);

    // The compensation completed: b runs again, then c; the workstream completes.
    expect((await store.getWorkstream(comp))!.status).toBe("completed");
    expect((await store.getWorkstream(ws))!.status).toBe("active");
    await runToCompletion(store, ["b"]);
    await runToCompletion(store, ["c"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    // Their new completions are compensable again.
    const again = await store.compensateWorkstream(ws, operator, { dryRun: true });
    expect(again.steps.map((s) => s.task)).toEqual(["c", "b", "a"]);
    await expectReplayable(store);
  });
});

describe("Worker", () => {
  it("runs a task's compensate with its input and output when its workstream fails", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const undone: CompensationInput<{ seat: number }, { booking: string }>[] = [];
    const handlers = {
      book: defineTask<{ seat: number }, { booking: string }>({
        run: (ctx) => ({ booking: `B-${ctx.input.seat}` }),
        compensate: {
          run: (ctx) => {
            undone.push(ctx.input);
          },
          idempotent: true,
          timeout: "5s",
        },
      }),
      pay: () => {
        throw new TypeError("card declined");
      },
    };
    const { workstreamId } = await submitWorkstream(
      store,
      {
        name: "holiday",
        compensation: { on: ["failed"] },
        tasks: [
          { id: "seat", handler: "book", input: { seat: 12 } },
          { id: "pay", handler: "pay", deps: ["seat"] },
        ],
      },
      { handlers },
    );
    expect((await store.getTask(`${workstreamId}/seat`))!.compensation).toEqual({
      handler: "book:compensate",
      idempotent: true,
      timeoutMs: 5_000,
    });

    const worker = new Worker({ store, clock, heartbeatMs: 200, pollMs: 50, handlers });
    await worker.start();
    expect((await store.listWorkers())[0]!.handlers).toEqual(["book", "book:compensate", "pay"]);
    await waitFor(
      async () => {
        await clock.advanceAsync(100, 50);
        return undone.length === 1;
      },
      5_000,
      "the compensation to run",
    );
    expect(undone).toEqual([{ task: "seat", input: { seat: 12 }, output: { booking: "B-12" } }]);
    const [comp] = await compensationsOf(store, workstreamId);
    await waitFor(
      async () => {
        await clock.advanceAsync(100, 50);
        return (await store.getWorkstream(comp!.id))!.status === "completed";
      },
      5_000,
      "the compensation workstream to complete",
    );
    await worker.stop(0);
    await expectReplayable(store);
  });

  it("refuses a malformed compensate, or one whose handler name is taken", () => {
    const { store } = tempStore(new FakeClock());
    const bad = (compensate: unknown) =>
      new Worker({
        store,
        handlers: { book: { run: () => null, compensate } as never },
      });
    expect(() => bad({ idempotent: true })).toThrow(/compensate must be a function/);
    expect(() => bad({ run: () => null, timeout: "soon" })).toThrow(/compensate\.timeout/);
    expect(
      () =>
        new Worker({
          store,
          handlers: {
            book: { run: () => null, compensate: () => null },
            "book:compensate": () => 1,
          },
        }),
    ).toThrow(expect.objectContaining({ code: "invalid_argument" }));
  });
});
