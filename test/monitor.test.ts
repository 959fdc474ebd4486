import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Monitor } from "../src/engine/Monitor.js";
import { createPlanner } from "../src/engine/planner.js";
import { validateDefinition } from "../src/model/definition.js";
import type { ExchangeRequest, Outcome } from "../src/store/store.js";
import { failureOf, spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });

/** Worker "w"'s round trip: settle `outcomes`, claim up to `claim` tasks. */
function request(outcomes: Outcome[], claim = 0): ExchangeRequest {
  return { workerId: "w", outcomes, claim, leaseMs: 5000, handlers: ["work"], planner };
}

describe("Monitor", () => {
  it("exactly one of several monitors acts; another takes over when the leader stops renewing", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const a = new Monitor({ store, clock, sweepMs: 1000, id: "m-a" });
    const b = new Monitor({ store, clock, sweepMs: 1000, id: "m-b" });
    expect(await a.tick()).not.toBeNull();
    expect(await b.tick()).toBeNull();
    clock.advance(1000);
    expect(await a.tick()).not.toBeNull();
    expect(await b.tick()).toBeNull();
    // a's process dies: it renews no more; its leadership lapses after three sweep intervals.
    clock.advance(2000);
    expect(await b.tick()).toBeNull();
    clock.advance(1001);
    expect(await b.tick()).not.toBeNull();
    expect(b.isLeader).toBe(true);
  });

  it("requeues an expired lease as a worker_lost failure", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { taskIds } = await store.submit(spec([{ id: "a" }]));
    await store.registerWorker({ id: "w", host: "h", pid: 1, concurrency: 1, handlers: ["work"] });
    await store.exchange(request([], 1));
    const monitor = new Monitor({ store, clock, planner });
    clock.advance(5001);
    const swept = await monitor.tick();
    expect(swept?.requeued).toEqual([
      { taskId: taskIds[0], workerId: "w", decision: expect.objectContaining({ action: "retry" }) },
    ]);
    const task = await store.getTask(taskIds[0]!);
    expect(task).toMatchObject({ status: "queued", leaseToken: null, workerLostStreak: 1 });
    expect(task?.lastError?.category).toBe("worker_lost");
  });
});

describe("durable retries", () => {
  it("a retry due in 45 minutes survives closing and reopening the store", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    const definition = validateDefinition({
      name: "patient",
      tasks: [{ id: "a", handler: "work", retry: "5m-15m-45m" }],
    });
    const { taskIds } = await store.submit(definition);
    const id = taskIds[0]!;
    const claimAndFail = async () => {
      const { claimed } = await reopened.exchange(request([], 1));
      expect(claimed.map((t) => t.id)).toEqual([id]);
      return reopened.exchange(
        request([
          {
            kind: "fail",
            taskId: id,
            token: claimed[0]!.leaseToken,
            failure: failureOf("network"),
          },
        ]),
      );
    };
    let reopened = store;
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { settled } = await claimAndFail();
      const decision = settled[0]!.applied ? settled[0]!.decision : undefined;
      expect(decision?.action).toBe("retry");
      delays.push(decision?.action === "retry" ? decision.delayMs : -1);
      // A restart between the failure and the retry: the schedule lives in the store.
      await reopened.close();
      reopened = openSqlite(path, clock);
      const early = await reopened.exchange(request([], 1));
      expect(early.claimed).toEqual([]);
      clock.advance(delays[i]!);
    }
    expect(delays).toEqual([300_000, 900_000, 2_700_000]);
    const { settled } = await claimAndFail();
    expect(settled[0]).toMatchObject({ applied: true, status: "failed" });
  });
});
