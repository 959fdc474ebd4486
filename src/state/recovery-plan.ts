/**
 * What a workstream-level recovery (rollback, retry, retry of the failed part, resume from a task)
 * changes, decided from the tasks' current states alone. The same plan is what `--dry-run` shows
 * and what the store applies, so a person sees exactly what will happen, including what cannot be
 * undone.
 */
import { dependentsOf, downstreamOf } from "../model/dag.js";
import { satisfiesDependents, type TaskStatus, type WorkstreamStatus } from "../model/states.js";
import type { CompensationPlan } from "../recovery/compensate.js";
import type { Checkpoint, CheckpointTask } from "./checkpoints.js";

/** What a plan needs to know of a task. */
export interface PlanTask {
  /** The id as written in the definition. */
  key: string;
  status: TaskStatus;
  attempts: number;
  /** Keys of the tasks it depends on. */
  deps: readonly string[];
  critical: boolean;
}

/** What a plan needs to know of the workstream. */
export interface PlanWorkstream {
  id: string;
  status: WorkstreamStatus;
  /** In definition order. */
  tasks: readonly PlanTask[];
}

/** The workstream-level recoveries. */
export type RecoveryOperation = "rollback" | "retry" | "retry-failed" | "resume";

/** One task's change. */
export interface TaskChange {
  key: string;
  from: TaskStatus;
  /** Where it ends: `queued` when it is ready to run again, `pending` while it waits. */
  to: TaskStatus;
  attempts: { from: number; to: number };
  /** It was running: its lease is revoked, so its worker is told to stop and its outcome refused. */
  revokesLease: boolean;
  /** What a person should know about this change, if anything. */
  note: string | null;
}

/** What a recovery would do, or did. */
export interface RecoveryPlan {
  operation: RecoveryOperation;
  workstreamId: string;
  /** The checkpoint a rollback restores; null for the other operations. */
  checkpoint: Omit<Checkpoint, "workstreamId" | "tasks"> | null;
  /** The task a resume starts from; null for the other operations. */
  fromTask: string | null;
  /** The tasks that change, in definition order. Empty: nothing to do. */
  changes: TaskChange[];
  /** Tasks completed since the checkpoint: they stay completed, as their effects are applied. */
  kept: string[];
  /** Resources released. Always empty until resources exist (a later issue). */
  resourcesReleased: string[];
  workstream: { from: WorkstreamStatus; to: WorkstreamStatus };
  /** A rollback with `--compensate`: what undoes the tasks completed since the checkpoint. */
  compensation?: CompensationPlan;
}

/** The state an operation puts a task in before ready tasks are queued. */
interface Target {
  status: TaskStatus;
  attempts: number;
  note: string | null;
}

const FRESH: Target = { status: "pending", attempts: 0, note: null };
const RERUN_NOTE = "completed: runs again (its effects were already applied once)";
const UNDO_NOTE =
  "completed since the checkpoint: its compensation undoes it; it waits until that completes";

/**
 * Rollback to `checkpoint`: every task takes its state at the checkpoint (a task then queued or
 * running is pending again, with the attempts it had then), except that a task completed now
 * stays completed. Tasks that were completed or failed at the checkpoint but have been reopened
 * since cannot be given that outcome back (only a worker records one): they run again.
 *
 * Tasks in `undo` (completed since the checkpoint, undone by a compensation) are reset as well,
 * but stay pending: running them again before their compensation has run would have it undo the
 * new run.
 */
export function planRollback(
  ws: PlanWorkstream,
  checkpoint: Checkpoint,
  undo: ReadonlySet<string> = new Set(),
): RecoveryPlan {
  const then = new Map(checkpoint.tasks.map((t) => [t.key, t]));
  const kept: string[] = [];
  const targets = new Map<string, Target>();
  for (const task of ws.tasks) {
    const past = then.get(task.key)!;
    if (undo.has(task.key)) {
      targets.set(task.key, { ...rollbackTarget(task, past), note: UNDO_NOTE });
      continue;
    }
    if (task.status === "completed") {
      if (past.status !== "completed") kept.push(task.key);
      continue;
    }
    targets.set(task.key, rollbackTarget(task, past));
  }
  const { seq, at, event, task } = checkpoint;
  return finish(
    ws,
    targets,
    { operation: "rollback", checkpoint: { seq, at, event, task }, fromTask: null, kept },
    undo,
  );
}

function rollbackTarget(now: PlanTask, past: CheckpointTask): Target {
  switch (past.status) {
    case "pending":
    case "queued":
    case "running":
      return { status: "pending", attempts: past.attempts, note: null };
    case "cancelled":
    case "skipped":
      return { status: past.status, attempts: past.attempts, note: null };
    case "completed":
    case "failed":
      if (now.status === past.status)
        return { status: now.status, attempts: now.attempts, note: null };
      return {
        status: "pending",
        attempts: past.attempts,
        note: `was ${past.status} at the checkpoint and reopened since: only a worker records that outcome, so it runs again`,
      };
  }
}

/**
 * Runs the workstream again: `all` puts every task (completed ones too) back to pending with no
 * attempts; `failed` only the failed and cancelled tasks and what depends on them that has not
 * completed.
 */
export function planRetry(ws: PlanWorkstream, scope: "all" | "failed"): RecoveryPlan {
  const targets = new Map<string, Target>();
  if (scope === "all") {
    for (const t of ws.tasks) targets.set(t.key, t.status === "completed" ? rerun() : FRESH);
  } else {
    const byKey = new Map(ws.tasks.map((t) => [t.key, t]));
    const dependents = dependentsOf(
      ws.tasks.map((t) => t.key),
      (k) => byKey.get(k)!.deps,
    );
    for (const root of ws.tasks) {
      if (root.status !== "failed" && root.status !== "cancelled") continue;
      targets.set(root.key, FRESH);
      for (const k of downstreamOf(root.key, dependents)) {
        if (byKey.get(k)!.status !== "completed") targets.set(k, FRESH);
      }
    }
  }
  return finish(ws, targets, {
    operation: scope === "all" ? "retry" : "retry-failed",
    checkpoint: null,
    fromTask: null,
    kept: [],
  });
}

/** Runs `fromKey` and everything downstream of it again (completed ones too); upstream stays. */
export function planResume(ws: PlanWorkstream, fromKey: string): RecoveryPlan {
  const byKey = new Map(ws.tasks.map((t) => [t.key, t]));
  const dependents = dependentsOf(
    ws.tasks.map((t) => t.key),
    (k) => byKey.get(k)!.deps,
  );
  const targets = new Map<string, Target>();
  for (const k of [fromKey, ...downstreamOf(fromKey, dependents)]) {
    targets.set(k, byKey.get(k)!.status === "completed" ? rerun() : FRESH);
  }
  return finish(ws, targets, {
    operation: "resume",
    checkpoint: null,
    fromTask: fromKey,
    kept: [],
  });
}

function rerun(): Target {
  return { ...FRESH, note: RERUN_NOTE };
}

/**
 * Applies the targets, then settles what waits and what is ready: a pending or queued task is
 * queued exactly when its dependencies are satisfied (the DAG invariant) and it is not `held`,
 * and the workstream's status follows from its tasks as the store reconciles it.
 */
function finish(
  ws: PlanWorkstream,
  targets: ReadonlyMap<string, Target>,
  rest: Pick<RecoveryPlan, "operation" | "checkpoint" | "fromTask" | "kept">,
  held: ReadonlySet<string> = new Set(),
): RecoveryPlan {
  const byKey = new Map(ws.tasks.map((t) => [t.key, t]));
  const status = new Map(ws.tasks.map((t) => [t.key, targets.get(t.key)?.status ?? t.status]));
  const satisfied = (k: string) => satisfiesDependents(status.get(k)!, byKey.get(k)!.critical);
  for (const t of ws.tasks) {
    const s = status.get(t.key);
    if (s === "pending" || s === "queued") {
      status.set(t.key, !held.has(t.key) && t.deps.every(satisfied) ? "queued" : "pending");
    }
  }
  const changes: TaskChange[] = [];
  for (const t of ws.tasks) {
    const target = targets.get(t.key);
    const to = status.get(t.key)!;
    // Attempts are restored only where the status is set: a task left in its state keeps them.
    const attempts =
      target && (target.status !== t.status || t.status === "pending")
        ? target.attempts
        : t.attempts;
    if (to === t.status && attempts === t.attempts) continue;
    changes.push({
      key: t.key,
      from: t.status,
      to,
      attempts: { from: t.attempts, to: attempts },
      revokesLease: t.status === "running",
      note: target?.note ?? null,
    });
  }
  const live = [...status.values()].some((s) => s === "queued" || s === "running");
  const settled = ws.tasks.every((t) => satisfied(t.key)) ? "completed" : "failed";
  return {
    ...rest,
    workstreamId: ws.id,
    changes,
    resourcesReleased: [],
    workstream: {
      from: ws.status,
      to: changes.length === 0 ? ws.status : live ? "active" : settled,
    },
  };
}
