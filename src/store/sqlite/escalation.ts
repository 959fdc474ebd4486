/**
 * Escalation on the SQLite store: every task that fails for good records its escalation level and
 * the next command to try (from the recovery decision tree in recovery/escalate.ts), and a task
 * left waiting for automatic recovery longer than the escalation policy allows is escalated to a
 * person.
 */
import type { Escalation, TaskRecord } from "../../model/records.js";
import { diagnose } from "../../recovery/escalate.js";
import { getBreakerRow } from "./breakers.js";
import { rowToTask } from "./codec.js";
import type { SqliteStore } from "./SqliteStore.js";

/**
 * The escalation of `task` as it stands after failing for good. With `automaticRecovery` false,
 * revival is not counted on: what a person should do.
 */
export function escalationOf(
  store: SqliteStore,
  task: TaskRecord,
  automaticRecovery = true,
): Escalation {
  const ws = store.getWorkstreamRow(task.workstreamId);
  const breaker = task.breaker === null ? null : getBreakerRow(store, task.breaker);
  const d = diagnose(task, {
    now: store.clock.now(),
    workstream: ws && { ...ws, revive: ws.revive && automaticRecovery },
    breakers: breaker ? { [breaker.id]: breaker.status } : {},
  });
  return {
    level: d.level,
    cause: d.cause,
    summary: d.summary,
    next: d.next.command,
    automatic: d.automatic,
  };
}

/**
 * Escalates failed tasks still left to automatic recovery (level 1) that failed longer than
 * `afterMs` ago: each gets the escalation a person needs (a `task_escalated` transition).
 */
export function escalateStale(store: SqliteStore, afterMs: number): string[] {
  const cutoff = store.clock.now() - afterMs;
  const stale = store
    .stmt(
      `SELECT * FROM tasks WHERE status = 'failed' AND updated_at <= ?
         AND json_extract(escalation, '$.level') = 1 LIMIT 1000`,
    )
    .all(cutoff) as Record<string, unknown>[];
  if (stale.length === 0) return [];
  return store.write(() =>
    stale.map((r) => {
      const task = rowToTask(r);
      const escalation = escalationOf(store, task, false);
      store.transition({
        kind: "task",
        id: task.id,
        from: "failed",
        to: "failed",
        patch: { escalation },
        event: "task_escalated",
        actor: "monitor",
        workstreamId: task.workstreamId,
        detail: {
          reason: `not recovered automatically within ${Math.round(afterMs / 1000)} s`,
          level: escalation.level,
          next: escalation.next,
        },
      });
      return task.id;
    }),
  );
}
