/**
 * The resources part of the store conformance suite: holds taken with the claim and given back
 * with the attempt's end, capacity never exceeded, fair waiting, alternatives, and a resource
 * taken out of service. Called by `describeStoreConformance`, so it runs on every store.
 */
import { describe, expect, it } from "vitest";
import type { FakeClock } from "../../src/engine/clock.js";
import { validateDefinition, type WorkstreamDefinition } from "../../src/model/definition.js";
import type { ClaimedTask, Store } from "../../src/store/store.js";
import {
  byKey,
  claimAs,
  completed,
  expectConsistent,
  failed,
  LEASE_MS,
  operator,
  planner,
  settle,
} from "./helpers.js";

const keys = (claimed: ClaimedTask[]) => claimed.map((t) => t.key).sort();

function submit(store: Store, def: WorkstreamDefinition) {
  return store.submit(validateDefinition(def));
}

async function resource(store: Store, id: string) {
  return (await store.listResources()).find((r) => r.id === id);
}

export function describeResourceConformance(
  setup: () => Promise<{ store: Store; clock: FakeClock }>,
): void {
  describe("resources", () => {
    it("never lets more tasks hold a resource than its limit; a hold ends with the attempt", async () => {
      const { store, clock } = await setup();
      const { workstreamId } = await submit(store, {
        name: "repo",
        resources: { repo: { maxHolders: 2 } },
        tasks: [
          { id: "a", handler: "work", resources: ["repo"] },
          { id: "b", handler: "work", resources: ["repo"] },
          { id: "c", handler: "work", resources: ["repo"] },
          { id: "free", handler: "work" },
        ],
      });
      const first = await claimAs(store, "w1", ["work"], 10);
      // Two of the three holders, and the task that needs nothing; c waits, visibly.
      expect(keys(first)).toEqual(["a", "b", "free"]);
      expect(await resource(store, "repo")).toMatchObject({
        maxHolders: 2,
        holders: 2,
        waiting: 1,
      });
      expect((await byKey(store, workstreamId)).a!.held).toEqual(["repo"]);
      expect(await claimAs(store, "w2", ["work"], 10)).toEqual([]);
      // A failure that is retried gives the hold back in the same transition.
      const a = first.find((t) => t.key === "a")!;
      await settle(store, "w1", [failed(a, "network")]);
      const tasks = await byKey(store, workstreamId);
      expect(tasks.a).toMatchObject({ status: "queued", held: null });
      // One of a (retried) and c takes the free slot; the other waits.
      expect(await claimAs(store, "w2", ["work"], 10)).toHaveLength(1);
      expect((await resource(store, "repo"))!.holders).toBe(2);
      await expectConsistent(store, clock);
    });

    it("waits fairly: the highest priority, then the oldest, gets the next free slot", async () => {
      const { store, clock } = await setup();
      await submit(store, {
        name: "old",
        tasks: [
          { id: "holder", handler: "work", resources: ["lock"], priority: 5 },
          { id: "old", handler: "work", resources: ["lock"] },
        ],
      });
      clock.advance(1_000);
      await submit(store, {
        name: "new",
        tasks: [
          { id: "young", handler: "work", resources: ["lock"] },
          { id: "urgent", handler: "work", resources: ["lock"], priority: 9 },
        ],
      });
      const [holder] = await claimAs(store, "w1", ["work"], 1);
      expect(holder!.key).toBe("urgent");
      clock.advance(10);
      await settle(store, "w1", [completed(holder!)]);
      expect((await claimAs(store, "w1", ["work"], 5)).map((t) => t.key)).toEqual(["holder"]);
    });

    it("takes an alternative when the first choice is full or out of service, and says so", async () => {
      const { store, clock } = await setup();
      const { workstreamId } = await submit(store, {
        name: "apis",
        tasks: [
          { id: "one", handler: "work", resources: [{ oneOf: ["api-a", "api-b"] }] },
          { id: "two", handler: "work", resources: [{ oneOf: ["api-a", "api-b"] }] },
          { id: "three", handler: "work", resources: [{ oneOf: ["api-a", "api-b"] }] },
        ],
      });
      const claimed = await claimAs(store, "w1", ["work"], 10);
      expect(keys(claimed)).toEqual(["one", "two"]);
      const tasks = await byKey(store, workstreamId);
      expect([tasks.one!.held, tasks.two!.held]).toEqual([["api-a"], ["api-b"]]);
      const started = (await store.listTransitions({ entityId: tasks.two!.id })).find(
        (e) => e.event === "task_started",
      );
      expect(started!.detail).toEqual({
        reallocated: [{ need: ["api-a", "api-b"], to: "api-b", because: "api-a is at capacity" }],
      });
      // api-a out of service: when api-b frees, the waiting task takes it; api-a stays idle.
      expect(
        await store.markResource("api-a", false, "provider outage", { ...operator }),
      ).toMatchObject({ status: "unavailable", reason: "provider outage" });
      await settle(
        store,
        "w1",
        claimed.map((t) => completed(t)),
      );
      const next = await claimAs(store, "w1", ["work"], 10);
      expect(keys(next)).toEqual(["three"]);
      expect((await byKey(store, workstreamId)).three!.held).toEqual(["api-b"]);
      // Back in service: the store says so, and the person's actions are interventions.
      expect(
        await store.markResource("api-a", true, "provider back", { ...operator }),
      ).toMatchObject({ status: "available", reason: null });
      expect(await store.markResource("api-a", true, "again", { ...operator })).toBeNull();
      const targets = (await store.listInterventions()).map((i) => i.target);
      expect(targets.filter((t) => t === "api-a")).toHaveLength(2);
      await expectConsistent(store, clock);
    });

    it("set-limit raises or lowers capacity; holders keep their holds", async () => {
      const { store, clock } = await setup();
      await submit(store, {
        name: "limit",
        tasks: ["a", "b", "c"].map((id) => ({ id, handler: "work", resources: ["gpu"] })),
      });
      expect((await resource(store, "gpu"))!.maxHolders).toBe(1);
      expect(keys(await claimAs(store, "w1", ["work"], 10))).toEqual(["a"]);
      await store.setResourceLimit("gpu", 3, operator);
      expect(keys(await claimAs(store, "w1", ["work"], 10))).toEqual(["b", "c"]);
      await store.setResourceLimit("gpu", 1, operator);
      expect(await resource(store, "gpu")).toMatchObject({ maxHolders: 1, holders: 3 });
      await expect(store.setResourceLimit("gpu", 0, operator)).rejects.toMatchObject({
        code: "invalid_argument",
      });
      await expectConsistent(store, clock);
    });

    it("a lost lease and a cancellation give their holds back; the monitor flags exhaustion", async () => {
      const { store, clock } = await setup();
      const { workstreamId } = await submit(store, {
        name: "lost",
        tasks: [
          { id: "a", handler: "work", resources: ["db"] },
          { id: "b", handler: "work", resources: ["db"] },
        ],
      });
      const [a] = await claimAs(store, "w1", ["work"], 10);
      expect(await store.refreshResources()).toMatchObject([{ id: "db", status: "exhausted" }]);
      clock.advance(LEASE_MS + 1);
      await store.sweepExpiredLeases(planner);
      expect((await byKey(store, workstreamId)).a).toMatchObject({ status: "queued", held: null });
      expect(await store.refreshResources()).toMatchObject([{ id: "db", status: "available" }]);
      const [next] = await claimAs(store, "w2", ["work"], 10);
      await store.cancelTask(next!.id, operator);
      expect((await byKey(store, workstreamId))[next!.key]!.held).toBeNull();
      expect((await resource(store, "db"))!.holders).toBe(0);
      expect(a).toBeDefined();
      await expectConsistent(store, clock);
    });
  });
}
