/**
 * A task's overall deadline (`deadline: "10s"`): it bounds each attempt's timeout, a retry that
 * would start after it fails the task, and a task whose deadline passes while it waits in the
 * queue (here: behind an open breaker) is failed by store.expireDeadlines (queued → failed).
 */
import { describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor } from "../src/store/store.js";
import {
  claimAs,
  completed,
  expectConsistent,
  failed,
  report,
  setupStore,
} from "./helpers/recovery.js";

const DEADLINE_MS = 10_000;
const operator: Actor = { actor: "alice", reason: "maintenance", command: "mend test" };

function definition(tasks: Record<string, unknown>[]) {
  return validateDefinition({
    name: "deadlines",
    tasks: tasks.map((t) => ({
      handler: "work",
      retry: { maxAttempts: 5, backoff: "constant", initial: "1s", jitter: "none" },
      ...t,
    })),
  });
}

async function byKey(store: SqliteStore, ws: string) {
  return Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t]));
}

describe("overall deadline", () => {
  it("bounds each claimed attempt's timeout by the time left", async () => {
    const { store, clock } = setupStore();
    await store.submit(
      definition([
        { id: "long", timeout: "30s", deadline: "10s" },
        { id: "short", timeout: "5s", deadline: "10s" },
        { id: "free", timeout: "30s" },
      ]),
    );
    const first = Object.fromEntries(
      (await claimAs(store, "w", ["work"], 3)).map((t) => [t.key, t]),
    );
    expect(first.long!.timeoutMs).toBe(DEADLINE_MS);
    expect(first.short!.timeoutMs).toBe(5_000);
    expect(first.free!.timeoutMs).toBe(30_000);

    // The short one fails; its retry 1 s later is claimed at +7 s with 3 s left.
    await report(store, "w", [failed(first.short!, "network")]);
    clock.advance(7_000);
    const [again] = await claimAs(store, "w", ["work"], 1);
    expect(again).toMatchObject({ key: "short", attempts: 2, timeoutMs: 3_000 });
    await report(store, "w", [completed(again!), completed(first.long!), completed(first.free!)]);
    await expectConsistent(store, clock);
  });

  it("a failure whose retry would start after the deadline fails the task", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition([
        {
          id: "t",
          deadline: "10s",
          retry: { maxAttempts: 5, backoff: "constant", initial: "8s", jitter: "none" },
        },
      ]),
    );
    const [t] = await claimAs(store, "w", ["work"], 1);
    clock.advance(3_000);
    // Retrying 8 s from now would start at +11 s, past the deadline at +10 s.
    const [s] = await report(store, "w", [failed(t!, "network")]);
    expect(s).toMatchObject({ status: "failed", decision: { action: "fail" } });
    const decision = (s as { decision: { reason: string } }).decision;
    expect(decision.reason).toMatch(/overall deadline/);
    const task = (await byKey(store, ws)).t!;
    expect(task).toMatchObject({ status: "failed", attempts: 1, leaseToken: null });
    expect(task.lastError).toMatchObject({ category: "network" });
    const last = (await store.listTransitions({ entityId: task.id })).at(-1)!;
    expect(last).toMatchObject({ event: "task_failed", from: "running", to: "failed" });
    expect((last.detail as { decision: { reason: string } }).decision.reason).toMatch(
      /overall deadline/,
    );
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    await expectConsistent(store, clock);
  });

  it("an attempt that fails after the deadline passed is not retried", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition([{ id: "t", timeout: "1m", deadline: "10s" }]),
    );
    const [t] = await claimAs(store, "w", ["work"], 1, 60_000);
    clock.advance(DEADLINE_MS);
    const [s] = await report(store, "w", [failed(t!, "timeout")]);
    expect(s).toMatchObject({
      status: "failed",
      decision: { action: "fail", reason: "overall deadline passed" },
    });
    expect((await byKey(store, ws)).t!.status).toBe("failed");
    await expectConsistent(store, clock);
  });

  it("expireDeadlines fails a queued task whose deadline passed while a breaker held it", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      validateDefinition({
        name: "held",
        tasks: [
          { id: "held", handler: "work", breaker: "search-api", deadline: "10s" },
          { id: "patient", handler: "work", breaker: "search-api" },
        ],
      }),
    );
    await store.controlBreaker("search-api", "open", operator);
    expect(await claimAs(store, "w", ["work"], 5)).toEqual([]);
    clock.advance(DEADLINE_MS - 1);
    expect(await store.expireDeadlines()).toEqual([]);
    expect((await byKey(store, ws)).held!.status).toBe("queued");

    clock.advance(1);
    const held = (await byKey(store, ws)).held!;
    // Past its deadline it is not claimed even if the breaker closes before the sweep runs.
    await store.controlBreaker("search-api", "close", operator);
    const claimed = await claimAs(store, "w", ["work"], 5);
    expect(claimed.map((t) => t.key)).toEqual(["patient"]);
    await store.controlBreaker("search-api", "open", operator);

    expect(await store.expireDeadlines()).toEqual([held.id]);
    const after = (await byKey(store, ws)).held!;
    expect(after).toMatchObject({ status: "failed", attempts: 0, leaseToken: null });
    expect(after.lastError).toMatchObject({ category: "timeout", recoverable: false });
    expect(after.lastError!.message).toContain("overall deadline of 10s");
    const last = (await store.listTransitions({ entityId: held.id })).at(-1)!;
    expect(last).toMatchObject({
      event: "task_failed",
      from: "queued",
      to: "failed",
      actor: "monitor",
      detail: { decision: { action: "fail", reason: "deadline passed" } },
    });
    // Once is enough; the task without a deadline is untouched.
    expect(await store.expireDeadlines()).toEqual([]);
    await report(store, "w", [completed(claimed[0]!)]);
    expect((await byKey(store, ws)).patient!.status).toBe("completed");
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    await expectConsistent(store, clock);
  });
});
