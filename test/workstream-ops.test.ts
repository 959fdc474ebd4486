import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { MendError } from "../src/errors.js";
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
import { spec, statusesByKey } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { expectError, expectReplayable, written } from "./helpers/expect.js";

const operator: Actor = { actor: "bob", reason: "fixed the tool", command: "mend test" };

function setup() {
  const clock = new FakeClock();
  return { clock, ...tempStore(clock) };
}

async function attemptsByKey(store: SqliteStore, ws: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of await store.listTasks(ws)) out[t.key] = t.attempts;
  return out;
}

/**
 * a → (b, c) → d, and e on its own: a, b and e completed, c failed for good, d pending (blocked).
 * The workstream has failed.
 */
async function failedBranch(store: SqliteStore) {
  const { workstreamId: ws } = await store.submit(
    spec([
      { id: "a" },
      { id: "b", deps: ["a"] },
      { id: "c", deps: ["a"], maxAttempts: 1 },
      { id: "d", deps: ["b", "c"] },
      { id: "e" },
    ]),
  );
  await runToCompletion(store, ["a", "e"]);
  const [b, c] = await start(store, ["b", "c"]);
  await settle(store, [complete(b!), fail(c!)]);
  expect(await statusesByKey(store, ws)).toEqual({
    a: "completed",
    b: "completed",
    c: "failed",
    d: "pending",
    e: "completed",
  });
  expect((await store.getWorkstream(ws))!.status).toBe("failed");
  return ws;
}

describe("workstream retry", () => {
  it("runs every task again, completed ones too, stopping running ones first", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
    );
    await runToCompletion(store, ["a", "c"]);
    const [b] = await start(store, ["b"]);

    const plan = await store.retryWorkstream(ws, "all", operator);
    expect(plan.changes.map((c) => [c.key, c.from, c.to, c.revokesLease])).toEqual([
      ["a", "completed", "queued", false],
      ["b", "running", "pending", true],
      ["c", "completed", "queued", false],
    ]);
    expect(plan.changes[0]!.note).toMatch(/runs again/);
    expect(await statusesByKey(store, ws)).toEqual({ a: "queued", b: "pending", c: "queued" });
    expect(await attemptsByKey(store, ws)).toEqual({ a: 0, b: 0, c: 0 });
    expect((await settle(store, [complete(b!)]))[0]).toMatchObject({ applied: false });
    expect((await store.listTransitions({ entityId: ws })).at(-1)).toMatchObject({
      event: "workstream_retried",
      detail: { reason: "fixed the tool", changed: 3 },
    });
    const aEvents = (await store.listTransitions({ entityId: `${ws}/a` })).slice(-2);
    expect(aEvents.map((t) => [t.event, t.from, t.to])).toEqual([
      ["task_reset", "completed", "pending"],
      ["task_ready", "pending", "queued"],
    ]);
    await runToCompletion(store, ["a", "c"]);
    await runToCompletion(store, ["b"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("retry-failed reruns the failed task and what depends on it; the rest stays", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    const plan = await store.retryWorkstream(ws, "failed", operator);
    expect(plan.operation).toBe("retry-failed");
    expect(plan.changes.map((c) => [c.key, c.from, c.to])).toEqual([["c", "failed", "queued"]]);
    expect(plan.workstream).toEqual({ from: "failed", to: "active" });
    expect(await statusesByKey(store, ws)).toEqual({
      a: "completed",
      b: "completed",
      c: "queued",
      d: "pending",
      e: "completed",
    });
    expect((await store.getTask(`${ws}/c`))!.lastError).toBeNull();
    await runToCompletion(store, ["c"]);
    await runToCompletion(store, ["d"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("retry-failed resets the dependents of a cancelled or non-critical failed task, running ones too", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([
        { id: "n", critical: false, maxAttempts: 1 },
        { id: "m", deps: ["n"] },
        { id: "x" },
        { id: "y", deps: ["x"] },
      ]),
    );
    const [n] = await start(store, ["n", "x"]);
    await settle(store, [fail(n!)]);
    // n's failure is not critical: m runs. x is cancelled: y waits, blocked.
    const [m] = await start(store, ["m"]);
    await store.cancelTask(`${ws}/x`, operator);
    const plan = await store.retryWorkstream(ws, "failed", operator);
    expect(plan.changes.map((c) => [c.key, c.from, c.to, c.revokesLease])).toEqual([
      ["n", "failed", "queued", false],
      ["m", "running", "pending", true],
      ["x", "cancelled", "queued", false],
    ]);
    expect((await settle(store, [complete(m!)]))[0]).toMatchObject({ applied: false });
    await expectReplayable(store);
  });

  it("retry-failed with nothing failed changes nothing", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(spec([{ id: "a" }]));
    const before = await written(store);
    expect((await store.retryWorkstream(ws, "failed", operator)).changes).toEqual([]);
    expect(await written(store)).toEqual(before);
  });
});

describe("workstream resume", () => {
  it("reruns the task and everything downstream (completed too); upstream stays", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([
        { id: "a" },
        { id: "b", deps: ["a"] },
        { id: "c", deps: ["a"] },
        { id: "d", deps: ["b", "c"] },
      ]),
    );
    await runToCompletion(store, ["a"]);
    await runToCompletion(store, ["b", "c"]);
    await runToCompletion(store, ["d"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");

    const plan = await store.resumeWorkstream(ws, "b", operator);
    expect(plan).toMatchObject({ operation: "resume", fromTask: "b" });
    expect(plan.changes.map((c) => [c.key, c.from, c.to])).toEqual([
      ["b", "completed", "queued"],
      ["d", "completed", "pending"],
    ]);
    expect(await statusesByKey(store, ws)).toEqual({
      a: "completed",
      b: "queued",
      c: "completed",
      d: "pending",
    });
    expect((await store.listTransitions({ entityId: ws })).at(-1)).toMatchObject({
      event: "workstream_resumed",
      from: "completed",
      to: "active",
      detail: { fromTask: "b" },
    });
    await runToCompletion(store, ["b"]);
    await runToCompletion(store, ["d"]);
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    await expectReplayable(store);
  });

  it("a dry run shows the same plan and writes nothing", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    const before = await written(store);
    const dry = await store.resumeWorkstream(ws, "a", operator, { dryRun: true });
    expect(await written(store)).toEqual(before);
    // d is already pending with no attempts: it waits for b and c again without a change.
    expect(dry.changes.map((c) => [c.key, c.from, c.to])).toEqual([
      ["a", "completed", "queued"],
      ["b", "completed", "pending"],
      ["c", "failed", "pending"],
    ]);
    expect(await store.resumeWorkstream(ws, "a", operator)).toEqual(dry);
  });

  it("an unknown task is not found, and nothing changes", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    const before = await written(store);
    await expectError(
      store.resumeWorkstream(ws, "nope", operator),
      "not_found",
      /has no task "nope" \(its tasks: a, b, c, d, e\)/,
    );
    expect(await written(store)).toEqual(before);
  });
});

describe("deps remove", () => {
  it("breaks a dependency: the task is queued if nothing else holds it, and replay agrees", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    const removal = await store.removeDependency(`${ws}/d`, `${ws}/c`, operator);
    expect(removal).toEqual({
      taskId: `${ws}/d`,
      removed: "c",
      deps: { from: ["b", "c"], to: ["b"] },
      status: { from: "pending", to: "queued" },
    });
    expect((await store.getTask(`${ws}/d`))!.deps).toEqual(["b"]);
    expect((await store.getWorkstream(ws))!.status).toBe("active");
    const events = (await store.listTransitions({ entityId: `${ws}/d` })).slice(-2);
    expect(events.map((t) => [t.event, t.from, t.to, t.severity])).toEqual([
      ["task_dependency_removed", "pending", "pending", "warning"],
      ["task_ready", "pending", "queued", "info"],
    ]);
    expect(events[0]!.data).toEqual({
      deps: ["b"],
      status: "pending",
      updatedAt: expect.any(Number),
    });
    expect((await store.listInterventions()).at(-1)).toMatchObject({
      target: `${ws}/d`,
      reason: "fixed the tool",
      before: { status: "pending", deps: ["b", "c"] },
      after: { status: "queued", deps: ["b"] },
    });
    // The claim's own dependency check (task_deps) agrees: d runs while c stays failed.
    await runToCompletion(store, ["d"]);
    expect(await statusesByKey(store, ws)).toMatchObject({ c: "failed", d: "completed" });
    await expectReplayable(store);
  });

  it("leaves the task pending while another dependency holds it", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "a" }, { id: "b" }, { id: "c", deps: ["a", "b"] }]),
    );
    const dry = await store.removeDependency(`${ws}/c`, `${ws}/a`, operator, { dryRun: true });
    expect(dry.status).toEqual({ from: "pending", to: "pending" });
    const removal = await store.removeDependency(`${ws}/c`, `${ws}/a`, operator);
    expect(removal).toEqual(dry);
    await runToCompletion(store, ["a", "b"]);
    expect((await statusesByKey(store, ws)).c).toBe("queued");
    await expectReplayable(store);
  });

  it("refuses what is not a dependency (naming the real ones) and tasks that no longer wait", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    const other = await store.submit(spec([{ id: "b" }]));
    const before = await written(store);
    await expectError(
      store.removeDependency(`${ws}/d`, `${ws}/a`, operator),
      "invalid_argument",
      new RegExp(`${ws}/d does not depend on ${ws}/a; it depends on: b, c`),
    );
    await expectError(
      store.removeDependency(`${ws}/d`, `${other.workstreamId}/b`, operator),
      "invalid_argument",
      /does not depend on/,
    );
    await expectError(
      store.removeDependency(`${ws}/a`, `${ws}/b`, operator),
      "invalid_argument",
      /it has no dependencies/,
    );
    await expectError(
      store.removeDependency(`${ws}/b`, `${ws}/a`, operator),
      "refused",
      /is completed: only a pending task waits/,
    );
    await expectError(
      store.removeDependency(`${ws}/nope`, `${ws}/a`, operator),
      "not_found",
      /nope/,
    );
    await expectError(
      store
        .removeDependency(`${ws}/d`, `${ws}/c`, operator, { dryRun: true })
        .then(() => store.removeDependency(`${ws}/d`, `${ws}/nope`, operator)),
      "not_found",
      /nope/,
    );
    expect(await written(store)).toEqual(before);
  });
});

describe("archive and merge", () => {
  it("are final: every recovery is refused with the status named, and nothing changes", async () => {
    const { store } = setup();
    const ws = await failedBranch(store);
    await expectError(
      store.mergeWorkstream(ws, operator),
      "refused",
      /is failed; only a completed workstream can be merged/,
    );
    const archived = await store.archiveWorkstream(ws, operator);
    expect(archived.status).toBe("archived");
    expect((await store.listTransitions({ entityId: ws })).at(-1)).toMatchObject({
      event: "workstream_archived",
      from: "failed",
      to: "archived",
      detail: { reason: "fixed the tool" },
    });
    expect((await store.listInterventions()).at(-1)).toMatchObject({
      target: ws,
      before: { status: "failed" },
      after: { status: "archived" },
    });
    const before = await written(store);
    const refusals: [string, Promise<unknown>][] = [
      ["rollback", store.rollbackWorkstream(ws, "latest", operator)],
      ["retry", store.retryWorkstream(ws, "all", operator)],
      ["retry-failed", store.retryWorkstream(ws, "failed", operator, { dryRun: true })],
      ["resume", store.resumeWorkstream(ws, "c", operator)],
      ["deps", store.removeDependency(`${ws}/d`, `${ws}/c`, operator)],
      ["archive", store.archiveWorkstream(ws, operator)],
      ["merge", store.mergeWorkstream(ws, operator)],
    ];
    for (const [what, p] of refusals) {
      const err = await p.then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(MendError);
      expect((err as MendError).exitCode, what).toBe(4);
      expect((err as MendError).message, what).toMatch(/is archived/);
    }
    // A task-level retry would reopen it: refused by the state machine, and nothing is written.
    const retry = await store.retryTask(`${ws}/c`, {}, operator).then(
      () => null,
      (e: unknown) => e,
    );
    expect((retry as MendError).exitCode).toBe(4);
    expect((retry as MendError).message).toMatch(/archived to active/);
    expect(await written(store)).toEqual(before);
  });

  it("merge records that a completed workstream's results were merged", async () => {
    const { store } = setup();
    const { workstreamId: ws } = await store.submit(spec([{ id: "a" }]));
    await expectError(
      store.archiveWorkstream(ws, operator),
      "refused",
      /is active; only a completed, failed or cancelled workstream can be archived/,
    );
    await runToCompletion(store, ["a"]);
    const merged = await store.mergeWorkstream(ws, operator);
    expect(merged.status).toBe("merged");
    await expectError(
      store.resumeWorkstream(ws, "a", operator),
      "refused",
      /is merged \(its results are in their destination\); it cannot be resumed/,
    );
    await expectError(store.archiveWorkstream(ws, operator), "refused", /is merged/);
    await expectReplayable(store);
  });

  it("unknown workstreams are not found", async () => {
    const { store } = setup();
    await expectError(store.archiveWorkstream("ws_nope", operator), "not_found", /ws_nope/);
    await expectError(store.retryWorkstream("ws_nope", "all", operator), "not_found", /ws_nope/);
    await expectError(store.listCheckpoints("ws_nope"), "not_found", /ws_nope/);
  });
});

describe("revoked leases", () => {
  it("a worker whose task was reset learns it from its heartbeat", async () => {
    const { store } = setup();
    await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 1, handlers: ["work"] });
    const { workstreamId: ws } = await store.submit(spec([{ id: "a" }]));
    const [a] = await claim(store, 1);
    await store.retryWorkstream(ws, "all", operator);
    const { lost } = await store.heartbeat(
      "w1",
      "busy",
      [{ taskId: a!.id, token: a!.leaseToken }],
      LEASE_MS,
    );
    expect(lost).toEqual([a!.id]);
    // Its next claim is a fresh lease with a new token.
    const [again] = await claim(store, 1);
    expect(again!.leaseToken).toBeGreaterThan(a!.leaseToken);
  });
});
