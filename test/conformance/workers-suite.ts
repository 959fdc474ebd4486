/**
 * The worker registry part of the store conformance suite: capability-gated claims, and a
 * person's shutdown and restart requests. Called by `describeStoreConformance` with its setup, so
 * it runs on every store.
 */
import { describe, expect, it } from "vitest";
import type { FakeClock } from "../../src/engine/clock.js";
import { validateDefinition } from "../../src/model/definition.js";
import type { Actor, ClaimedTask, Store, WorkerInfo } from "../../src/store/store.js";
import {
  completed,
  eventsOf,
  expectConsistent,
  expectRefused,
  LEASE_MS,
  planner,
  settle,
} from "./helpers.js";

const erin: Actor = { actor: "erin", reason: "host maintenance", command: "mend worker shutdown" };

function info(id: string, extra: Partial<WorkerInfo> = {}): WorkerInfo {
  return { id, host: "h1", pid: 100, concurrency: 4, handlers: ["work"], ...extra };
}

/** Claims up to `n` tasks as `worker` with `capabilities`. */
async function claimWith(
  store: Store,
  worker: string,
  capabilities: string[] | undefined,
  n = 10,
): Promise<ClaimedTask[]> {
  const r = await store.exchange({
    workerId: worker,
    outcomes: [],
    claim: n,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    ...(capabilities === undefined ? {} : { capabilities }),
    planner,
  });
  return r.claimed;
}

const keys = (claimed: ClaimedTask[]) => claimed.map((t) => t.key).sort();

export function describeWorkerConformance(
  setup: () => Promise<{ store: Store; clock: FakeClock }>,
): void {
  describe("workers", () => {
    it("a task that requires capabilities is claimed only by a worker that has them all", async () => {
      const { store, clock } = await setup();
      const { workstreamId } = await store.submit(
        validateDefinition({
          name: "gated",
          defaults: { requires: ["net"] },
          tasks: [
            { id: "plain", handler: "work", requires: [] },
            { id: "net", handler: "work" },
            { id: "gpu", handler: "work", requires: ["gpu"] },
            { id: "both", handler: "work", requires: ["net", "gpu", "gpu"] },
          ],
        }),
      );
      const stored = Object.fromEntries(
        (await store.listTasks(workstreamId)).map((t) => [t.key, t.requires]),
      );
      expect(stored).toEqual({ plain: null, net: ["net"], gpu: ["gpu"], both: ["gpu", "net"] });
      // Near misses: names that contain, or are contained in, a required one.
      expect(keys(await claimWith(store, "near", ["gp", "gpu2", "ne", "nets", "g", "u"]))).toEqual([
        "plain",
      ]);
      expect(await claimWith(store, "none", undefined)).toEqual([]);
      expect(keys(await claimWith(store, "gpu", ["gpu"]))).toEqual(["gpu"]);
      expect(keys(await claimWith(store, "all", ["zz", "net", "gpu", "net", "aa"]))).toEqual([
        "both",
        "net",
      ]);
      await expectConsistent(store, clock);
    });

    it("registers what a worker can do; a heartbeat carries no request until a person makes one", async () => {
      const { store, clock } = await setup();
      await store.registerWorker(info("w1", { capabilities: ["gpu"], supervised: true }));
      await store.registerWorker(info("w2"));
      expect(await store.getWorker("w1")).toMatchObject({
        id: "w1",
        status: "idle",
        capabilities: ["gpu"],
        supervised: true,
        control: null,
      });
      expect(await store.getWorker("w2")).toMatchObject({ capabilities: [], supervised: false });
      expect(await store.getWorker("nope")).toBeNull();
      expect(await store.heartbeat("w1", "idle", [], LEASE_MS)).toEqual({
        lost: [],
        control: null,
      });
      await expectConsistent(store, clock);
    });

    it("shutdown: a live worker is asked at its next heartbeat and may finish its tasks", async () => {
      const { store, clock } = await setup();
      await store.registerWorker(info("w1"));
      await store.submit(validateDefinition({ name: "s", tasks: [{ id: "a", handler: "work" }] }));
      const [a] = await claimWith(store, "w1", []);
      await store.heartbeat("w1", "busy", [{ taskId: a!.id, token: a!.leaseToken }], LEASE_MS);
      expect(await store.listLeases("w1")).toEqual([
        {
          taskId: a!.id,
          workstreamId: a!.workstreamId,
          key: "a",
          handler: "work",
          workerId: "w1",
          token: a!.leaseToken,
          expiresAt: clock.now() + LEASE_MS,
          attempt: 1,
        },
      ]);
      clock.advance(10);
      const done = await store.requestWorkerShutdown("w1", { reassign: false }, erin);
      const control = {
        action: "shutdown",
        reassign: false,
        actor: "erin",
        reason: "host maintenance",
        at: clock.now(),
      };
      expect(done).toMatchObject({ immediate: false, released: [], worker: { status: "busy" } });
      expect(done.worker.control).toEqual(control);
      const beat = await store.heartbeat(
        "w1",
        "busy",
        [{ taskId: a!.id, token: a!.leaseToken }],
        LEASE_MS,
      );
      expect(beat).toEqual({ lost: [], control });
      // Its running task is still its own: the outcome is applied.
      expect((await settle(store, "w1", [completed(a!)]))[0]).toMatchObject({ applied: true });
      await store.stopWorker("w1");
      expect(await eventsOf(store, "w1")).toEqual([
        "worker_registered",
        "worker_busy",
        "worker_shutdown_requested",
        "worker_shutdown",
      ]);
      const [iv] = await store.listInterventions();
      expect(iv).toMatchObject({
        actor: "erin",
        target: "worker:w1",
        reason: "host maintenance",
        before: { status: "busy", control: null, leases: 1 },
        after: { status: "busy", control, leases: 1 },
      });
      // Started again under the same id, the answered request is gone.
      await store.registerWorker(info("w1", { pid: 101 }));
      expect(await store.getWorker("w1")).toMatchObject({
        status: "idle",
        pid: 101,
        control: null,
      });
      await expectConsistent(store, clock);
    });

    it("shutdown --reassign: the tasks are requeued at once and the worker is fenced", async () => {
      const { store, clock } = await setup();
      await store.registerWorker(info("w1"));
      const { workstreamId } = await store.submit(
        validateDefinition({
          name: "r",
          tasks: [
            { id: "a", handler: "work" },
            { id: "b", handler: "work" },
          ],
        }),
      );
      const [a, b] = await claimWith(store, "w1", []);
      const held = [a!, b!].map((t) => ({ taskId: t.id, token: t.leaseToken }));
      const done = await store.requestWorkerShutdown("w1", { reassign: true }, erin);
      expect(done.immediate).toBe(false);
      expect(done.released.sort()).toEqual([a!.id, b!.id].sort());
      for (const t of await store.listTasks(workstreamId)) {
        // No attempt used, due now, no lease.
        expect(t).toMatchObject({
          status: "queued",
          attempts: 0,
          runAt: clock.now(),
          leaseToken: null,
          leaseWorker: null,
        });
        expect((await store.listTransitions({ entityId: t.id })).at(-1)).toMatchObject({
          event: "task_released",
          actor: "erin",
          detail: { worker: "w1" },
        });
      }
      expect(await store.listLeases("w1")).toEqual([]);
      // The worker hears it: both leases lost, and the request.
      const beat = await store.heartbeat("w1", "busy", held, LEASE_MS);
      expect(beat.lost.sort()).toEqual([a!.id, b!.id].sort());
      expect(beat.control).toMatchObject({ action: "shutdown", reassign: true });
      // Its outcomes are refused; another worker takes the tasks at once.
      expect(
        (await settle(store, "w1", [completed(a!), completed(b!)])).map((s) => s.applied),
      ).toEqual([false, false]);
      const again = await claimWith(store, "w2", []);
      expect(again.map((t) => t.attempts)).toEqual([1, 1]);
      expect(again.every((t) => t.leaseToken > Math.max(a!.leaseToken, b!.leaseToken))).toBe(true);
      await expectConsistent(store, clock);
    });

    it("shutdown of a worker that stopped heartbeating is immediate; shutting it down twice is refused", async () => {
      const { store, clock } = await setup();
      await store.registerWorker(info("dead"));
      await store.submit(validateDefinition({ name: "d", tasks: [{ id: "a", handler: "work" }] }));
      const [a] = await claimWith(store, "dead", [], 1);
      clock.advance(30_001);
      expect((await store.markSilentWorkers(30_000, 180_000)).map((w) => w.status)).toEqual([
        "unresponsive",
      ]);
      const done = await store.requestWorkerShutdown("dead", { reassign: false }, erin);
      expect(done).toMatchObject({
        immediate: true,
        released: [a!.id],
        worker: { status: "shutdown", control: { action: "shutdown", reassign: true } },
      });
      expect(await store.getTask(a!.id)).toMatchObject({ status: "queued", attempts: 0 });
      expect((await store.listTransitions({ entityId: "dead" })).at(-1)).toMatchObject({
        event: "worker_shutdown_forced",
        from: "unresponsive",
        to: "shutdown",
        actor: "erin",
      });
      const seq = await store.lastSeq();
      await expectRefused(store.requestWorkerShutdown("dead", { reassign: true }, erin));
      await expectRefused(
        store.requestWorkerShutdown("nope", { reassign: true }, erin),
        "not_found",
      );
      expect(await store.lastSeq()).toBe(seq);
      expect(await store.listInterventions()).toHaveLength(1);
      await expectConsistent(store, clock);
    });

    it("restart: only a supervised worker that heartbeats is asked; others are refused", async () => {
      const { store, clock } = await setup();
      await store.registerWorker(info("plain"));
      await store.registerWorker(info("sup", { supervised: true }));
      await store.registerWorker(info("gone", { supervised: true }));
      await store.stopWorker("gone");
      const seq = await store.lastSeq();
      const noSupervisor = await expectRefused(store.requestWorkerRestart("plain", erin));
      expect(noSupervisor.message).toContain("was not started with mend worker --supervise");
      expect((await expectRefused(store.requestWorkerRestart("gone", erin))).message).toContain(
        "is shutdown: it would not hear the request",
      );
      await expectRefused(store.requestWorkerRestart("nope", erin), "not_found");
      expect(await store.lastSeq()).toBe(seq);

      const after = await store.requestWorkerRestart("sup", erin);
      expect(after).toMatchObject({
        status: "idle",
        control: { action: "restart", reassign: false, actor: "erin" },
      });
      expect((await store.heartbeat("sup", "idle", [], LEASE_MS)).control).toMatchObject({
        action: "restart",
      });
      expect((await eventsOf(store, "sup")).at(-1)).toBe("worker_restart_requested");
      expect((await store.listInterventions()).map((i) => i.target)).toEqual(["worker:sup"]);
      await expectConsistent(store, clock);
    });
  });
}
