/**
 * Model-based property test of the store: random operations (submits of small DAGs, worker
 * exchanges with random outcomes, clock jumps, lease sweeps, silent worker crashes, operator
 * actions, workstream rollbacks, re-runs, dependency removals, archive and merge, planner crashes
 * inside transactions, process crashes = close and reopen the file), checking after every step
 * that what the store says agrees with the invariants of DESIGN.md, and that the transition
 * journal holds exactly the committed log.
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
import { canTransition, FINAL_WORKSTREAM_STATUSES, type TaskStatus } from "../src/model/states.js";
import { journalDirFor, readJournal } from "../src/state/journal.js";
import type { RecoveryPlan } from "../src/state/recovery-plan.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { FailurePlanner, HeldLease, Outcome } from "../src/store/store.js";
import { COMPLETION_EVENTS, spec } from "./helpers/specs.js";

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
  | { k: "rollback"; ws: number; pick: number; latest: boolean; dryRun: boolean }
  | { k: "rerun"; ws: number; scope: "all" | "failed"; dryRun: boolean }
  | { k: "resume"; pick: number; dryRun: boolean }
  | { k: "depsRemove"; pick: number; dep: number }
  | { k: "close"; ws: number; to: "archived" | "merged" }
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
  {
    arbitrary: fc.record({
      k: fc.constant("rollback" as const),
      ws: fc.nat(),
      pick: fc.nat(),
      latest: fc.boolean(),
      dryRun: fc.constantFrom(false, false, true),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("rerun" as const),
      ws: fc.nat(),
      scope: fc.constantFrom("all" as const, "failed" as const),
      dryRun: fc.constantFrom(false, false, true),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("resume" as const),
      pick: fc.nat(),
      dryRun: fc.constantFrom(false, false, true),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ k: fc.constant("depsRemove" as const), pick: fc.nat(), dep: fc.nat() }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("close" as const),
      ws: fc.nat(),
      to: fc.constantFrom("archived" as const, "merged" as const),
    }),
    weight: 1,
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
        const ws = (await s.getWorkstream(before.workstreamId))!;
        if (FINAL_WORKSTREAM_STATUSES.has(ws.status) && result instanceof MendError) {
          // A task action that would reopen a final workstream is refused by the state machine.
          expect(["refused", "illegal_transition"]).toContain(result.code);
          expect((await s.listInterventions()).length).toBe(ivs);
        } else if (ALLOWED[op.action].includes(before.status)) {
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
      case "rollback":
      case "rerun":
      case "resume":
        return this.recover(op);
      case "depsRemove": {
        if (this.taskIds.length === 0) return;
        const task = (await s.getTask(this.taskIds[op.pick % this.taskIds.length]!))!;
        if (task.deps.length === 0) return;
        const dep = `${task.workstreamId}/${task.deps[op.dep % task.deps.length]!}`;
        const final = FINAL_WORKSTREAM_STATUSES.has(
          (await s.getWorkstream(task.workstreamId))!.status,
        );
        const allowed = !final && task.status === "pending";
        await this.expectWritten(allowed, () => s.removeDependency(task.id, dep, who("deps")));
        if (allowed) expect((await s.getTask(task.id))!.deps).not.toContain(dep.split("/")[1]);
        return;
      }
      case "close": {
        if (this.workstreams.length === 0) return;
        const wsId = this.workstreams[op.ws % this.workstreams.length]!;
        const ws = (await s.getWorkstream(wsId))!;
        const allowed = canTransition("workstream", ws.status, op.to);
        await this.expectWritten(allowed, () =>
          op.to === "archived"
            ? s.archiveWorkstream(wsId, who("archive"))
            : s.mergeWorkstream(wsId, who("merge")),
        );
        if (allowed) expect((await s.getWorkstream(wsId))!.status).toBe(op.to);
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

  /**
   * A workstream recovery: refused (writing nothing) on an archived or merged workstream;
   * otherwise its dry run is exactly what it then does, and the result is what the plan says.
   */
  private async recover(op: Extract<Op, { k: "rollback" | "rerun" | "resume" }>): Promise<void> {
    const s = this.store;
    if (this.workstreams.length === 0) return;
    let wsId: string;
    let run: (dryRun: boolean) => Promise<RecoveryPlan>;
    if (op.k === "resume") {
      const task = (await s.getTask(this.taskIds[op.pick % this.taskIds.length]!))!;
      wsId = task.workstreamId;
      run = (dryRun) => s.resumeWorkstream(wsId, task.key, who("resume"), { dryRun });
    } else if (op.k === "rerun") {
      wsId = this.workstreams[op.ws % this.workstreams.length]!;
      run = (dryRun) => s.retryWorkstream(wsId, op.scope, who("retry"), { dryRun });
    } else {
      wsId = this.workstreams[op.ws % this.workstreams.length]!;
      const checkpoints = await s.listCheckpoints(wsId);
      const to = op.latest ? "latest" : checkpoints[op.pick % checkpoints.length]!.seq;
      run = (dryRun) => s.rollbackWorkstream(wsId, to, who("rollback"), { dryRun });
    }
    const ws = (await s.getWorkstream(wsId))!;
    if (FINAL_WORKSTREAM_STATUSES.has(ws.status)) {
      await this.expectWritten(false, () => run(op.dryRun));
      return;
    }
    const len = (await s.listTransitions()).length;
    const ivs = (await s.listInterventions()).length;
    const snap = await s.snapshot();
    const plan = await run(true);
    expect((await s.listTransitions()).length).toBe(len);
    expect(await s.snapshot()).toEqual(snap);
    if (op.dryRun) return;
    expect(await run(false)).toEqual(plan);
    expect((await s.listInterventions()).length).toBe(ivs + (plan.changes.length > 0 ? 1 : 0));
    for (const c of plan.changes) {
      expect((await s.getTask(`${wsId}/${c.key}`))!.status, `${op.k} ${c.key}`).toBe(c.to);
      if (op.k === "rollback") expect(c.from).not.toBe("completed");
    }
    expect((await s.getWorkstream(wsId))!.status).toBe(plan.workstream.to);
  }

  /** Runs an action expected to succeed (one intervention) or be refused (nothing written). */
  private async expectWritten(allowed: boolean, action: () => Promise<unknown>): Promise<void> {
    const s = this.store;
    const len = (await s.listTransitions()).length;
    const ivs = (await s.listInterventions()).length;
    const result = await action().then(
      (r) => r,
      (e: unknown) => e,
    );
    if (allowed) {
      expect(result, String(result)).not.toBeInstanceOf(Error);
      expect((await s.listInterventions()).length).toBe(ivs + 1);
      return;
    }
    expect(result).toBeInstanceOf(MendError);
    expect(["refused", "invalid_argument"]).toContain((result as MendError).code);
    expect((await s.listTransitions()).length).toBe(len);
    expect((await s.listInterventions()).length).toBe(ivs);
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

    const log = await s.listTransitions({ limit: 1_000_000 });
    checkCompletionOnce(log);
    // The journal beside the database holds exactly the committed log, and every intervention,
    // whatever crashed in between.
    const journal = readJournal(journalDirFor(this.path));
    expect(
      journal.transitions.map((t) => [t.seq, t.hash]),
      "journal equals log",
    ).toEqual(log.map((t) => [t.seq, t.hash]));
    expect(journal.interventions.map((i) => i.id).sort()).toEqual(
      (await s.listInterventions(1_000_000)).map((i) => i.id).sort(),
    );

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

    // A workstream's status agrees with its tasks once it has settled; a final one runs nothing.
    for (const wsId of this.workstreams) {
      const ws = (await s.getWorkstream(wsId))!;
      const mine = tasks.filter((t) => t.workstreamId === wsId);
      const live = mine.some((t) => t.status === "queued" || t.status === "running");
      if (FINAL_WORKSTREAM_STATUSES.has(ws.status)) {
        expect(live, `${ws.status} workstream ${wsId} has live tasks`).toBe(false);
        continue;
      }
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

function who(command: string) {
  return { actor: "op", reason: "prop", command: `test ${command}` };
}

/**
 * Completion once: a task's completion is recorded at most once per run. Only a person starts a
 * new run of a completed task (workstream retry or resume: the task leaves `completed`).
 */
function checkCompletionOnce(log: Awaited<ReturnType<SqliteStore["listTransitions"]>>): void {
  const completions = new Map<string, number>();
  for (const t of log) {
    if (t.from === "completed") completions.set(t.entityId, 0);
    if (!(COMPLETION_EVENTS as readonly string[]).includes(t.event)) continue;
    const n = (completions.get(t.entityId) ?? 0) + 1;
    expect(n, `seq ${t.seq}: completions of ${t.entityId} in one run`).toBe(1);
    completions.set(t.entityId, n);
  }
}

/**
 * DAG invariant, from the log order alone: when a task started, each of its dependencies (as
 * they were then: a person may have removed some) was completed, skipped, or a non-critical task
 * that had failed for good.
 */
function checkDagFromLog(log: Awaited<ReturnType<SqliteStore["listTransitions"]>>): void {
  const status = new Map<string, string>();
  const critical = new Map<string, boolean>();
  const deps = new Map<string, string[]>();
  for (const t of log) {
    if (t.entity !== "task") continue;
    const data = t.data as { deps?: string[]; critical?: boolean };
    if (data.deps) {
      deps.set(
        t.entityId,
        data.deps.map((k) => `${t.workstreamId}/${k}`),
      );
    }
    if (data.critical !== undefined) critical.set(t.entityId, data.critical);
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
