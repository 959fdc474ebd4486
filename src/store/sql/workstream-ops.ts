/**
 * Workstream recovery on the SQL stores: rollback to a checkpoint, re-running the whole
 * workstream, its failed part or everything from one task on, removing a dependency, cancelling a
 * workstream, and closing one for good (archived, merged). Each is an intervention: one write
 * transaction in which every state change is a transition, plus one interventions entry. With
 * `dryRun` the plan is computed the same way in a transaction that is rolled back.
 */
import { MendError } from "../../errors.js";
import { taskId as makeTaskId } from "../../model/ids.js";
import type { TaskRecord, WorkstreamRecord } from "../../model/records.js";
import {
  canTransition,
  FINAL_WORKSTREAM_STATUSES,
  satisfiesDependents,
  type TaskStatus,
} from "../../model/states.js";
import type { EventName } from "../../observe/events.js";
import type { CheckpointRef } from "../../state/checkpoints.js";
import {
  type PlanWorkstream,
  planResume,
  planRetry,
  planRollback,
  type RecoveryPlan,
} from "../../state/recovery-plan.js";
import type {
  Actor,
  DependencyRemoval,
  RecoveryOptions,
  WorkstreamCancellation,
} from "../store.js";
import {
  checkpointAt,
  latestQuietCheckpoint,
  openCheckpointLog,
  saveSnapshots,
} from "./checkpoints.js";
import { rowToTask } from "./codec.js";
import {
  onWorkstreamEnded,
  planCompensationOf,
  refuseUnfinishedCompensation,
  scheduleCompensation,
} from "./compensation.js";
import { RELEASED_LEASE, reconcileWorkstream } from "./lifecycle.js";
import type { Row } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/** The events an operation's records carry. */
interface OperationEvents {
  task: EventName;
  workstream: EventName;
}

const EVENTS_OF: Record<RecoveryPlan["operation"], OperationEvents> = {
  rollback: { task: "task_rolled_back", workstream: "workstream_rolled_back" },
  retry: { task: "task_reset", workstream: "workstream_retried" },
  "retry-failed": { task: "task_reset", workstream: "workstream_retried" },
  resume: { task: "task_reset", workstream: "workstream_resumed" },
};

/**
 * Rolls a workstream back to a checkpoint (see {@link planRollback} for what that means). With
 * `compensate`, the tasks completed since the checkpoint that declare a compensation are undone
 * by a compensation workstream (in the order of the workstream's policy) and reset; they wait
 * until it completes, then run again.
 */
export function rollbackWorkstream(
  store: SqlStore,
  workstreamId: string,
  to: CheckpointRef,
  who: Actor,
  options: RecoveryOptions,
): Promise<RecoveryPlan> {
  return inTransaction(store, options, async (tx) => {
    const ws = await requireOpenWorkstream(tx, workstreamId, "rolled back");
    const log = await openCheckpointLog(tx, workstreamId);
    const checkpoint =
      to === "latest" ? await latestQuietCheckpoint(log) : await checkpointAt(log, to);
    const input = await planInput(tx, ws);
    if (!options.compensate) {
      const plan = planRollback(input, checkpoint);
      if (!options.dryRun) {
        await saveSnapshots(tx, log);
        await apply(tx, plan, who);
      }
      return plan;
    }
    await refuseUnfinishedCompensation(tx, ws);
    const since = new Set(planRollback(input, checkpoint).kept);
    const compensation = await planCompensationOf(tx, ws, ws.compensation.order, since);
    const plan = planRollback(input, checkpoint, new Set(compensation.steps.map((s) => s.task)));
    if (options.dryRun) return { ...plan, compensation };
    await saveSnapshots(tx, log);
    // Scheduled first, so that the workstream settling as the rollback applies sees it under way.
    plan.compensation =
      compensation.steps.length === 0
        ? compensation
        : await scheduleCompensation(tx, ws, compensation, "rollback", who.actor, who.reason);
    await apply(tx, plan, who);
    return plan;
  });
}

/** Runs a workstream again: every task (`all`), or its failed and cancelled part (`failed`). */
export function retryWorkstream(
  store: SqlStore,
  workstreamId: string,
  scope: "all" | "failed",
  who: Actor,
  options: RecoveryOptions,
): Promise<RecoveryPlan> {
  return inTransaction(store, options, async (tx) => {
    const ws = await requireOpenWorkstream(tx, workstreamId, "retried");
    const plan = planRetry(await planInput(tx, ws), scope);
    if (!options.dryRun) await apply(tx, plan, who);
    return plan;
  });
}

/** Runs the task `fromKey` (as written in the definition) and everything downstream again. */
export function resumeWorkstream(
  store: SqlStore,
  workstreamId: string,
  fromKey: string,
  who: Actor,
  options: RecoveryOptions,
): Promise<RecoveryPlan> {
  return inTransaction(store, options, async (tx) => {
    const ws = await requireOpenWorkstream(tx, workstreamId, "resumed");
    const input = await planInput(tx, ws);
    if (!input.tasks.some((t) => t.key === fromKey)) {
      throw new MendError(
        "not_found",
        `workstream ${workstreamId} has no task "${fromKey}" (its tasks: ${listed(input.tasks.map((t) => t.key))})`,
        { workstreamId, task: fromKey },
      );
    }
    const plan = planResume(input, fromKey);
    if (!options.dryRun) await apply(tx, plan, who);
    return plan;
  });
}

/**
 * Removes "`taskId` depends on `depId`". Only a pending task waits for its dependencies, so only a
 * pending task's can be removed; it is queued at once if nothing else holds it back. The task's
 * `deps` change through a transition, so replay reproduces the edit.
 */
export function removeDependency(
  store: SqlStore,
  taskId: string,
  depId: string,
  who: Actor,
  options: RecoveryOptions,
): Promise<DependencyRemoval> {
  return inTransaction(store, options, async (tx) => {
    const task = await tx.requireTask(taskId);
    const dep = await tx.requireTask(depId);
    const ws = await requireOpenWorkstream(tx, task.workstreamId, "edited");
    if (dep.workstreamId !== task.workstreamId || !task.deps.includes(dep.key)) {
      throw new MendError(
        "invalid_argument",
        `${task.id} does not depend on ${dep.id}; ${task.deps.length ? `it depends on: ${task.deps.join(", ")}` : "it has no dependencies"}`,
        { taskId, depId, deps: task.deps },
      );
    }
    if (task.status !== "pending") {
      throw new MendError(
        "refused",
        `task ${task.id} is ${task.status}: only a pending task waits for its dependencies${task.status === "failed" || task.status === "cancelled" ? " (retry it first, then remove the dependency)" : ""}`,
        { taskId, status: task.status },
      );
    }
    const deps = task.deps.filter((d) => d !== dep.key);
    const siblings = new Map((await planInput(tx, ws)).tasks.map((t) => [t.key, t]));
    const ready = deps.every((k) => {
      const d = siblings.get(k)!;
      return satisfiesDependents(d.status, d.critical);
    });
    const removal: DependencyRemoval = {
      taskId: task.id,
      removed: dep.key,
      deps: { from: task.deps, to: deps },
      status: { from: task.status, to: ready ? "queued" : "pending" },
    };
    if (options.dryRun) return removal;
    await tx.transition({
      kind: "task",
      id: task.id,
      from: "pending",
      to: "pending",
      patch: { deps },
      event: "task_dependency_removed",
      actor: who.actor,
      workstreamId: task.workstreamId,
      detail: { removed: dep.key, reason: who.reason ?? null },
    });
    await tx.run("DELETE FROM task_deps WHERE task_id = ? AND dep_id = ?", [task.id, dep.id]);
    if (await tx.depsSatisfied(task.id)) await promote(tx, task.id, task.workstreamId, who.actor);
    const after = await tx.requireTask(task.id);
    await tx.intervention(
      who,
      task.id,
      { status: task.status, deps: task.deps },
      { status: after.status, deps: after.deps },
    );
    await reconcileWorkstream(tx, task.workstreamId, who.actor);
    return { ...removal, status: { from: task.status, to: after.status } };
  });
}

/**
 * Cancels an active or failed workstream: its pending, queued and running tasks are cancelled (a
 * running one's worker hears it through its heartbeat; its outcome is refused), the workstream
 * ends `cancelled`, and its completed tasks are compensated when its policy says so.
 */
export function cancelWorkstream(
  store: SqlStore,
  workstreamId: string,
  who: Actor,
): Promise<WorkstreamCancellation> {
  return store.write(async (tx) => {
    const ws = await requireOpenWorkstream(tx, workstreamId, "cancelled");
    if (!canTransition("workstream", ws.status, "cancelled")) {
      throw new MendError(
        "refused",
        `workstream ${ws.id} is ${ws.status}; only an active or failed workstream can be cancelled${ws.status === "completed" ? " (to undo its tasks: mend workstream compensate)" : ""}`,
        { workstreamId, status: ws.status },
      );
    }
    const reason = who.reason ?? null;
    const open = (
      await tx.all<Row>(
        "SELECT * FROM tasks WHERE workstream_id = ? AND status IN ('pending','queued','running') ORDER BY rowid",
        [ws.id],
      )
    ).map(rowToTask);
    for (const t of open) {
      await tx.transition({
        kind: "task",
        id: t.id,
        from: t.status,
        to: "cancelled",
        patch: t.status === "running" ? { ...RELEASED_LEASE } : {},
        event: "task_cancelled",
        actor: who.actor,
        workstreamId: ws.id,
        detail: { reason, ...(t.status === "running" ? { worker: t.leaseWorker } : {}) },
      });
    }
    await tx.transition({
      kind: "workstream",
      id: ws.id,
      from: ws.status,
      to: "cancelled",
      patch: {},
      event: "workstream_cancelled",
      actor: who.actor,
      workstreamId: ws.id,
      detail: { reason, cancelled: open.map((t) => t.key) },
    });
    const after = (await tx.getWorkstreamRow(ws.id))!;
    const compensation = await onWorkstreamEnded(tx, after, who.actor);
    await tx.intervention(
      who,
      ws.id,
      { status: ws.status, tasks: Object.fromEntries(open.map((t) => [t.key, t.status])) },
      { status: after.status, compensation: compensation?.compensationId ?? null },
    );
    return { workstream: after, cancelled: open.map((t) => t.key), compensation };
  });
}

/**
 * Closes a workstream for good: `archived` (from completed, failed or cancelled) or `merged`
 * (from completed: its results were merged into their destination).
 */
export function closeWorkstream(
  store: SqlStore,
  workstreamId: string,
  to: "archived" | "merged",
  who: Actor,
): Promise<WorkstreamRecord> {
  return store.write(async (tx) => {
    const ws = await requireOpenWorkstream(tx, workstreamId, to);
    if (!canTransition("workstream", ws.status, to)) {
      throw new MendError(
        "refused",
        `workstream ${ws.id} is ${ws.status}; only a ${to === "merged" ? "completed" : "completed, failed or cancelled"} workstream can be ${to}`,
        { workstreamId, status: ws.status },
      );
    }
    await tx.transition({
      kind: "workstream",
      id: ws.id,
      from: ws.status,
      to,
      patch: {},
      event: to === "merged" ? "workstream_merged" : "workstream_archived",
      actor: who.actor,
      workstreamId: ws.id,
      detail: { reason: who.reason ?? null },
    });
    const after = (await tx.getWorkstreamRow(ws.id))!;
    await tx.intervention(who, ws.id, { status: ws.status }, { status: after.status });
    return after;
  });
}

/**
 * One write; a dry run reads in one consistent snapshot, in a transaction rolled back at the end,
 * so it writes nothing.
 */
function inTransaction<T>(
  store: SqlStore,
  options: RecoveryOptions,
  fn: (tx: Tx) => Promise<T>,
): Promise<T> {
  return options.dryRun ? store.dryRun(fn) : store.write(fn);
}

/** The workstream, unless it is missing (not found) or final (refused, naming its status). */
async function requireOpenWorkstream(
  tx: Tx,
  workstreamId: string,
  verb: string,
): Promise<WorkstreamRecord> {
  const ws = await tx.getWorkstreamRow(workstreamId);
  if (!ws) {
    throw new MendError("not_found", `workstream ${workstreamId} not found`, { workstreamId });
  }
  if (FINAL_WORKSTREAM_STATUSES.has(ws.status)) {
    throw new MendError(
      "refused",
      `workstream ${ws.id} is ${ws.status}${ws.status === "merged" ? " (its results are in their destination)" : ""}; it cannot be ${verb}`,
      { workstreamId, status: ws.status },
    );
  }
  return ws;
}

async function planInput(tx: Tx, ws: WorkstreamRecord): Promise<PlanWorkstream> {
  const rows = await tx.all<Row>("SELECT * FROM tasks WHERE workstream_id = ? ORDER BY rowid", [
    ws.id,
  ]);
  return { id: ws.id, status: ws.status, tasks: rows.map(rowToTask) };
}

/**
 * Applies a plan: the workstream's record first (it says what happened and why), then each
 * task's reset, then the queuing of the ready ones once every reset is in, then the workstream
 * settles as its tasks say.
 */
async function apply(tx: Tx, plan: RecoveryPlan, who: Actor): Promise<void> {
  if (plan.changes.length === 0) return;
  const events = EVENTS_OF[plan.operation];
  const ws = (await tx.getWorkstreamRow(plan.workstreamId))!;
  const reason = who.reason ?? null;
  await tx.transition({
    kind: "workstream",
    id: ws.id,
    from: ws.status,
    to: "active",
    patch: {},
    event: events.workstream,
    actor: who.actor,
    workstreamId: ws.id,
    detail: {
      reason,
      checkpoint: plan.checkpoint?.seq ?? null,
      fromTask: plan.fromTask,
      changed: plan.changes.length,
      kept: plan.kept,
      resourcesReleased: plan.resourcesReleased,
      ...(plan.compensation ? { compensation: plan.compensation.compensationId } : {}),
    },
  });
  const now = tx.now();
  const byKey = new Map<string, TaskRecord>();
  for (const c of plan.changes) {
    const task = await tx.requireTask(makeTaskId(ws.id, c.key));
    byKey.set(c.key, task);
    const reset: TaskStatus = c.to === "queued" ? "pending" : c.to;
    if (c.from === reset && c.attempts.from === c.attempts.to) continue;
    const detail = {
      reason,
      operation: plan.operation,
      ...(plan.checkpoint ? { checkpoint: plan.checkpoint.seq } : {}),
      ...(c.revokesLease ? { revokedLease: task.leaseToken, worker: task.leaseWorker } : {}),
    };
    let patch: Record<string, unknown> = {
      attempts: c.attempts.to,
      workerLostStreak: 0,
      ...(c.revokesLease ? RELEASED_LEASE : {}),
      ...(reset === "pending" ? { runAt: now, lastError: null, lastDelayMs: null } : {}),
    };
    let from = c.from;
    // No direct edge (e.g. running → skipped, failed → cancelled): through pending.
    if (!canTransition("task", from, reset)) {
      await tx.transition({
        kind: "task",
        id: task.id,
        from,
        to: "pending",
        patch,
        event: events.task,
        actor: who.actor,
        workstreamId: ws.id,
        detail,
      });
      from = "pending";
      patch = {};
    }
    await tx.transition({
      kind: "task",
      id: task.id,
      from,
      to: reset,
      patch,
      event: events.task,
      actor: who.actor,
      workstreamId: ws.id,
      detail,
    });
  }
  for (const c of plan.changes) {
    if (c.to !== "queued") continue;
    const id = byKey.get(c.key)!.id;
    // The plan decided from the same rows; the store's own check guards the DAG invariant.
    if (!(await tx.depsSatisfied(id))) {
      throw new MendError(
        "internal",
        `${plan.operation} would queue ${id} before its dependencies`,
        {
          taskId: id,
        },
      );
    }
    await promote(tx, id, ws.id, who.actor);
  }
  await reconcileWorkstream(tx, ws.id, who.actor);
  await tx.intervention(
    who,
    ws.id,
    { status: ws.status, tasks: Object.fromEntries(plan.changes.map((c) => [c.key, c.from])) },
    {
      status: (await tx.getWorkstreamRow(ws.id))!.status,
      ...(plan.checkpoint ? { checkpoint: plan.checkpoint.seq } : {}),
      ...(plan.fromTask ? { fromTask: plan.fromTask } : {}),
      tasks: Object.fromEntries(plan.changes.map((c) => [c.key, c.to])),
      kept: plan.kept,
      ...(plan.compensation ? { compensation: plan.compensation.compensationId } : {}),
    },
  );
}

async function promote(tx: Tx, id: string, workstreamId: string, actor: string): Promise<void> {
  await tx.transition({
    kind: "task",
    id,
    from: "pending",
    to: "queued",
    patch: { runAt: tx.now() },
    event: "task_ready",
    actor,
    workstreamId,
  });
  tx.wake();
}

/** Up to 20 names, then how many more. */
function listed(names: string[]): string {
  return names.length <= 20
    ? names.join(", ")
    : `${names.slice(0, 20).join(", ")} and ${names.length - 20} more`;
}
