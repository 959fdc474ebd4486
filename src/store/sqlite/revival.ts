/**
 * The monitor's revival sweep on the SQLite store: failed tasks whose cause has cleared are queued
 * again, each as one transition (`task_revived`) with the evidence and its confidence.
 */
import { revivalEvidence } from "../../recovery/revive.js";
import type { Revival, RevivalOptions } from "../store.js";
import { getBreakerRow } from "./breakers.js";
import { rowToTask } from "./codec.js";
import type { SqliteStore } from "./SqliteStore.js";

/** Revives what can be revived, in one write transaction. */
export function reviveTasks(store: SqliteStore, options: RevivalOptions): Revival[] {
  return store.write(() => {
    const now = store.clock.now();
    // Oldest failures first; only recoverable ones in workstreams that allow revival and are
    // still open to recovery.
    const candidates = store
      .stmt(
        `SELECT t.* FROM tasks t JOIN workstreams w ON w.id = t.workstream_id
         WHERE t.status = 'failed' AND t.revivals < ? AND w.revive = 1
           AND w.status IN ('active', 'failed')
           AND json_extract(t.last_error, '$.recoverable') = 1
         ORDER BY t.updated_at LIMIT ?`,
      )
      .all(options.maxRevivals, options.limit) as Record<string, unknown>[];
    const revived: Revival[] = [];
    const touched = new Set<string>();
    for (const r of candidates) {
      const task = rowToTask(r);
      const breaker = task.breaker === null ? null : getBreakerRow(store, task.breaker);
      const evidence = revivalEvidence(task, breaker, now, options.rateLimitWindowMs);
      if (!evidence || evidence.confidence < options.minConfidence) continue;
      const ready = store.depsSatisfied(task.id);
      const revival = task.revivals + 1;
      store.transition({
        kind: "task",
        id: task.id,
        from: "failed",
        to: ready ? "queued" : "pending",
        patch: {
          attempts: 0,
          revivals: revival,
          runAt: now,
          lastDelayMs: null,
          workerLostStreak: 0,
        },
        event: "task_revived",
        actor: "monitor",
        workstreamId: task.workstreamId,
        detail: { cause: evidence.cause, confidence: evidence.confidence, revival },
      });
      // A non-critical failure had let its dependents run; they wait for it again.
      if (!task.critical) store.holdDependents(task.id, "monitor");
      touched.add(task.workstreamId);
      revived.push({ taskId: task.id, workstreamId: task.workstreamId, ...evidence, revival });
    }
    for (const ws of touched) store.reconcileWorkstream(ws, "monitor");
    if (revived.length > 0) store.wake();
    return revived;
  });
}
