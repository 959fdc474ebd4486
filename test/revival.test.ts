/**
 * Revival (store.reviveTasks): failed tasks whose cause has cleared — their breaker closed again
 * after probes, or a rate-limit window passed — are queued again with the evidence, bounded by
 * maxRevivals and the workstream's `revive` setting; their workstream reopens and completes.
 */
import { describe, expect, it } from "vitest";
import type { FakeClock } from "../src/engine/clock.js";
import { validateDefinition } from "../src/model/definition.js";
import { DEFAULT_REVIVAL, REVIVAL_CONFIDENCE } from "../src/recovery/revive.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, RevivalOptions } from "../src/store/store.js";
import {
  claimAs,
  completed,
  expectConsistent,
  failed,
  LEASE_MS,
  planner,
  report,
  setupStore,
} from "./helpers/recovery.js";

const BREAKER = "search-api";
const OPEN_MS = 10_000;
const OPTIONS: RevivalOptions = { ...DEFAULT_REVIVAL };
const operator: Actor = { actor: "alice", reason: "api is back", command: "mend test" };

/** Tasks that fail for good at their first failure, behind the breaker unless `breaker: false`. */
function definition(
  name: string,
  keys: string[],
  options: { revive?: boolean; breaker?: boolean; maxAttempts?: number } = {},
) {
  const guarded = options.breaker ?? true;
  return validateDefinition({
    name,
    ...(options.revive === undefined ? {} : { revive: options.revive }),
    ...(guarded
      ? {
          breakers: {
            [BREAKER]: {
              failureThreshold: 3,
              open: "10s",
              halfOpenMaxCalls: 2,
              successThreshold: 2,
            },
          },
        }
      : {}),
    tasks: keys.map((id) => ({
      id,
      handler: "search",
      ...(guarded ? { breaker: BREAKER } : {}),
      retry: {
        maxAttempts: options.maxAttempts ?? 1,
        backoff: "constant",
        initial: "1s",
        jitter: "none",
      },
    })),
  });
}

async function breakerStatus(store: SqliteStore): Promise<string | undefined> {
  return (await store.listBreakers()).find((b) => b.id === BREAKER)?.status;
}

/** Claims every ready `search` task for `worker` and fails each with a network error. */
async function failAll(store: SqliteStore, n: number, worker = "w1"): Promise<void> {
  const claimed = await claimAs(store, worker, ["search"], n);
  expect(claimed).toHaveLength(n);
  await report(
    store,
    worker,
    claimed.map((t) => failed(t, "network")),
  );
}

/**
 * Closes the open breaker the way the system does: after its open time, two probe tasks (a
 * separate workstream) run half-open and succeed. `check` runs while it is half-open.
 */
async function probeAndClose(
  store: SqliteStore,
  clock: FakeClock,
  check: () => Promise<void> = async () => {},
): Promise<void> {
  expect(await breakerStatus(store)).toBe("open");
  await store.submit(definition(`probes-${clock.now()}`, ["p1", "p2"], { maxAttempts: 3 }));
  clock.advance(OPEN_MS);
  const probes = await claimAs(store, "w2", ["search"], 5);
  expect(probes).toHaveLength(2);
  expect(await breakerStatus(store)).toBe("half_open");
  await check();
  await report(
    store,
    "w2",
    probes.map((t) => completed(t)),
  );
  expect(await breakerStatus(store)).toBe("closed");
  clock.advance(1);
}

describe("reviveTasks", () => {
  it("revives an outage's failed tasks only once probes closed the breaker; the workstream reopens and completes", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws, taskIds } = await store.submit(
      definition("outage", ["f1", "f2", "f3"]),
    );
    await failAll(store, 3);
    for (const t of await store.listTasks(ws)) {
      expect(t).toMatchObject({ status: "failed", revivals: 0, attempts: 1 });
    }
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    expect(await breakerStatus(store)).toBe("open");

    // Open, even well past its open time (nobody probed yet): nothing to revive.
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    await probeAndClose(store, clock, async () => {
      expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    });

    const revived = await store.reviveTasks(OPTIONS);
    expect(revived.map((r) => r.taskId).sort()).toEqual([...taskIds].sort());
    for (const r of revived) {
      expect(r).toEqual({
        taskId: r.taskId,
        workstreamId: ws,
        cause: `breaker ${BREAKER} closed again`,
        confidence: REVIVAL_CONFIDENCE.breakerClosed,
        revival: 1,
      });
    }
    expect(REVIVAL_CONFIDENCE.breakerClosed).toBe(0.9);
    for (const t of await store.listTasks(ws)) {
      expect(t).toMatchObject({ status: "queued", attempts: 0, revivals: 1, runAt: clock.now() });
      const last = (await store.listTransitions({ entityId: t.id })).at(-1)!;
      expect(last).toMatchObject({
        event: "task_revived",
        from: "failed",
        to: "queued",
        actor: "monitor",
        detail: { cause: `breaker ${BREAKER} closed again`, confidence: 0.9, revival: 1 },
      });
    }
    // The workstream is active again, and a second sweep finds nothing more.
    const wsLog = await store.listTransitions({ entityId: ws });
    expect(wsLog.map((t) => [t.event, t.from, t.to]).slice(-2)).toEqual([
      ["workstream_failed", "active", "failed"],
      ["workstream_reopened", "failed", "active"],
    ]);
    expect((await store.getWorkstream(ws))?.status).toBe("active");
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);

    // They run again and complete: recorded as recoveries; the workstream completes.
    const again = await claimAs(store, "w1", ["search"], 5);
    expect(again.map((t) => t.attempts)).toEqual([1, 1, 1]);
    await report(
      store,
      "w1",
      again.map((t) => completed(t)),
    );
    for (const id of taskIds) {
      const last = (await store.listTransitions({ entityId: id })).at(-1)!;
      expect(last).toMatchObject({ event: "task_recovered", to: "completed" });
    }
    expect((await store.getWorkstream(ws))?.status).toBe("completed");
    await expectConsistent(store, clock);
  });

  it("maxRevivals bounds how often a task is revived", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition("outage", ["f1", "f2", "f3"]));
    await failAll(store, 3);
    await probeAndClose(store, clock);
    const once = { ...OPTIONS, maxRevivals: 1 };
    expect(await store.reviveTasks(once)).toHaveLength(3);

    // They fail again for good; a person resets the breaker (it closed again after that).
    await failAll(store, 3);
    expect(await breakerStatus(store)).toBe("open");
    clock.advance(1);
    await store.controlBreaker(BREAKER, "reset", operator);
    expect(await store.reviveTasks(once)).toEqual([]);
    for (const t of await store.listTasks(ws))
      expect(t).toMatchObject({ status: "failed", revivals: 1 });

    const twice = await store.reviveTasks({ ...OPTIONS, maxRevivals: 2 });
    expect(twice.map((r) => r.revival)).toEqual([2, 2, 2]);
    for (const t of await store.listTasks(ws))
      expect(t).toMatchObject({ status: "queued", revivals: 2 });
    expect(await store.reviveTasks({ ...OPTIONS, maxRevivals: 2 })).toEqual([]);
    await expectConsistent(store, clock);
  });

  it("a workstream with revive: false keeps its failed tasks failed", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition("no-revival", ["f1", "f2", "f3"], { revive: false }),
    );
    expect((await store.getWorkstream(ws))?.revive).toBe(false);
    await failAll(store, 3);
    await probeAndClose(store, clock);
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    for (const t of await store.listTasks(ws)) expect(t.status).toBe("failed");
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    await expectConsistent(store, clock);
  });

  it("never revives a logic failure, nor a task that lost its worker", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition("mixed", ["f1", "f2", "f3", "bad", "lost"]),
    );
    const claimed = await claimAs(store, "w1", ["search"], 5);
    const by = Object.fromEntries(claimed.map((t) => [t.key, t]));
    await report(store, "w1", [failed(by.bad!, "logic")]);
    await report(
      store,
      "w1",
      ["f1", "f2", "f3"].map((k) => failed(by[k]!, "network")),
    );
    expect(await breakerStatus(store)).toBe("open");
    // `lost`'s worker dies: its lease expires and, with one attempt allowed, it fails for good.
    clock.advance(LEASE_MS + 1);
    const swept = await store.sweepExpiredLeases(planner);
    expect(swept.map((s) => [s.taskId, s.decision.action])).toEqual([[by.lost!.id, "fail"]]);

    await probeAndClose(store, clock);
    const revived = await store.reviveTasks(OPTIONS);
    expect(revived.map((r) => r.taskId).sort()).toEqual(["f1", "f2", "f3"].map((k) => by[k]!.id));
    const tasks = Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t]));
    expect(tasks.bad).toMatchObject({ status: "failed", revivals: 0 });
    expect(tasks.bad!.lastError).toMatchObject({ category: "logic", recoverable: false });
    expect(tasks.lost).toMatchObject({ status: "failed", revivals: 0 });
    expect(tasks.lost!.lastError).toMatchObject({ category: "worker_lost" });
    await expectConsistent(store, clock);
  });

  it("revives a rate-limited task once its Retry-After (or the window) has passed, and not before", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition("quota", ["asked", "silent"], { breaker: false }),
    );
    const claimed = await claimAs(store, "w1", ["search"], 2);
    const by = Object.fromEntries(claimed.map((t) => [t.key, t]));
    const failedAt = clock.now();
    await report(store, "w1", [
      failed(by.asked!, "rate_limited", { retryAfterMs: 120_000 }),
      failed(by.silent!, "rate_limited"),
    ]);
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);

    // The window (60 s) has passed for the task that gave no Retry-After, not for the other.
    clock.advance(OPTIONS.rateLimitWindowMs - 1);
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    clock.advance(1);
    // Evidence weaker than asked for is not enough.
    expect(await store.reviveTasks({ ...OPTIONS, minConfidence: 0.8 })).toEqual([]);
    const first = await store.reviveTasks(OPTIONS);
    expect(first).toEqual([
      {
        taskId: by.silent!.id,
        workstreamId: ws,
        cause: "rate-limit window of 60 s passed",
        confidence: 0.7,
        revival: 1,
      },
    ]);
    expect((await store.getWorkstream(ws))?.status).toBe("active");

    clock.advance(failedAt + 120_000 - 1 - clock.now());
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    clock.advance(1);
    const second = await store.reviveTasks(OPTIONS);
    expect(second).toEqual([
      {
        taskId: by.asked!.id,
        workstreamId: ws,
        cause: "rate-limit window of 120 s passed",
        confidence: REVIVAL_CONFIDENCE.rateLimitPassed,
        revival: 1,
      },
    ]);

    const again = await claimAs(store, "w1", ["search"], 5);
    expect(again).toHaveLength(2);
    await report(
      store,
      "w1",
      again.map((t) => completed(t)),
    );
    for (const t of await store.listTasks(ws)) {
      expect(t).toMatchObject({ status: "completed", revivals: 1 });
      expect((await store.listTransitions({ entityId: t.id })).at(-1)!.event).toBe(
        "task_recovered",
      );
    }
    const wsEvents = (await store.listTransitions({ entityId: ws })).map((t) => t.event);
    expect(wsEvents).toEqual([
      "workstream_created",
      "workstream_failed",
      "workstream_reopened",
      "workstream_completed",
    ]);
    await expectConsistent(store, clock);
  });

  it("in a workstream that stops on failure, what the failure cancelled waits for the revived task again", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      validateDefinition({
        name: "stops",
        onFailure: "stop",
        tasks: [
          { id: "a", handler: "search", retry: { maxAttempts: 1 } },
          { id: "b", handler: "search", deps: ["a"] },
          { id: "c", handler: "later", deps: ["a"] },
          { id: "d", handler: "search", deps: ["b"] },
        ],
      }),
    );
    const [a] = await claimAs(store, "w1", ["search"], 1);
    await report(store, "w1", [failed(a!, "rate_limited")]);
    const statusOf = async () =>
      Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t.status]));
    expect(await statusOf()).toEqual({
      a: "failed",
      b: "cancelled",
      c: "cancelled",
      d: "cancelled",
    });
    clock.advance(OPTIONS.rateLimitWindowMs);
    const revived = await store.reviveTasks(OPTIONS);
    expect(revived.map((r) => r.taskId)).toEqual([a!.id]);
    expect(await statusOf()).toEqual({ a: "queued", b: "pending", c: "pending", d: "pending" });
    expect((await store.getWorkstream(ws))!.status).toBe("active");
    // The run finishes normally.
    for (const handlers of [["search"], ["search", "later"], ["search"]]) {
      const ready = await claimAs(store, "w1", handlers, 5);
      await report(
        store,
        "w1",
        ready.map((t) => completed(t)),
      );
    }
    expect(await statusOf()).toEqual({
      a: "completed",
      b: "completed",
      c: "completed",
      d: "completed",
    });
    expect((await store.getWorkstream(ws))!.status).toBe("completed");
    await expectConsistent(store, clock);
  });

  // The limit bounds revivals, not candidates (a regression test).
  it("the limit bounds revivals, not candidates: failures without evidence do not starve others", async () => {
    const { store, clock } = setupStore();
    await store.submit(definition("outage", ["f1", "f2", "f3"]));
    await failAll(store, 3);
    expect(await breakerStatus(store)).toBe("open");
    clock.advance(1);
    const { workstreamId: quota } = await store.submit(
      definition("quota", ["r"], { breaker: false }),
    );
    const [r] = await claimAs(store, "w1", ["search"], 1);
    await report(store, "w1", [failed(r!, "rate_limited")]);
    clock.advance(OPTIONS.rateLimitWindowMs);
    // The breaker is still open (nobody probed it); the rate-limit window has passed.
    expect(await breakerStatus(store)).toBe("open");
    const revived = await store.reviveTasks({ ...OPTIONS, limit: 2 });
    expect(revived.map((r) => r.workstreamId)).toEqual([quota]);
  });

  // Only a close after being open is evidence (a regression test).
  it("reconfiguring a breaker that never opened is no evidence to revive its failed tasks", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition("one", ["f1"]));
    await failAll(store, 1);
    expect(await breakerStatus(store)).toBe("closed");
    clock.advance(1_000);
    await store.submit(
      validateDefinition({
        name: "stricter",
        breakers: { [BREAKER]: { failureThreshold: 5 } },
        tasks: [{ id: "x", handler: "other", breaker: BREAKER }],
      }),
    );
    expect((await store.listTransitions({ entityId: BREAKER })).map((t) => t.event)).toEqual([
      "breaker_created",
      "breaker_configured",
    ]);
    expect(await store.reviveTasks(OPTIONS)).toEqual([]);
    expect((await store.listTasks(ws))[0]!.status).toBe("failed");
  });
});
