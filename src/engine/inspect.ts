import type { TaskRecord, WorkstreamRecord } from "../model/records.js";
import type { TaskStatus } from "../model/states.js";

/** One task as `mend status` shows it. */
export interface TaskView {
  /** The id as written in the definition. */
  id: string;
  /** The full id: `WORKSTREAM/TASK`. */
  taskId: string;
  handler: string;
  status: TaskStatus;
  attempts: number;
  maxAttempts: number;
  /** For a pending task: the failed or cancelled dependency that keeps it from running. */
  blockedBy: string | null;
  /** A queued task waiting for its retry time. */
  runAt: number | null;
  /** A running task reported stalled (no progress for its threshold): when; else null. */
  stalledAt: number | null;
  lastError: { category: string; message: string } | null;
}

/** A workstream with its tasks and counts by status. */
export interface WorkstreamView {
  id: string;
  name: string;
  status: WorkstreamRecord["status"];
  createdAt: number;
  updatedAt: number;
  counts: Record<TaskStatus, number>;
  tasks: TaskView[];
}

/** Derives the view of a workstream; "blocked" is computed here, never stored. */
export function viewWorkstream(ws: WorkstreamRecord, tasks: TaskRecord[]): WorkstreamView {
  const byKey = new Map(tasks.map((t) => [t.key, t]));
  const counts = countByStatus(tasks);
  const blockers = new Map<string, string | null>();
  const blockerOf = (t: TaskRecord, seen: Set<string>): string | null => {
    if (blockers.has(t.key)) return blockers.get(t.key)!;
    let found: string | null = null;
    for (const d of t.deps) {
      const dep = byKey.get(d);
      if (!dep || seen.has(d)) continue;
      if ((dep.status === "failed" && dep.critical) || dep.status === "cancelled") found = dep.key;
      else if (dep.status === "pending") found = blockerOf(dep, new Set([...seen, d]));
      if (found) break;
    }
    blockers.set(t.key, found);
    return found;
  };
  return {
    id: ws.id,
    name: ws.name,
    status: ws.status,
    createdAt: ws.createdAt,
    updatedAt: ws.updatedAt,
    counts,
    tasks: tasks.map((t) => ({
      id: t.key,
      taskId: t.id,
      handler: t.handler,
      status: t.status,
      attempts: t.attempts,
      maxAttempts: t.retry.maxAttempts,
      blockedBy: t.status === "pending" ? blockerOf(t, new Set([t.key])) : null,
      runAt: t.status === "queued" ? t.runAt : null,
      stalledAt: t.status === "running" ? t.stalledAt : null,
      lastError: t.lastError
        ? { category: t.lastError.category, message: t.lastError.message }
        : null,
    })),
  };
}

/** Number of tasks in each status. */
export function countByStatus(
  tasks: readonly { status: TaskStatus }[],
): Record<TaskStatus, number> {
  const counts: Record<TaskStatus, number> = {
    pending: 0,
    queued: 0,
    running: 0,
    completed: 0,
    failed: 0,
    cancelled: 0,
    skipped: 0,
  };
  for (const t of tasks) counts[t.status]++;
  return counts;
}
