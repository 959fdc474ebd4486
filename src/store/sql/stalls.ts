/**
 * Stall detection, run by the elected monitor. A running task that reported no progress
 * (`ctx.progress()`, or `ctx.heartbeat(details)`) for its threshold is reported once:
 * `task_stalled`, running → running, with `stalledAt` set. Progress after that is recorded too:
 * `task_progressing`, which clears `stalledAt`, so a person sees that it recovered, and a later
 * silence is reported again. An attempt's end clears `stalledAt` with its lease
 * (`RELEASED_LEASE`), so each attempt starts unstalled.
 *
 * Silence is counted from the later of the attempt's last progress (`progress_at`, stamped on the
 * store's clock by the heartbeat that reported it) and the task's last transition (`updated_at`:
 * the claim that started the attempt, or the last stall record). An attempt that never reported
 * progress is silent since it started, whatever the claim path wrote to `progress_at`.
 */
import type { TaskRecord } from "../../model/records.js";
import type { StallReport } from "../store.js";
import type { SqlStore } from "./SqlStore.js";

/** The later of a running task's last progress and its last transition. */
const SILENT_SINCE_SQL = "CASE WHEN progress_at > updated_at THEN progress_at ELSE updated_at END";

/**
 * Running tasks silent past their threshold and not reported yet, and reported ones that made
 * progress since. Parameters: the default threshold, now. Read every sweep, so it walks the
 * running tasks' partial index (`tasks_leases`) in its order: ordered by id, SQLite without
 * statistics walked the primary key over every task instead (100,000 queued: 50 ms a sweep, and
 * 16 MiB of page cache in the leading worker).
 */
export const STALL_CANDIDATES_SQL = `SELECT id FROM tasks WHERE status = 'running' AND (
    (stalled_at IS NULL AND ${SILENT_SINCE_SQL} + COALESCE(stall_after_ms, ?) <= ?)
    OR progress_at > stalled_at)
  ORDER BY lease_expires_at, id LIMIT 1000`;

/** Records the stalls, and the ends of stalls, that are due; see the module's comment. */
export async function detectStalls(
  store: SqlStore,
  defaultStallAfterMs: number,
): Promise<StallReport[]> {
  // Read first: the common case changes nothing and needs no write transaction.
  const due = await store.q.all<{ id: string }>(STALL_CANDIDATES_SQL, [
    defaultStallAfterMs,
    store.clock.now(),
  ]);
  if (due.length === 0) return [];
  return store.write(async (tx) => {
    const reports: StallReport[] = [];
    for (const { id } of due) {
      const task = await tx.getTaskRow(id);
      // Judged again in the transaction: the attempt may have ended or progressed meanwhile.
      const report = task && judgeStall(task, tx.now(), defaultStallAfterMs);
      if (!report) continue;
      const detail = { attempt: report.attempt, worker: report.workerId };
      await tx.transition(
        report.status === "stalled"
          ? {
              kind: "task",
              id,
              from: "running",
              to: "running",
              patch: { stalledAt: tx.now() },
              event: "task_stalled",
              actor: "monitor",
              workstreamId: task.workstreamId,
              detail: {
                ...detail,
                silentForMs: report.silentForMs,
                stallAfterMs: report.stallAfterMs,
              },
            }
          : {
              kind: "task",
              id,
              from: "running",
              to: "running",
              patch: { stalledAt: null },
              event: "task_progressing",
              actor: "monitor",
              workstreamId: task.workstreamId,
              detail: { ...detail, stalledForMs: report.stalledForMs },
            },
      );
      reports.push(report);
    }
    return reports;
  });
}

/** Whether a task is newly stalled, or progressing again after a stall; null when neither. */
export function judgeStall(
  task: TaskRecord,
  now: number,
  defaultStallAfterMs: number,
): StallReport | null {
  if (task.status !== "running") return null;
  const base = {
    taskId: task.id,
    workstreamId: task.workstreamId,
    workerId: task.leaseWorker,
    attempt: task.attempts,
    stallAfterMs: task.stallAfterMs ?? defaultStallAfterMs,
  };
  if (task.stalledAt === null) {
    const since = Math.max(task.progressAt ?? 0, task.updatedAt);
    if (since + base.stallAfterMs > now) return null;
    return { ...base, status: "stalled", silentForMs: now - since };
  }
  if (task.progressAt !== null && task.progressAt > task.stalledAt) {
    return { ...base, status: "progressing", stalledForMs: task.progressAt - task.stalledAt };
  }
  return null;
}
