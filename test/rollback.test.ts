import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor } from "../src/store/store.js";
import {
  claim,
  complete,
  fail,
  LEASE_MS,
  runToCompletion,
  settle,
  start,
} from "./helpers/exchange.js";
import { completionsPerTask, spec, statusesByKey } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { expectError, expectReplayable } from "./helpers/expect.js";

const operator: Actor = { actor: "alice", reason: "bad batch", command: "mend test rollback" };

function setup() {
  const clock = new FakeClock();
  return { clock, ...tempStore(clock) };
}

/** a → (b, c) → d */
const DIAMOND = spec([
  { id: "a" },
  { id: "b", deps: ["a"] },
  { id: "c", deps: ["a"] },
  { id: "d", deps: ["b", "c"] },
]);

/** Everything a refused or dry-run operation must leave as it was. */
async function written(store: SqliteStore) {
  const { n } = store.db.prepare("SELECT COUNT(*) AS n FROM checkpoint_snapshots").get() as {
    n: number;
  };
  return {
    snapshot: await store.snapshot(),
    log: (await store.listTransitions()).length,
    interventions: (await store.listInterventions()).length,
    snapshots: n,
    backups: (await store.listBackups()).length,
  };
}

/**
 * The diamond after a completed (the checkpoint: b and c queued, nothing running), then b
 * completed and c still running.
 */
async function diamondMidway(store: SqliteStore, clock: FakeClock) {
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  const { workstreamId: ws } = await store.submit(DIAMOND);
  await runToCompletion(store, ["a"]);
  const [checkpoint] = await store.listCheckpoints(ws, 1);
  clock.advance(1_000);
  const [b, c] = await start(store, ["b", "c"]);
  await settle(store, [complete(b!)]);
  expect(await statusesByKey(store, ws)).toEqual({
    a: "completed",
    b: "completed",
    c: "running",
    d: "pending",
  });
  return { ws, checkpoint: checkpoint!, c: c! };
}

describe("rollback", () => {
  it("restores a parallel branch: the running task is stopped and reset, the completed one kept", async () => {
    const { store, clock } = setup();
    const { ws, checkpoint, c } = await diamondMidway(store, clock);
    expect(checkpoint.tasks).toEqual([
      { key: "a", status: "completed", attempts: 1 },
      { key: "b", status: "queued", attempts: 0 },
      { key: "c", status: "queued", attempts: 0 },
      { key: "d", status: "pending", attempts: 0 },
    ]);

    const plan = await store.rollbackWorkstream(ws, checkpoint.seq, operator);
    expect(plan).toEqual({
      operation: "rollback",
      workstreamId: ws,
      checkpoint: {
        seq: checkpoint.seq,
        at: checkpoint.at,
        event: checkpoint.event,
        task: checkpoint.task,
      },
      fromTask: null,
      changes: [
        {
          key: "c",
          from: "running",
          to: "queued",
          attempts: { from: 1, to: 0 },
          revokesLease: true,
          note: null,
        },
      ],
      kept: ["b"],
      resourcesReleased: [],
      workstream: { from: "active", to: "active" },
    });
    expect(await statusesByKey(store, ws)).toEqual({
      a: "completed",
      b: "completed",
      c: "queued",
      d: "pending",
    });
    expect(await store.getTask(c.id)).toMatchObject({
      attempts: 0,
      leaseToken: null,
      leaseWorker: null,
      leaseExpiresAt: null,
    });

    // The revoked worker hears it through its heartbeat, and its outcome is refused.
    const { lost } = await store.heartbeat(
      "w1",
      "busy",
      [{ taskId: c.id, token: c.leaseToken }],
      LEASE_MS,
    );
    expect(lost).toEqual([c.id]);
    const [late] = await settle(store, [complete(c)]);
    expect(late).toMatchObject({ applied: false });
    expect((late as { reason: string }).reason).toMatch(/no longer held/);

    // Recorded: the workstream's event, the task's transitions, the intervention.
    const wsEvents = await store.listTransitions({ entityId: ws });
    expect(wsEvents.at(-1)).toMatchObject({
      event: "workstream_rolled_back",
      severity: "warning",
      from: "active",
      to: "active",
      actor: "alice",
      detail: {
        reason: "bad batch",
        checkpoint: checkpoint.seq,
        kept: ["b"],
        resourcesReleased: [],
      },
    });
    const cEvents = (await store.listTransitions({ entityId: c.id })).slice(-2);
    expect(cEvents.map((t) => [t.event, t.from, t.to])).toEqual([
      ["task_rolled_back", "running", "pending"],
      ["task_ready", "pending", "queued"],
    ]);
    expect(cEvents[0]!.detail).toMatchObject({ revokedLease: c.leaseToken, worker: "w1" });
    const [iv] = await store.listInterventions();
    expect(iv).toMatchObject({
      actor: "alice",
      reason: "bad batch",
      command: "mend test rollback",
      target: ws,
      before: { status: "active", tasks: { c: "running" } },
      after: { status: "active", checkpoint: checkpoint.seq, tasks: { c: "queued" }, kept: ["b"] },
    });
    await expectReplayable(store);

    // The workstream proceeds: c runs again, then d; nothing completes twice.
    const [again] = await start(store, ["c"]);
    expect(again!.attempts).toBe(1);
    await settle(store, [complete(again!)]);
    await runToCompletion(store, ["d"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    const completions = completionsPerTask(await store.listTransitions());
    expect([...completions.values()]).toEqual([1, 1, 1, 1]);
    await expectReplayable(store);
  });

  it("to the first checkpoint: tasks completed since are kept, the rest start over", async () => {
    const { store, clock } = setup();
    const { ws } = await diamondMidway(store, clock);
    const first = (await store.listCheckpoints(ws)).at(-1)!;
    expect(first.event).toBe("task_created");
    const plan = await store.rollbackWorkstream(ws, first.seq, operator);
    expect(plan.kept).toEqual(["a", "b"]);
    expect(plan.changes.map((c) => [c.key, c.from, c.to])).toEqual([["c", "running", "queued"]]);
    await expectReplayable(store);
  });

  it("backs the store up first, and only for a rollback that happens", async () => {
    const { store } = setup();
    const { workstreamId } = await store.submit(DIAMOND);
    const first = (await store.listCheckpoints(workstreamId)).at(-1);
    await start(store, ["a"]);
    await store.rollbackWorkstream(workstreamId, first!.seq, operator, { dryRun: true });
    await store.rollbackWorkstream(workstreamId, 999_999, operator).catch(() => undefined);
    expect(await store.listBackups()).toEqual([]);
    await store.rollbackWorkstream(workstreamId, first!.seq, operator);
    const [backup] = await store.listBackups();
    expect(backup!.reason).toBe(`before rollback of ${workstreamId}`);
  });

  it("latest is the newest checkpoint at which nothing ran", async () => {
    const { store, clock } = setup();
    const { ws, checkpoint } = await diamondMidway(store, clock);
    const plan = await store.rollbackWorkstream(ws, "latest", operator, { dryRun: true });
    expect(plan.checkpoint!.seq).toBe(checkpoint.seq);
  });

  it("a dry run returns exactly the plan the rollback applies, and writes nothing", async () => {
    const { store, clock } = setup();
    const { ws, checkpoint } = await diamondMidway(store, clock);
    // Enough history that reading the checkpoint would materialize a snapshot if it could.
    for (let i = 0; i < 60; i++) {
      await store.cancelTask(`${ws}/d`, operator);
      await store.retryTask(`${ws}/d`, {}, operator);
    }
    const before = await written(store);
    expect(before.snapshots).toBe(0);
    // latest folds the whole log (over 100 records): a snapshot point is passed.
    const dry = await store.rollbackWorkstream(ws, "latest", operator, { dryRun: true });
    expect(dry.checkpoint!.seq).toBe(checkpoint.seq);
    expect(await written(store)).toEqual(before);
    const real = await store.rollbackWorkstream(ws, "latest", operator);
    expect(real).toEqual(dry);
    expect((await written(store)).snapshots).toBe(1);
    await expectReplayable(store);
  });

  it("restores skipped and cancelled states, revoking a lease on the way", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "x" }, { id: "y", deps: ["x"] }, { id: "z" }]),
    );
    await store.skipTask(`${ws}/x`, operator);
    await store.cancelTask(`${ws}/z`, operator);
    const [checkpoint] = await store.listCheckpoints(ws, 1);
    await store.retryTask(`${ws}/x`, {}, operator);
    await store.retryTask(`${ws}/z`, {}, operator);
    expect(await statusesByKey(store, ws)).toEqual({ x: "queued", y: "pending", z: "queued" });
    const [x] = await start(store, ["x", "z"]);

    const plan = await store.rollbackWorkstream(ws, checkpoint!.seq, operator);
    expect(plan.changes.map((c) => [c.key, c.from, c.to, c.revokesLease])).toEqual([
      ["x", "running", "skipped", true],
      ["y", "pending", "queued", false],
      ["z", "running", "cancelled", true],
    ]);
    expect(await statusesByKey(store, ws)).toEqual({ x: "skipped", y: "queued", z: "cancelled" });
    // running → skipped has no edge of its own: the lease is revoked on the way through pending.
    const xEvents = (await store.listTransitions({ entityId: x!.id })).slice(-2);
    expect(xEvents.map((t) => [t.event, t.from, t.to])).toEqual([
      ["task_rolled_back", "running", "pending"],
      ["task_rolled_back", "pending", "skipped"],
    ]);
    expect((await store.getTask(x!.id))!.leaseToken).toBeNull();
    await expectReplayable(store);
  });

  it("a task failed at the checkpoint and reopened since runs again, and says so", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(spec([{ id: "f", maxAttempts: 1 }]));
    const [f] = await start(store, ["f"]);
    await settle(store, [fail(f!)]);
    expect((await store.getWorkstream(ws))!.status).toBe("failed");
    const [checkpoint] = await store.listCheckpoints(ws, 1);
    await store.retryTask(f!.id, {}, operator);
    await start(store, ["f"]);

    const plan = await store.rollbackWorkstream(ws, checkpoint!.seq, operator);
    expect(plan.changes).toEqual([
      {
        key: "f",
        from: "running",
        to: "queued",
        attempts: { from: 2, to: 1 },
        revokesLease: true,
        note: expect.stringMatching(/was failed at the checkpoint.*runs again/),
      },
    ]);
    await expectReplayable(store);
  });

  it("reopens a failed workstream", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([
        { id: "a", maxAttempts: 1 },
        { id: "b", deps: ["a"] },
      ]),
    );
    const first = (await store.listCheckpoints(ws)).at(-1)!;
    const [a] = await start(store, ["a"]);
    await settle(store, [fail(a!)]);
    expect((await store.getWorkstream(ws))!.status).toBe("failed");

    const plan = await store.rollbackWorkstream(ws, first.seq, operator);
    expect(plan.workstream).toEqual({ from: "failed", to: "active" });
    expect(await statusesByKey(store, ws)).toEqual({ a: "queued", b: "pending" });
    expect((await store.getTask(a!.id))!.attempts).toBe(0);
    expect((await store.listTransitions({ entityId: ws })).at(-1)).toMatchObject({
      event: "workstream_rolled_back",
      from: "failed",
      to: "active",
    });
    await runToCompletion(store, ["a"]);
    await runToCompletion(store, ["b"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("a rollback that changes nothing writes nothing", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(DIAMOND);
    const before = await written(store);
    const plan = await store.rollbackWorkstream(ws, "latest", operator);
    expect(plan.changes).toEqual([]);
    expect(plan.workstream).toEqual({ from: "active", to: "active" });
    expect(await written(store)).toEqual(before);
  });

  it("refuses bad checkpoints and unknown workstreams, changing nothing", async () => {
    const { store, clock } = setup();
    const { ws } = await diamondMidway(store, clock);
    const other = await store.submit(spec([{ id: "o" }], { name: "other" }));
    const log = await store.listTransitions();
    const seqOf = (pred: (t: (typeof log)[number]) => boolean) => log.find(pred)!.seq;
    const wsCreated = seqOf((t) => t.entityId === ws && t.event === "workstream_created");
    const firstTaskCreated = seqOf((t) => t.entityId === `${ws}/a`);
    const otherSeq = seqOf((t) => t.workstreamId === other.workstreamId);
    const newest = log.at(-1)!.seq;
    const before = await written(store);

    await expectError(store.rollbackWorkstream("ws_nope", 1, operator), "not_found", /ws_nope/);
    await expectError(
      store.rollbackWorkstream(ws, otherSeq, operator),
      "not_found",
      new RegExp(`belongs to workstream ${other.workstreamId}.*mend workstream checkpoints`),
    );
    await expectError(
      store.rollbackWorkstream(ws, wsCreated, operator),
      "not_found",
      /workstream's workstream_created/,
    );
    await expectError(
      store.rollbackWorkstream(ws, firstTaskCreated, operator),
      "not_found",
      /still being submitted/,
    );
    await expectError(
      store.rollbackWorkstream(ws, newest + 100, operator),
      "invalid_argument",
      /newer than the newest checkpoint/,
    );
    await expectError(
      store.rollbackWorkstream(ws, 0, operator),
      "invalid_argument",
      /positive integer/,
    );
    expect(await written(store)).toEqual(before);
  });

  it("refuses archived and merged workstreams, naming the status", async () => {
    const { store } = setup();
    const done = await store.submit(spec([{ id: "a" }], { name: "done" }));
    await runToCompletion(store, ["a"]);
    const failed = await store.submit(spec([{ id: "f", maxAttempts: 1 }], { name: "failed" }));
    const [f] = await start(store, ["f"]);
    await settle(store, [fail(f!)]);
    const [doneCheckpoint] = await store.listCheckpoints(done.workstreamId, 1);
    await store.mergeWorkstream(done.workstreamId, operator);
    await store.archiveWorkstream(failed.workstreamId, operator);
    const before = await written(store);
    await expectError(
      store.rollbackWorkstream(done.workstreamId, doneCheckpoint!.seq, operator),
      "refused",
      /is merged.*cannot be rolled back/,
    );
    await expectError(
      store.rollbackWorkstream(failed.workstreamId, "latest", operator, { dryRun: true }),
      "refused",
      /is archived; it cannot be rolled back/,
    );
    expect(await written(store)).toEqual(before);
    expect(await claim(store, 5)).toEqual([]);
  });
});
