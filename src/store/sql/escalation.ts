/**
 * Escalation on the SQL stores: every task that fails for good records its escalation level and
 * the next command to try (from the recovery decision tree in recovery/escalate.ts), and a task
 * left waiting for automatic recovery longer than the escalation policy allows is escalated to a
 * person.
 */
import type { Escalation, TaskRecord } from "../../model/records.js";
import { diagnose } from "../../recovery/escalate.js";
import { getBreakerRow } from "./breakers.js";
import { rowToTask } from "./codec.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/**
 * The escalation of `task` as it stands after failing for good. With `automaticRecovery` false,
 * revival is not counted on: what a person should do.
 */
export async function escalationOf(
  tx: Tx,
  task: TaskRecord,
  automaticRecovery = true,
): Promise<Escalation> {
  const ws = await tx.getWorkstreamRow(task.workstreamId);
  const breaker = task.breaker === null ? null : await getBreakerRow(tx, task.breaker);
  const d = diagnose(task, {
    now: tx.now(),
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
export async function escalateStale(store: SqlStore, afterMs: number): Promise<string[]> {
  const cutoff = store.clock.now() - afterMs;
  // Read without the write lock: most sweeps find nothing to escalate.
  const stale = await store.q.all(
    `SELECT * FROM tasks WHERE status = 'failed' AND updated_at <= ?
       AND ${store.dialect.jsonNumber("escalation", ["level"])} = 1 LIMIT 1000`,
    [cutoff],
  );
  if (stale.length === 0) return [];
  return store.write(async (tx) => {
    const escalated: string[] = [];
    for (const r of stale) {
      const task = rowToTask(r);
      const escalation = await escalationOf(tx, task, false);
      await tx.transition({
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
      escalated.push(task.id);
    }
    return escalated;
  });
}
