/**
 * The store conformance suite (DESIGN.md "Storage"): behaviour every `Store` implementation must
 * have, expressed through the `Store` interface alone on a fake clock. Each implementation's test
 * file calls {@link describeStoreConformance} with a factory for a fresh, empty store.
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { FakeClock } from "../../src/engine/clock.js";
import { MendError } from "../../src/errors.js";
import { validateDefinition } from "../../src/model/definition.js";
import type { ClaimedTask, Store } from "../../src/store/store.js";
import { DEFAULT_REVIVAL } from "../../src/recovery/revive.js";
import { spec, statusesByKey } from "../helpers/specs.js";
import { describeResourceConformance } from "./resources-suite.js";
import { describeWorkerConformance } from "./workers-suite.js";
import {
  byKey,
  claimAs,
  claimKey,
  completed,
  eventsOf,
  expectConsistent,
  expectRefused,
  failed,
  LEASE_MS,
  operator,
  planner,
  report,
  settle,
  wsStatus,
} from "./helpers.js";

/** Makes a fresh, empty store whose time is `clock`; `cleanup` closes and removes it. */
export type StoreFactory = (clock: FakeClock) => Promise<{
  store: Store;
  cleanup: () => Promise<void>;
}>;

const BREAKER = "search-api";
const OPEN_MS = 10_000;

/** `n` tasks of handler `search` behind the breaker (3 failures open it for 10 s, 2 probes). */
function guarded(name: string, n: number, maxAttempts = 10) {
  return validateDefinition({
    name,
    breakers: {
      [BREAKER]: { failureThreshold: 3, open: "10s", halfOpenMaxCalls: 2, successThreshold: 2 },
    },
    tasks: Array.from({ length: n }, (_, i) => ({
      id: `s${i + 1}`,
      handler: "search",
      breaker: BREAKER,
      retry: { maxAttempts, backoff: "constant", initial: "1s", jitter: "none" },
    })),
  });
}

async function breakerOf(store: Store) {
  return (await store.listBreakers()).find((b) => b.id === BREAKER);
}

export function describeStoreConformance(name: string, make: StoreFactory): void {
  async function setup(): Promise<{ store: Store; clock: FakeClock }> {
    const clock = new FakeClock();
    const { store, cleanup } = await make(clock);
    onTestFinished(cleanup);
    return { store, clock };
  }

  describe(`store conformance: ${name}`, () => {
    describeWorkerConformance(setup);
    describeResourceConformance(setup);

    describe("submit", () => {
      it("writes the workstream and its tasks: no deps → queued, deps → pending", async () => {
        const { store, clock } = await setup();
        const { workstreamId, taskIds } = await store.submit(
          spec(
            [
              { id: "a", input: { n: 1 } },
              { id: "b", deps: ["a"] },
              { id: "c", deps: ["a", "b"], priority: 3, critical: false },
            ],
            { name: "first", onFailure: "stop" },
          ),
          "tester",
        );
        expect(taskIds).toEqual(["a", "b", "c"].map((k) => `${workstreamId}/${k}`));
        const ws = await store.getWorkstream(workstreamId);
        expect(ws).toMatchObject({ name: "first", status: "active", onFailure: "stop" });
        expect(ws!.createdAt).toBe(clock.now());
        expect(await statusesByKey(store, workstreamId)).toEqual({
          a: "queued",
          b: "pending",
          c: "pending",
        });
        const c = (await byKey(store, workstreamId)).c!;
        expect(c).toMatchObject({
          priority: 3,
          critical: false,
          attempts: 0,
          deps: ["a", "b"],
          leaseToken: null,
        });
        expect((await byKey(store, workstreamId)).a!.input).toEqual({ n: 1 });
        expect((await store.countTasks()).get(workstreamId)).toEqual({ queued: 1, pending: 2 });
        const log = await store.listTransitions();
        expect(log.map((t) => t.event)).toEqual([
          "workstream_created",
          "task_created",
          "task_created",
          "task_created",
        ]);
        expect(log.every((t) => t.actor === "tester")).toBe(true);
        expect(await store.lastSeq()).toBe(log.at(-1)!.seq);
        await expectConsistent(store, clock);
      });

      it("is all or nothing: a submission the store cannot accept writes nothing", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "x" }], { name: "before" }));
        const seq = await store.lastSeq();
        const snap = await store.snapshot();
        const good = spec([{ id: "a" }, { id: "b", deps: ["a"] }], { name: "broken" });
        // Two tasks with the same id: only detectable once the first has been written.
        const broken = { ...good, tasks: [...good.tasks, good.tasks[0]!] };
        await expect(store.submit(broken)).rejects.toThrow();
        expect(await store.lastSeq()).toBe(seq);
        expect(await store.snapshot()).toEqual(snap);
        expect(await store.findWorkstreamsByName("broken")).toEqual([]);
        await expectConsistent(store, clock);
      });

      it("cycles are refused, naming the cycle, before anything reaches the store", async () => {
        const { store } = await setup();
        let err: unknown = null;
        try {
          spec([
            { id: "a", deps: ["c"] },
            { id: "b", deps: ["a"] },
            { id: "c", deps: ["b"] },
          ]);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(MendError);
        expect((err as Error).message).toMatch(/cycle/i);
        expect((err as Error).message).toMatch(/a.*b.*c|c.*b.*a/s);
        expect(await store.lastSeq()).toBe(0);
        expect(await store.listWorkstreams()).toEqual([]);
      });

      it("keeps several workstreams apart", async () => {
        const { store } = await setup();
        const one = await store.submit(spec([{ id: "a" }], { name: "one" }));
        const two = await store.submit(spec([{ id: "a" }], { name: "two" }));
        expect(one.workstreamId).not.toBe(two.workstreamId);
        expect((await store.listWorkstreams()).map((w) => w.name).sort()).toEqual(["one", "two"]);
        expect(await store.listTasks(one.workstreamId)).toHaveLength(1);
        expect((await store.findWorkstreamsByName("two"))[0]!.id).toBe(two.workstreamId);
      });
    });

    describe("claiming", () => {
      it("claims by priority, highest first; priority beats run_at", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "old" }]));
        clock.advance(10_000);
        await store.submit(
          spec([
            { id: "low", priority: 0 },
            { id: "high", priority: 5 },
            { id: "mid", priority: 1 },
          ]),
        );
        const order: string[] = [];
        for (let i = 0; i < 4; i++) order.push((await claimAs(store, "w1", ["work"], 1))[0]!.key);
        expect(order).toEqual(["high", "mid", "old", "low"]);
        expect(await claimAs(store, "w1", ["work"], 1)).toEqual([]);
        await expectConsistent(store, clock);
      });

      it("among equal priorities claims the earliest run_at first, and nothing not yet due", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b" }]));
        const a = await claimKey(store, "a");
        const [s] = await settle(store, "w1", [failed(a, "network")]);
        expect(s).toMatchObject({
          applied: true,
          status: "queued",
          decision: { action: "retry", delayMs: 1000 },
        });
        expect((await store.getTask(a.id))!.runAt).toBe(clock.now() + 1000);
        clock.advance(500);
        expect((await claimAs(store, "w1", ["work"], 5)).map((t) => t.key)).toEqual(["b"]);
        clock.advance(500);
        const again = await claimAs(store, "w1", ["work"], 5);
        expect(again.map((t) => [t.key, t.attempts])).toEqual([["a", 2]]);

        const later = await store.submit(spec([{ id: "x" }, { id: "y" }]));
        const x = await claimKey(store, "x");
        await settle(store, "w1", [failed(x, "network")]);
        clock.advance(5_000);
        expect((await claimAs(store, "w1", ["work"], 1))[0]!.key).toBe("y");
        expect((await claimAs(store, "w1", ["work"], 1))[0]!.key).toBe("x");
        expect(await statusesByKey(store, workstreamId)).toEqual({ a: "running", b: "running" });
        expect(await statusesByKey(store, later.workstreamId)).toEqual({
          x: "running",
          y: "running",
        });
        await expectConsistent(store, clock);
      });

      it("claims only tasks whose handler the worker has, with a lease and a fencing token", async () => {
        const { store, clock } = await setup();
        await store.submit(
          spec([
            { id: "a", handler: "alpha" },
            { id: "b", handler: "beta" },
          ]),
        );
        expect(await claimAs(store, "w1", ["gamma"], 5)).toEqual([]);
        const got = await claimAs(store, "w1", ["beta"], 5);
        expect(got.map((t) => t.key)).toEqual(["b"]);
        const t = (await store.getTask(got[0]!.id))!;
        expect(t).toMatchObject({
          status: "running",
          attempts: 1,
          leaseWorker: "w1",
          leaseToken: got[0]!.leaseToken,
          leaseExpiresAt: clock.now() + LEASE_MS,
        });
        // A later grant always carries a larger token.
        const a = await claimAs(store, "w2", ["alpha"], 1);
        expect(a[0]!.leaseToken).toBeGreaterThan(got[0]!.leaseToken);
        await expectConsistent(store, clock);
      });

      it("across a worker's handlers, claims in one order (priority, then run_at, then age), skipping others' tasks", async () => {
        const { store, clock } = await setup();
        await store.submit(
          spec([
            { id: "alpha-old", handler: "alpha" },
            { id: "gamma-urgent", handler: "gamma", priority: 9 },
            { id: "beta-old", handler: "beta" },
          ]),
        );
        clock.advance(1_000);
        await store.submit(
          spec([
            { id: "beta-high", handler: "beta", priority: 5 },
            { id: "alpha-high", handler: "alpha", priority: 5 },
            { id: "alpha-new", handler: "alpha" },
            { id: "gamma-new", handler: "gamma" },
          ]),
        );
        const first = await claimAs(store, "w1", ["alpha", "beta"], 3);
        expect(first.map((t) => t.key)).toEqual(["beta-high", "alpha-high", "alpha-old"]);
        const rest = await claimAs(store, "w1", ["beta", "alpha"], 5);
        expect(rest.map((t) => t.key)).toEqual(["beta-old", "alpha-new"]);
        expect((await claimAs(store, "w2", ["gamma"], 5)).map((t) => t.key)).toEqual([
          "gamma-urgent",
          "gamma-new",
        ]);
        await expectConsistent(store, clock);
      });

      it("dependencies gate claims: a dependent is queued only when all deps are completed or skipped", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([
            { id: "a" },
            { id: "s" },
            { id: "b", deps: ["a"] },
            { id: "c", deps: ["a"] },
            { id: "d", deps: ["b", "c", "s"] },
          ]),
        );
        await store.skipTask(`${workstreamId}/s`, operator);
        const a = await claimKey(store, "a");
        expect(await claimAs(store, "w1", ["work"], 5)).toEqual([]);
        await report(store, "w1", [completed(a)]);
        expect(await statusesByKey(store, workstreamId)).toMatchObject({
          b: "queued",
          c: "queued",
          d: "pending",
        });
        const [b, c] = await claimAs(store, "w1", ["work"], 2);
        await report(store, "w1", [completed(b!)]);
        expect((await statusesByKey(store, workstreamId)).d).toBe("pending");
        expect(await claimAs(store, "w1", ["work"], 5)).toEqual([]);
        await report(store, "w1", [completed(c!)]);
        expect(await eventsOf(store, `${workstreamId}/d`)).toEqual(["task_created", "task_ready"]);
        const d = await claimKey(store, "d");
        await report(store, "w1", [completed(d)]);
        expect(await wsStatus(store, workstreamId)).toBe("completed");
        await expectConsistent(store, clock);
      });
    });

    describe("exchange", () => {
      it("settles outcomes and claims in one round trip; what it settles can be claimed at once", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
        );
        const [a, c] = await claimAs(store, "w1", ["work"], 2);
        const r = await store.exchange({
          workerId: "w1",
          outcomes: [completed(a!), completed(c!)],
          claim: 5,
          leaseMs: LEASE_MS,
          handlers: ["work"],
          planner,
        });
        expect(r.settled).toEqual([
          { taskId: a!.id, applied: true, status: "completed" },
          { taskId: c!.id, applied: true, status: "completed" },
        ]);
        expect(r.claimed.map((t) => t.key)).toEqual(["b"]);
        expect(r.degradation).toMatchObject({ level: 0, name: "normal" });
        expect(await statusesByKey(store, workstreamId)).toEqual({
          a: "completed",
          b: "running",
          c: "completed",
        });
        await expectConsistent(store, clock);
      });

      it("a planner that throws rolls the whole exchange back", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "d", deps: ["a"] }]),
        );
        const [a, b] = await claimAs(store, "w1", ["work"], 2);
        const seq = await store.lastSeq();
        const snap = await store.snapshot();
        await expect(
          store.exchange({
            workerId: "w1",
            outcomes: [completed(a!), failed(b!, "network")],
            claim: 1,
            leaseMs: LEASE_MS,
            handlers: ["work"],
            planner: () => {
              throw new Error("planner exploded");
            },
          }),
        ).rejects.toThrow("planner exploded");
        expect(await store.lastSeq()).toBe(seq);
        expect(await store.snapshot()).toEqual(snap);
        expect(await statusesByKey(store, workstreamId)).toEqual({
          a: "running",
          b: "running",
          c: "queued",
          d: "pending",
        });
        const r = await store.exchange({
          workerId: "w1",
          outcomes: [completed(a!), failed(b!, "network")],
          claim: 1,
          leaseMs: LEASE_MS,
          handlers: ["work"],
          planner,
        });
        expect(r.settled.map((s) => s.applied)).toEqual([true, true]);
        expect(r.claimed).toHaveLength(1);
        const log = await store.listTransitions();
        expect(log.map((t) => t.seq)).toEqual(log.map((_, i) => i + 1));
        await expectConsistent(store, clock);
      });
    });

    describe("fencing", () => {
      it("refuses a stale token and another worker's outcome, writing nothing; accepts the holder's once", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "a", maxAttempts: 5 }]));
        const first = await claimKey(store, "a", "old");
        clock.advance(LEASE_MS + 1);
        const swept = await store.sweepExpiredLeases(planner);
        expect(swept).toEqual([
          {
            taskId: first.id,
            workerId: "old",
            decision: expect.objectContaining({ action: "retry" }),
          },
        ]);
        const second = await claimKey(store, "a", "new");
        expect(second.leaseToken).toBeGreaterThan(first.leaseToken);
        expect(second.attempts).toBe(2);

        const seq = await store.lastSeq();
        const refused = await settle(store, "old", [
          completed(first, "from old"),
          failed(first, "data_corruption"),
          { kind: "release", taskId: first.id, token: first.leaseToken, reason: "stale" },
        ]);
        expect(refused.map((s) => s.applied)).toEqual([false, false, false]);
        // The current token, but reported by a worker that does not hold the lease.
        const [other] = await settle(store, "intruder", [completed(second, "from intruder")]);
        expect(other).toMatchObject({ taskId: second.id, applied: false });
        expect(await store.lastSeq()).toBe(seq);
        expect(await store.getTask(first.id)).toMatchObject({
          status: "running",
          leaseWorker: "new",
          leaseToken: second.leaseToken,
        });

        await report(store, "new", [completed(second, "from new")]);
        expect((await store.getTask(first.id))!.output).toBe("from new");
        // Completion once: the same outcome again is refused.
        expect((await settle(store, "new", [completed(second, "twice")]))[0]!.applied).toBe(false);
        expect((await store.countEvents("task_recovered")).get(first.id)).toBe(1);
        expect((await store.countEvents("task_completed")).get(first.id)).toBeUndefined();
        await expectConsistent(store, clock);
      });

      it("settles a batch outcome by outcome: stale tokens, repeats and others' leases refused, a quality failure judged", async () => {
        const { store, clock } = await setup();
        // Another worker's task first, so that w1 claims the batch's four.
        const { workstreamId: other } = await store.submit(spec([{ id: "x" }], { name: "other" }));
        const d = await claimKey(store, "x", "w2");
        const { workstreamId: ws } = await store.submit(
          validateDefinition({
            name: "batch",
            tasks: [
              ...["a", "b", "c"].map((id) => ({ id, handler: "work" })),
              { id: "p", handler: "work", qualityThreshold: 0.6, retry: { maxAttempts: 1 } },
            ],
          }),
        );
        const [a, b, c, q] = await claimAs(store, "w1", ["work"], 4);
        const seq = await store.lastSeq();
        const outcomes = [
          { ...completed(a!, "stale"), token: a!.leaseToken - 1 },
          completed(b!, "b first"),
          completed(b!, "b again"),
          completed(d, "not w1's"),
          completed(c!, "c"),
        ];
        // Plain completions, then the same with one that needs judging (its quality is low).
        expect((await settle(store, "w1", outcomes)).map((s) => s.applied)).toEqual([
          false,
          true,
          false,
          false,
          true,
        ]);
        const [low] = await settle(store, "w1", [
          completed(a!, "a"),
          { kind: "complete", taskId: q!.id, token: q!.leaseToken, output: "q", quality: 0.4 },
        ]).then((r) => r.slice(1));
        expect(low).toMatchObject({ applied: true, status: "failed" });
        const tasks = await byKey(store, ws);
        expect(tasks.a).toMatchObject({ status: "completed", output: "a" });
        expect(tasks.b).toMatchObject({ status: "completed", output: "b first" });
        expect(tasks.c).toMatchObject({ status: "completed", output: "c" });
        expect((await byKey(store, other)).x).toMatchObject({
          status: "running",
          leaseWorker: "w2",
        });
        expect(tasks.p).toMatchObject({ status: "failed" });
        // Recorded: three completions and the quality failure, nothing for the refusals.
        const events = (await store.listTransitions({ afterSeq: seq })).map(
          (t) => `${t.entityId.split("/")[1]}:${t.event}`,
        );
        expect(events.filter((e) => e.endsWith("task_completed")).sort()).toEqual([
          "a:task_completed",
          "b:task_completed",
          "c:task_completed",
        ]);
        expect(events).toContain("p:task_failed");
        await expectConsistent(store, clock);
      });

      it("heartbeat renews only the caller's own leases and reports the lost ones", async () => {
        const { store, clock } = await setup();
        for (const id of ["old", "new"]) {
          await store.registerWorker({ id, host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
        }
        const { workstreamId } = await store.submit(spec([{ id: "a" }, { id: "b" }, { id: "c" }]));
        const a = await claimKey(store, "a", "old");
        const b = await claimKey(store, "b", "old");
        const c = await claimKey(store, "c", "new");
        await store.heartbeat("old", "busy", [], LEASE_MS);
        const seq = await store.lastSeq();
        clock.advance(LEASE_MS - 100);
        const ok = await store.heartbeat(
          "old",
          "busy",
          [
            { taskId: a.id, token: a.leaseToken },
            { taskId: b.id, token: b.leaseToken },
          ],
          LEASE_MS,
        );
        expect(ok.lost).toEqual([]);
        // Liveness, not state: a renewal appends nothing.
        expect(await store.lastSeq()).toBe(seq);
        expect((await store.getTask(a.id))!.leaseExpiresAt).toBe(clock.now() + LEASE_MS);
        // Another worker's lease, with its right token, is not renewed by "old".
        const cExpiry = (await store.getTask(c.id))!.leaseExpiresAt;
        const foreign = await store.heartbeat(
          "old",
          "busy",
          [{ taskId: c.id, token: c.leaseToken }],
          LEASE_MS,
        );
        expect(foreign.lost).toEqual([c.id]);
        expect((await store.getTask(c.id))!.leaseExpiresAt).toBe(cExpiry);
        // c was not renewed by its holder: it expires, a and b do not.
        clock.advance(200);
        expect((await store.sweepExpiredLeases(planner)).map((s) => s.taskId)).toEqual([c.id]);
        // A wrong token and a cancelled task are lost too.
        await store.cancelTask(b.id, operator);
        const hb = await store.heartbeat(
          "old",
          "busy",
          [
            { taskId: a.id, token: a.leaseToken + 1000 },
            { taskId: b.id, token: b.leaseToken },
          ],
          LEASE_MS,
        );
        expect(hb.lost.sort()).toEqual([a.id, b.id].sort());
        expect((await byKey(store, workstreamId)).b!.status).toBe("cancelled");
        await expectConsistent(store, clock);
      });
    });

    describe("lease expiry", () => {
      it("a sweep requeues expired leases as worker_lost, at once, and quarantines after 3 in a row", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(spec([{ id: "a", maxAttempts: 10 }]));
        const actions: string[] = [];
        for (let i = 0; i < 3; i++) {
          const t = await claimKey(store, "a", `w${i}`);
          expect(t.attempts).toBe(i + 1);
          clock.advance(LEASE_MS);
          expect(await store.sweepExpiredLeases(planner)).toEqual([]); // not yet expired
          clock.advance(1);
          const swept = await store.sweepExpiredLeases(planner);
          expect(swept.map((s) => [s.taskId, s.workerId])).toEqual([[t.id, `w${i}`]]);
          actions.push(swept[0]!.decision.action);
          if (i < 2) {
            expect(await store.getTask(t.id)).toMatchObject({
              status: "queued",
              leaseToken: null,
              leaseWorker: null,
              workerLostStreak: i + 1,
              runAt: clock.now(),
            });
            const lost = (await store.listTransitions({ entityId: t.id })).at(-1)!;
            expect(lost).toMatchObject({ event: "worker_lost", from: "running", to: "queued" });
            expect(lost.detail).toMatchObject({ failure: { category: "worker_lost" } });
          }
        }
        expect(actions).toEqual(["retry", "retry", "quarantine"]);
        const task = (await byKey(store, workstreamId)).a!;
        expect(task.status).toBe("failed");
        expect((await eventsOf(store, task.id)).at(-1)).toBe("task_quarantined");
        expect(await store.sweepExpiredLeases(planner)).toEqual([]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        await expectConsistent(store, clock);
      });

      it("retries honour run_at and stop when attempts run out", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(spec([{ id: "a", maxAttempts: 2 }]));
        let a = await claimKey(store, "a");
        await report(store, "w1", [failed(a, "network")]);
        clock.advance(999);
        expect(await claimAs(store, "w1", ["work"], 1)).toEqual([]);
        clock.advance(1);
        a = await claimKey(store, "a");
        expect(a.attempts).toBe(2);
        const [s] = await report(store, "w1", [failed(a, "network")]);
        expect(s).toMatchObject({ status: "failed", decision: { action: "fail" } });
        expect(await eventsOf(store, a.id)).toEqual([
          "task_created",
          "task_started",
          "task_retry_scheduled",
          "task_started",
          "task_failed",
        ]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        await expectConsistent(store, clock);
      });
    });

    describe("operator actions", () => {
      it("retry queues a failed task with a fresh budget, reopens the workstream, and is an intervention", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([
            { id: "a", maxAttempts: 1 },
            { id: "b", deps: ["a"] },
          ]),
        );
        const a = await claimKey(store, "a");
        await report(store, "w1", [failed(a, "logic")]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        const after = await store.retryTask(a.id, { timeoutMs: 1234 }, operator);
        expect(after).toMatchObject({ status: "queued", attempts: 1, timeoutMs: 1234 });
        expect(after.retry.maxAttempts).toBe(2);
        expect(await wsStatus(store, workstreamId)).toBe("active");
        expect(await eventsOf(store, workstreamId)).toEqual([
          "workstream_created",
          "workstream_failed",
          "workstream_reopened",
        ]);
        const [iv] = await store.listInterventions();
        expect(iv).toMatchObject({
          actor: "alice",
          command: "mend test",
          target: a.id,
          reason: "testing",
          before: { status: "failed" },
          after: { status: "queued" },
        });
        await report(store, "w1", [completed(await claimKey(store, "a"))]);
        await report(store, "w1", [completed(await claimKey(store, "b"))]);
        expect(await wsStatus(store, workstreamId)).toBe("completed");
        expect(await eventsOf(store, a.id)).toContain("task_recovered");
        await expectConsistent(store, clock);
      });

      it("skip and cancel are logged with actor and reason; cancelling a running task fences its worker", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
        );
        const id = (k: string) => `${workstreamId}/${k}`;
        expect((await store.skipTask(id("b"), { ...operator, reason: "not needed" })).status).toBe(
          "skipped",
        );
        const a = await claimKey(store, "a");
        clock.advance(1);
        const cancelled = await store.cancelTask(a.id, {
          actor: "bob",
          reason: null,
          command: "mend cancel",
        });
        expect(cancelled).toMatchObject({
          status: "cancelled",
          leaseToken: null,
          leaseWorker: null,
        });
        expect((await settle(store, "w1", [completed(a)]))[0]).toMatchObject({ applied: false });
        expect(
          (await store.listInterventions()).map((i) => [
            i.actor,
            i.target,
            i.reason,
            (i.after as { status: string }).status,
          ]),
        ).toEqual([
          ["alice", id("b"), "not needed", "skipped"],
          ["bob", id("a"), null, "cancelled"],
        ]);
        expect((await store.listTransitions({ entityId: id("b") })).at(-1)).toMatchObject({
          event: "task_skipped",
          actor: "alice",
        });
        // c still runs; a cancelled task does not satisfy: the workstream ends failed.
        await report(store, "w1", [completed(await claimKey(store, "c"))]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        await expectConsistent(store, clock);
      });

      it("refuses actions the task's state does not allow, writing nothing", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(spec([{ id: "done" }, { id: "run" }]));
        const id = (k: string) => `${workstreamId}/${k}`;
        await report(store, "w1", [completed(await claimKey(store, "done"))]);
        await claimKey(store, "run");
        const seq = await store.lastSeq();
        await expectRefused(store.retryTask(id("done"), {}, operator));
        await expectRefused(store.retryTask(id("run"), {}, operator));
        await expectRefused(store.skipTask(id("done"), operator));
        await expectRefused(store.skipTask(id("run"), operator));
        await expectRefused(store.cancelTask(id("done"), operator));
        await expectRefused(store.retryTask(id("nope"), {}, operator), "not_found");
        await expectRefused(store.skipTask(id("nope"), operator), "not_found");
        await expectRefused(store.cancelTask(id("nope"), operator), "not_found");
        expect(await store.lastSeq()).toBe(seq);
        expect(await store.listInterventions()).toEqual([]);
        await expectConsistent(store, clock);
      });
    });

    describe("workstream status", () => {
      it("a critical failure leaves dependents pending; the workstream fails once nothing runs", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
        );
        const [a, c] = await claimAs(store, "w1", ["work"], 2);
        await report(store, "w1", [failed(a!, "logic")]);
        expect(await wsStatus(store, workstreamId)).toBe("active");
        await report(store, "w1", [completed(c!)]);
        expect(await statusesByKey(store, workstreamId)).toEqual({
          a: "failed",
          b: "pending",
          c: "completed",
        });
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        expect((await store.listTransitions({ entityId: workstreamId })).at(-1)).toMatchObject({
          event: "workstream_failed",
          severity: "error",
        });
        // Skipping what failed leaves nothing that could fail it: it completes.
        await store.skipTask(a!.id, operator);
        await report(store, "w1", [completed(await claimKey(store, "b"))]);
        expect(await wsStatus(store, workstreamId)).toBe("completed");
        await expectConsistent(store, clock);
      });

      it("a non-critical failure satisfies its dependents", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec([
            { id: "a", critical: false },
            { id: "b", deps: ["a"] },
          ]),
        );
        const a = await claimKey(store, "a");
        await report(store, "w1", [failed(a, "logic")]);
        expect((await store.listTransitions({ entityId: a.id })).at(-1)).toMatchObject({
          event: "task_failed_noncritical",
          severity: "warning",
        });
        await report(store, "w1", [completed(await claimKey(store, "b"))]);
        expect(await wsStatus(store, workstreamId)).toBe("completed");
        await expectConsistent(store, clock);
      });

      it("onFailure: stop cancels the open tasks; running ones finish, then the workstream fails", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          spec(
            [
              { id: "a", priority: 2 },
              { id: "r", priority: 1 },
              { id: "b", deps: ["a"] },
              { id: "q" },
            ],
            { onFailure: "stop" },
          ),
        );
        const [a, r] = await claimAs(store, "w1", ["work"], 2);
        expect([a!.key, r!.key]).toEqual(["a", "r"]);
        await report(store, "w1", [failed(a!, "logic")]);
        expect(await statusesByKey(store, workstreamId)).toEqual({
          a: "failed",
          r: "running",
          b: "cancelled",
          q: "cancelled",
        });
        expect(await wsStatus(store, workstreamId)).toBe("active");
        expect(await claimAs(store, "w1", ["work"], 5)).toEqual([]);
        await report(store, "w1", [completed(r!)]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        await expectConsistent(store, clock);
      });
    });

    describe("leadership", () => {
      it("acquires, renews, refuses others while held, and is stolen after expiry", async () => {
        const { store, clock } = await setup();
        expect(await store.acquireLeadership("monitor", "a", 1_000)).toBe(true);
        expect(await store.acquireLeadership("monitor", "b", 1_000)).toBe(false);
        expect(await store.acquireLeadership("other", "b", 1_000)).toBe(true);
        clock.advance(600);
        expect(await store.acquireLeadership("monitor", "a", 1_000)).toBe(true); // renewed
        clock.advance(600); // past the first expiry, within the renewed one
        expect(await store.acquireLeadership("monitor", "b", 1_000)).toBe(false);
        clock.advance(401);
        expect(await store.acquireLeadership("monitor", "b", 1_000)).toBe(true); // stolen
        expect(await store.acquireLeadership("monitor", "a", 1_000)).toBe(false);
        await store.releaseLeadership("monitor", "a"); // not the holder: no effect
        expect(await store.acquireLeadership("monitor", "a", 1_000)).toBe(false);
        await store.releaseLeadership("monitor", "b");
        expect(await store.acquireLeadership("monitor", "a", 1_000)).toBe(true);
      });
    });

    describe("breakers", () => {
      it("counted failures open a breaker that gates claims for every worker until its open time is up", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(guarded("research", 5));
        expect(await breakerOf(store)).toMatchObject({ status: "closed", forced: false });
        const [s1, s2, s3] = await claimAs(store, "w1", ["search"], 3);
        await report(store, "w1", [failed(s1!, "network"), failed(s2!, "external_service")]);
        expect(await breakerOf(store)).toMatchObject({ status: "closed", failures: 2 });
        await report(store, "w1", [failed(s3!, "network")]);
        expect(await breakerOf(store)).toMatchObject({
          status: "open",
          openedAt: clock.now(),
          openUntil: clock.now() + OPEN_MS,
        });
        expect(await eventsOf(store, BREAKER)).toEqual(["breaker_created", "breaker_opened"]);
        const before = await byKey(store, workstreamId);
        clock.advance(OPEN_MS - 1);
        expect(await claimAs(store, "w1", ["search"], 10)).toEqual([]);
        expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);
        expect(await store.advanceBreakers()).toEqual([]);
        const after = await byKey(store, workstreamId);
        for (const k of Object.keys(before)) expect(after[k]!.attempts).toBe(before[k]!.attempts);
        clock.advance(1);
        expect((await store.advanceBreakers()).map((b) => [b.id, b.status])).toEqual([
          [BREAKER, "half_open"],
        ]);
        await expectConsistent(store, clock);
      });

      it("half-open lets at most halfOpenMaxCalls probes run; a failure reopens it, successes close it", async () => {
        const { store, clock } = await setup();
        await store.submit(guarded("research", 6));
        await store.controlBreaker(BREAKER, "open", operator);
        expect(await claimAs(store, "w1", ["search"], 10)).toEqual([]);
        await store.controlBreaker(BREAKER, "reset", operator);
        // Open through failures, then let the open time pass.
        const first = await claimAs(store, "w1", ["search"], 3);
        await report(
          store,
          "w1",
          first.map((t) => failed(t, "network")),
        );
        expect((await breakerOf(store))!.status).toBe("open");
        clock.advance(OPEN_MS);
        const probes = await claimAs(store, "w1", ["search"], 10);
        expect(probes).toHaveLength(2);
        expect((await breakerOf(store))!.status).toBe("half_open");
        expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);
        await report(store, "w1", [failed(probes[0]!, "external_service")]);
        expect(await breakerOf(store)).toMatchObject({
          status: "open",
          openUntil: clock.now() + OPEN_MS,
        });
        await report(store, "w1", [completed(probes[1]!)]);
        expect((await breakerOf(store))!.status).toBe("open");
        clock.advance(OPEN_MS);
        const second = await claimAs(store, "w2", ["search"], 5);
        expect(second).toHaveLength(2);
        await report(store, "w2", [completed(second[0]!)]);
        expect(await breakerOf(store)).toMatchObject({ status: "half_open", successes: 1 });
        // A finished probe frees one slot.
        expect(await claimAs(store, "w1", ["search"], 5)).toHaveLength(1);
        expect(await claimAs(store, "w1", ["search"], 5)).toEqual([]);
        await report(store, "w2", [completed(second[1]!)]);
        expect(await breakerOf(store)).toMatchObject({
          status: "closed",
          failures: 0,
          successes: 0,
        });
        expect((await store.listInterventions()).map((i) => i.target)).toEqual([
          `breaker:${BREAKER}`,
          `breaker:${BREAKER}`,
        ]);
        await expectConsistent(store, clock);
      });

      it("revives failed tasks once probes closed their breaker; the workstream reopens and completes", async () => {
        const { store, clock } = await setup();
        const { workstreamId, taskIds } = await store.submit(guarded("outage", 3, 1));
        const claimed = await claimAs(store, "w1", ["search"], 3);
        await report(
          store,
          "w1",
          claimed.map((t) => failed(t, "network")),
        );
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        expect((await breakerOf(store))!.status).toBe("open");
        clock.advance(OPEN_MS * 2);
        // Open (nobody probed): nothing to revive.
        expect(await store.reviveTasks(DEFAULT_REVIVAL)).toEqual([]);
        await store.submit(guarded("probes", 2, 3));
        const probes = await claimAs(store, "w2", ["search"], 5);
        expect(probes).toHaveLength(2);
        expect(await store.reviveTasks(DEFAULT_REVIVAL)).toEqual([]); // half-open
        await report(
          store,
          "w2",
          probes.map((t) => completed(t)),
        );
        expect((await breakerOf(store))!.status).toBe("closed");
        clock.advance(1);
        const revived = await store.reviveTasks(DEFAULT_REVIVAL);
        expect(revived.map((r) => r.taskId).sort()).toEqual([...taskIds].sort());
        expect(revived[0]).toMatchObject({
          workstreamId,
          cause: `breaker ${BREAKER} closed again`,
          revival: 1,
        });
        for (const t of await store.listTasks(workstreamId)) {
          expect(t).toMatchObject({ status: "queued", revivals: 1 });
          expect((await eventsOf(store, t.id)).at(-1)).toBe("task_revived");
        }
        expect(await wsStatus(store, workstreamId)).toBe("active");
        expect(await store.reviveTasks(DEFAULT_REVIVAL)).toEqual([]);
        const again = await claimAs(store, "w1", ["search"], 5);
        await report(
          store,
          "w1",
          again.map((t) => completed(t)),
        );
        expect(await wsStatus(store, workstreamId)).toBe("completed");
        await expectConsistent(store, clock);
      });
    });

    describe("deadlines", () => {
      it("expireDeadlines fails a queued task whose deadline passed while a breaker held it", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          validateDefinition({
            name: "held",
            tasks: [
              { id: "held", handler: "work", breaker: BREAKER, deadline: "10s" },
              { id: "patient", handler: "work", breaker: BREAKER },
            ],
          }),
        );
        await store.controlBreaker(BREAKER, "open", operator);
        expect(await claimAs(store, "w", ["work"], 5)).toEqual([]);
        clock.advance(9_999);
        expect(await store.expireDeadlines()).toEqual([]);
        clock.advance(1);
        const held = (await byKey(store, workstreamId)).held!;
        expect(await store.expireDeadlines()).toEqual([held.id]);
        expect(await store.expireDeadlines()).toEqual([]);
        const after = (await byKey(store, workstreamId)).held!;
        expect(after).toMatchObject({ status: "failed", attempts: 0, leaseToken: null });
        expect(after.lastError).toMatchObject({ category: "timeout", recoverable: false });
        expect((await store.listTransitions({ entityId: held.id })).at(-1)).toMatchObject({
          event: "task_failed",
          from: "queued",
          to: "failed",
        });
        await store.controlBreaker(BREAKER, "close", operator);
        await report(store, "w", [completed(await claimKey(store, "patient", "w"))]);
        expect(await wsStatus(store, workstreamId)).toBe("failed");
        await expectConsistent(store, clock);
      });
    });

    describe("stalls", () => {
      const STALL_MS = 30 * 60_000;
      /** Long enough that no lease expires while a test moves the clock by hours. */
      const LONG_LEASE_MS = 24 * 3_600_000;

      async function startAll(store: Store, n = 1) {
        await store.registerWorker({
          id: "w1",
          host: "h",
          pid: 1,
          concurrency: 10,
          handlers: ["work"],
        });
        return claimAs(store, "w1", ["work"], n, LONG_LEASE_MS);
      }

      function beat(store: Store, t: ClaimedTask, progressed?: boolean) {
        const lease = { taskId: t.id, token: t.leaseToken, ...(progressed ? { progressed } : {}) };
        return store.heartbeat("w1", "busy", [lease], LONG_LEASE_MS);
      }

      it("a running task without progress past the threshold is reported once, as task_stalled", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "a" }]));
        const [a] = await startAll(store);
        // Bare heartbeats prove liveness, not progress.
        clock.advance(STALL_MS / 2);
        expect((await beat(store, a!)).lost).toEqual([]);
        clock.advance(STALL_MS / 2 - 1);
        await beat(store, a!);
        expect(await store.detectStalls(STALL_MS)).toEqual([]);
        clock.advance(1);
        expect(await store.detectStalls(STALL_MS)).toEqual([
          {
            taskId: a!.id,
            workstreamId: a!.workstreamId,
            workerId: "w1",
            attempt: 1,
            stallAfterMs: STALL_MS,
            status: "stalled",
            silentForMs: STALL_MS,
          },
        ]);
        expect(await store.getTask(a!.id)).toMatchObject({
          status: "running",
          stalledAt: clock.now(),
          leaseWorker: "w1",
        });
        const [record] = await store.listTransitions({ entityId: a!.id, newestFirst: true });
        expect(record).toMatchObject({
          event: "task_stalled",
          severity: "warning",
          from: "running",
          to: "running",
          actor: "monitor",
          data: { stalledAt: clock.now() },
          detail: { attempt: 1, worker: "w1", silentForMs: STALL_MS, stallAfterMs: STALL_MS },
        });
        // Once: still silent, but already reported.
        clock.advance(STALL_MS * 3);
        expect(await store.detectStalls(STALL_MS)).toEqual([]);
        expect(await eventsOf(store, a!.id)).toEqual([
          "task_created",
          "task_started",
          "task_stalled",
        ]);
        await expectConsistent(store, clock);
      });

      it("progress resets the silence; progress after a stall is recorded as task_progressing", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "a" }]));
        const [a] = await startAll(store);
        clock.advance(20 * 60_000);
        await beat(store, a!, true);
        clock.advance(20 * 60_000);
        expect(await store.detectStalls(STALL_MS)).toEqual([]);
        clock.advance(10 * 60_000);
        const [stall] = await store.detectStalls(STALL_MS);
        expect(stall).toMatchObject({ status: "stalled", silentForMs: STALL_MS });
        const stalledAt = clock.now();

        clock.advance(60_000);
        await beat(store, a!, true);
        expect((await store.getTask(a!.id))!.stalledAt).toBe(stalledAt);
        expect(await store.detectStalls(STALL_MS)).toEqual([
          {
            taskId: a!.id,
            workstreamId: a!.workstreamId,
            workerId: "w1",
            attempt: 1,
            stallAfterMs: STALL_MS,
            status: "progressing",
            stalledForMs: 60_000,
          },
        ]);
        expect((await store.getTask(a!.id))!.stalledAt).toBeNull();
        const [record] = await store.listTransitions({ entityId: a!.id, newestFirst: true });
        expect(record).toMatchObject({
          event: "task_progressing",
          severity: "info",
          from: "running",
          to: "running",
          data: { stalledAt: null },
        });
        expect(await store.detectStalls(STALL_MS)).toEqual([]);

        // A new silence is a new stall.
        clock.advance(STALL_MS);
        expect(await store.detectStalls(STALL_MS)).toMatchObject([{ status: "stalled" }]);
        expect(await eventsOf(store, a!.id)).toEqual([
          "task_created",
          "task_started",
          "task_stalled",
          "task_progressing",
          "task_stalled",
        ]);
        await expectConsistent(store, clock);
      });

      it("a task's own stallAfter beats the default", async () => {
        const { store, clock } = await setup();
        const { workstreamId } = await store.submit(
          validateDefinition({
            name: "thresholds",
            tasks: [
              { id: "quick", handler: "work", stallAfter: "1m" },
              { id: "patient", handler: "work", stallAfter: "2h" },
              { id: "plain", handler: "work" },
            ],
          }),
        );
        const tasks = await byKey(store, workstreamId);
        expect(tasks.quick!.stallAfterMs).toBe(60_000);
        expect(tasks.patient!.stallAfterMs).toBe(7_200_000);
        expect(tasks.plain!.stallAfterMs).toBeNull();
        await startAll(store, 3);
        const defaultMs = 10 * 60_000;
        const stalled = async () =>
          (await store.detectStalls(defaultMs)).map(
            (s) => `${s.taskId.split("/")[1]}:${s.stallAfterMs}`,
          );
        clock.advance(60_000);
        expect(await stalled()).toEqual(["quick:60000"]);
        clock.advance(8 * 60_000);
        expect(await stalled()).toEqual([]);
        clock.advance(60_000);
        expect(await stalled()).toEqual(["plain:600000"]);
        clock.advance(110 * 60_000 - 1);
        expect(await stalled()).toEqual([]);
        clock.advance(1);
        expect(await stalled()).toEqual(["patient:7200000"]);
        await expectConsistent(store, clock);
      });

      it("an attempt's end clears its stall, and a new attempt can stall again", async () => {
        const { store, clock } = await setup();
        await store.submit(spec([{ id: "a", maxAttempts: 3 }]));
        const [first] = await startAll(store);
        clock.advance(STALL_MS);
        expect(await store.detectStalls(STALL_MS)).toMatchObject([{ attempt: 1 }]);
        await report(store, "w1", [failed(first!, "network")]);
        expect(await store.getTask(first!.id)).toMatchObject({
          status: "queued",
          stalledAt: null,
          progressAt: null,
        });
        clock.advance(1_000);
        const [second] = await claimAs(store, "w1", ["work"], 1, LONG_LEASE_MS);
        expect(second!.attempts).toBe(2);
        // Silence counts from the new attempt's start.
        clock.advance(STALL_MS - 1);
        expect(await store.detectStalls(STALL_MS)).toEqual([]);
        clock.advance(1);
        expect(await store.detectStalls(STALL_MS)).toMatchObject([
          { status: "stalled", attempt: 2, silentForMs: STALL_MS },
        ]);
        await report(store, "w1", [completed(second!)]);
        expect(await store.getTask(first!.id)).toMatchObject({
          status: "completed",
          stalledAt: null,
        });
        expect(await store.detectStalls(STALL_MS)).toEqual([]);
        await expectConsistent(store, clock);
      });
    });
  });
}
