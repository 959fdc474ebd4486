/**
 * Model-based property test of the store: random operations (submits of small DAGs, worker
 * exchanges with random outcomes, clock jumps, lease sweeps, silent worker crashes, operator
 * actions, planner crashes inside transactions, process crashes = close and reopen the file),
 * checking after every step that what the store says agrees with the invariants of DESIGN.md.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import { FAILURE_CATEGORIES, type FailureCategory } from "../src/model/failure.js";
import type { TaskStatus } from "../src/model/states.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { FailurePlanner, HeldLease, Outcome } from "../src/store/store.js";
import { completionsPerTask, spec } from "./helpers/specs.js";

const LEASE_MS = 1_000;
const WORKERS = ["w0", "w1", "w2"];
const planner = createPlanner({ random: () => 0.5 });
const crashingPlanner: FailurePlanner = () => {
  throw new Error("simulated crash inside the transaction");
};

// ------------------------------------------------------------------ operations

interface TaskGen {
  depsMask: number;
  critical: boolean;
  priority: number;
  maxAttempts: number;
}
interface OutcomeGen {
  pick: number;
  kind: "complete" | "fail" | "release";
  category: FailureCategory;
  recoverable: boolean;
}
type Op =
  | { k: "submit"; tasks: TaskGen[]; stop: boolean }
  | { k: "exchange"; worker: number; claim: number; outcomes: OutcomeGen[]; crash: boolean }
  | { k: "advance"; ms: number }
  | { k: "sweep"; crash: boolean }
  | { k: "heartbeat"; worker: number }
  | { k: "workerCrash"; worker: number }
  | { k: "operator"; action: "retry" | "skip" | "cancel"; pick: number }
  | { k: "reopen" };

const submitArb = fc.record({
  k: fc.constant("submit" as const),
  tasks: fc.array(
    fc.record({
      depsMask: fc.nat({ max: 31 }),
      critical: fc.boolean(),
      priority: fc.integer({ min: 0, max: 2 }),
      maxAttempts: fc.integer({ min: 1, max: 3 }),
    }),
    { minLength: 1, maxLength: 5 },
  ),
  stop: fc.boolean(),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: submitArb, weight: 2 },
  {
    arbitrary: fc.record({
      k: fc.constant("exchange" as const),
      worker: fc.nat({ max: WORKERS.length - 1 }),
      claim: fc.integer({ min: 0, max: 3 }),
      outcomes: fc.array(
        fc.record({
          pick: fc.nat(),
          kind: fc.constantFrom(
            "complete" as const,
            "complete" as const,
            "complete" as const,
            "fail" as const,
            "fail" as const,
            "release" as const,
          ),
          category: fc.constantFrom(...FAILURE_CATEGORIES),
          recoverable: fc.boolean(),
        }),
        { minLength: 1, maxLength: 3 },
      ),
      crash: fc.constantFrom(false, false, false, true),
    }),
    weight: 8,
  },
  {
    arbitrary: fc.record({ k: fc.constant("advance" as const), ms: fc.nat({ max: 3000 }) }),
    weight: 3,
  },
  { arbitrary: fc.record({ k: fc.constant("sweep" as const), crash: fc.boolean() }), weight: 2 },
  {
    arbitrary: fc.record({
      k: fc.constant("heartbeat" as const),
      worker: fc.nat({ max: WORKERS.length - 1 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("workerCrash" as const),
      worker: fc.nat({ max: WORKERS.length - 1 }),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("operator" as const),
      action: fc.constantFrom("retry" as const, "skip" as const, "cancel" as const),
      pick: fc.nat(),
    }),
    weight: 3,
  },
  { arbitrary: fc.constant({ k: "reopen" as const }), weight: 1 },
);

// ------------------------------------------------------------------ the run

const ALLOWED: Record<"retry" | "skip" | "cancel", TaskStatus[]> = {
  retry: ["failed", "cancelled", "skipped"],
  skip: ["pending", "queued", "failed", "cancelled"],
  cancel: ["pending", "queued", "running"],
};

class Run {
  readonly dir = mkdtempSync(join(tmpdir(), "mend-prop-"));
  readonly path = join(this.dir, "mend.db");
  readonly clock = new FakeClock();
  store = new SqliteStore(this.path, { clock: this.clock });
  /** What each worker believes it holds (may be stale: that is the point). */
  readonly held = new Map<string, HeldLease[]>(WORKERS.map((w) => [w, []]));
  readonly taskIds: string[] = [];
  readonly workstreams: string[] = [];

  async start(): Promise<void> {
    for (const id of WORKERS) {
      await this.store.registerWorker({
        id,
        host: "h",
        pid: 1,
        concurrency: 3,
        handlers: ["work"],
      });
    }
  }

  async apply(op: Op): Promise<void> {
    const s = this.store;
    switch (op.k) {
      case "submit": {
        const tasks = op.tasks.map((t, i) => ({
          id: `t${i}`,
          deps: Array.from({ length: i }, (_, j) => j)
            .filter((j) => (t.depsMask >> j) & 1)
            .map((j) => `t${j}`),
          critical: t.critical,
          priority: t.priority,
          maxAttempts: t.maxAttempts,
        }));
        const r = await s.submit(spec(tasks, { onFailure: op.stop ? "stop" : "continue" }));
        this.workstreams.push(r.workstreamId);
        this.taskIds.push(...r.taskIds);
        return;
      }
      case "exchange": {
        const worker = WORKERS[op.worker]!;
        const held = this.held.get(worker)!;
        const outcomes: Outcome[] = [];
        const used = new Set<string>();
        for (const o of op.outcomes) {
          if (held.length === 0) break;
          const lease = held[o.pick % held.length]!;
          if (used.has(lease.taskId)) continue;
          used.add(lease.taskId);
          const base = { taskId: lease.taskId, token: lease.token };
          outcomes.push(
            o.kind === "complete"
              ? { ...base, kind: "complete", output: { by: worker } }
              : o.kind === "release"
                ? { ...base, kind: "release", reason: "test" }
                : {
                    ...base,
                    kind: "fail",
                    failure: { category: o.category, recoverable: o.recoverable, message: "x" },
                  },
          );
        }
        // What the store must decide: an outcome applies iff its lease is the current one.
        const valid = new Map<string, boolean>();
        for (const o of outcomes) {
          const t = await s.getTask(o.taskId);
          valid.set(o.taskId, t?.status === "running" && t.leaseToken === o.token);
        }
        const req = {
          workerId: worker,
          outcomes,
          claim: op.claim,
          leaseMs: LEASE_MS,
          handlers: ["work"],
        };
        if (op.crash) {
          const plannerCalled = outcomes.some((o) => o.kind === "fail" && valid.get(o.taskId));
          if (plannerCalled) {
            const len = (await s.listTransitions()).length;
            const snap = await s.snapshot();
            await expect(s.exchange({ ...req, planner: crashingPlanner })).rejects.toThrow(
              "simulated crash",
            );
            expect((await s.listTransitions()).length).toBe(len);
            expect(await s.snapshot()).toEqual(snap);
            return; // the worker "crashed": it keeps believing it holds its leases
          }
        }
        const { settled, claimed } = await s.exchange({ ...req, planner });
        expect(settled.map((x) => x.taskId)).toEqual(outcomes.map((o) => o.taskId));
        for (const x of settled)
          expect(x.applied, `outcome for ${x.taskId}`).toBe(valid.get(x.taskId));
        for (const c of claimed) {
          const stored = await s.getTask(c.id);
          expect(stored?.status).toBe("running");
          expect(stored?.leaseWorker).toBe(worker);
          expect(stored?.leaseToken).toBe(c.leaseToken);
        }
        // A worker knows one lease per task: a task claimed again replaces what it knew of it.
        const fresh = new Set(claimed.map((c) => c.id));
        this.held.set(worker, [
          ...held.filter((l) => !used.has(l.taskId) && !fresh.has(l.taskId)),
          ...claimed.map((c) => ({ taskId: c.id, token: c.leaseToken! })),
        ]);
        return;
      }
      case "advance":
        this.clock.advance(op.ms);
        return;
      case "sweep": {
        const now = this.clock.now();
        const expired = (await this.allTasks()).filter(
          (t) => t.status === "running" && (t.leaseExpiresAt ?? 0) < now,
        );
        if (op.crash && expired.length > 0) {
          const len = (await s.listTransitions()).length;
          await expect(s.sweepExpiredLeases(crashingPlanner)).rejects.toThrow("simulated crash");
          expect((await s.listTransitions()).length).toBe(len);
          return;
        }
        const swept = await s.sweepExpiredLeases(planner);
        expect(swept.map((x) => x.taskId).sort()).toEqual(expired.map((t) => t.id).sort());
        for (const x of swept) {
          expect((await s.getTask(x.taskId))!.status).not.toBe("running");
        }
        return;
      }
      case "heartbeat": {
        const worker = WORKERS[op.worker]!;
        const held = this.held.get(worker)!;
        const { lost } = await s.heartbeat(worker, held.length ? "busy" : "idle", held, LEASE_MS);
        for (const l of held) {
          const t = (await s.getTask(l.taskId))!;
          const mine = t.status === "running" && t.leaseToken === l.token;
          expect(lost.includes(l.taskId), `heartbeat for ${l.taskId}`).toBe(!mine);
          if (mine) expect(t.leaseExpiresAt).toBe(this.clock.now() + LEASE_MS);
        }
        this.held.set(
          worker,
          held.filter((l) => !lost.includes(l.taskId)),
        );
        return;
      }
      case "workerCrash":
        // The worker dies silently: it never reports or heartbeats its leases again.
        this.held.set(WORKERS[op.worker]!, []);
        return;
      case "operator": {
        if (this.taskIds.length === 0) return;
        const id = this.taskIds[op.pick % this.taskIds.length]!;
        const before = (await s.getTask(id))!;
        const who = { actor: "op", reason: "prop", command: `test ${op.action}` };
        const ivs = (await s.listInterventions()).length;
        const call =
          op.action === "retry"
            ? s.retryTask(id, {}, who)
            : op.action === "skip"
              ? s.skipTask(id, who)
              : s.cancelTask(id, who);
        const result = await call.then(
          (t) => t,
          (e: unknown) => e,
        );
        if (ALLOWED[op.action].includes(before.status)) {
          expect(
            result,
            `${op.action} of a ${before.status} task: ${String(result)}`,
          ).not.toBeInstanceOf(Error);
          expect((await s.listInterventions()).length).toBe(ivs + 1);
        } else {
          expect(result).toBeInstanceOf(MendError);
          expect((result as MendError).code).toBe("refused");
          expect((await s.listInterventions()).length).toBe(ivs);
        }
        return;
      }
      case "reopen": {
        // A process crash between transactions: nothing in memory survives.
        const snap = await s.snapshot();
        await s.close();
        this.store = new SqliteStore(this.path, { clock: this.clock });
        expect(await this.store.snapshot()).toEqual(snap);
        return;
      }
    }
  }

  async allTasks() {
    return (await Promise.all(this.workstreams.map((w) => this.store.listTasks(w)))).flat();
  }

  /** Every invariant, checked against the store as it is now. */
  async check(): Promise<void> {
    const s = this.store;
    const snap = await s.snapshot();
    expect(await s.replay(), "replay equals state").toEqual(snap);
    const chain = await s.verifyChain();
    expect(chain.ok, JSON.stringify(chain)).toBe(true);

    const log = await s.listTransitions();
    for (const [id, n] of completionsPerTask(log)) expect(n, `completions of ${id}`).toBe(1);

    const tasks = await this.allTasks();
    // Nothing lost: every accepted task is visible.
    expect(tasks.map((t) => t.id).sort()).toEqual([...this.taskIds].sort());
    for (const t of tasks) {
      if (t.status === "running") {
        expect(t.leaseToken, `running ${t.id} has a lease`).not.toBeNull();
        expect(t.leaseWorker).not.toBeNull();
        expect(t.leaseExpiresAt).not.toBeNull();
      } else {
        expect(t.leaseToken, `${t.status} ${t.id} holds no lease`).toBeNull();
      }
      if (t.status === "completed") expect(t.output).not.toBeNull();
    }

    checkDagFromLog(log);

    // A workstream's status agrees with its tasks once it has settled.
    for (const wsId of this.workstreams) {
      const ws = (await s.getWorkstream(wsId))!;
      const mine = tasks.filter((t) => t.workstreamId === wsId);
      const live = mine.some((t) => t.status === "queued" || t.status === "running");
      const satisfied = mine.every(
        (t) =>
          t.status === "completed" ||
          t.status === "skipped" ||
          (t.status === "failed" && !t.critical),
      );
      const expected = live ? "active" : satisfied ? "completed" : "failed";
      expect(
        ws.status,
        `workstream ${wsId}: ${JSON.stringify(mine.map((t) => [t.key, t.status]))}`,
      ).toBe(expected);
    }
  }

  async dispose(): Promise<void> {
    await this.store.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * DAG invariant, from the log order alone: when a task started, each of its dependencies was
 * completed, skipped, or a non-critical task that had failed for good.
 */
function checkDagFromLog(log: Awaited<ReturnType<SqliteStore["listTransitions"]>>): void {
  const status = new Map<string, string>();
  const critical = new Map<string, boolean>();
  const deps = new Map<string, string[]>();
  for (const t of log) {
    if (t.entity !== "task") continue;
    if (t.event === "task_created") {
      const data = t.data as { deps: string[]; critical: boolean };
      deps.set(
        t.entityId,
        data.deps.map((k) => `${t.workstreamId}/${k}`),
      );
      critical.set(t.entityId, data.critical);
    }
    if (t.event === "task_started") {
      for (const d of deps.get(t.entityId) ?? []) {
        const st = status.get(d);
        const ok = st === "completed" || st === "skipped" || (st === "failed" && !critical.get(d));
        expect(ok, `seq ${t.seq}: ${t.entityId} started while its dependency ${d} was ${st}`).toBe(
          true,
        );
      }
    }
    status.set(t.entityId, t.to);
  }
}

describe("store replay property", () => {
  it("random operation sequences keep every invariant", async () => {
    await fc.assert(
      fc.asyncProperty(
        submitArb,
        fc.array(opArb, { minLength: 10, maxLength: 40, size: "max" }),
        async (first, ops) => {
          const run = new Run();
          try {
            await run.start();
            for (const op of [first as Op, ...ops]) {
              await run.apply(op);
              await run.check();
            }
            // And the state survives a final close and reopen.
            await run.apply({ k: "reopen" });
            await run.check();
          } finally {
            await run.dispose();
          }
        },
      ),
      // Bounded: a failure found late is still reported, with the smallest case found so far.
      { numRuns: 100, plugins: [fc.interruptAfterTimeLimit(45_000)] },
    );
  }, 120_000);
});
