/**
 * The monitor's revival sweep on the SQLite store: failed tasks whose cause has cleared are queued
 * again, each as one transition (`task_revived`) with the evidence and its confidence.
 */
import type { BreakerRecord } from "../../model/records.js";
import { restartedDeadline, revivalEvidence } from "../../recovery/revive.js";
import type { Revival, RevivalOptions } from "../store.js";
import { getBreakerRow, runningProbes } from "./breakers.js";
import { rowToTask } from "./codec.js";
import { type SqliteStore, stopReason } from "./SqliteStore.js";

/** Candidates read at a time. */
const PAGE = 500;
/**
 * Most candidates one sweep looks at: tasks whose cause has not cleared (behind a breaker still
 * open) are passed over to reach newer ones, within this bound on the sweep's cost.
 */
const MAX_SCANNED = 5000;

/**
 * Failed tasks that could be revived, oldest failure first: recoverable ones in workstreams that
 * allow revival and are still open to recovery.
 */
function* candidates(store: SqliteStore, maxRevivals: number): Generator<Record<string, unknown>> {
  let after: [number, string] = [-1, ""];
  for (let scanned = 0; scanned < MAX_SCANNED; scanned += PAGE) {
    const page = store
      .stmt(
        `SELECT t.* FROM tasks t JOIN workstreams w ON w.id = t.workstream_id
         WHERE t.status = 'failed' AND t.revivals < @max AND w.revive = 1
           AND w.status IN ('active', 'failed')
           AND json_extract(t.last_error, '$.recoverable') = 1
           AND (t.updated_at, t.id) > (@at, @id)
         ORDER BY t.updated_at, t.id LIMIT ${PAGE}`,
      )
      .all({ max: maxRevivals, at: after[0], id: after[1] }) as Record<string, unknown>[];
    yield* page;
    if (page.length < PAGE) return;
    const last = page.at(-1)!;
    after = [last.updated_at as number, last.id as string];
  }
}

/**
 * In a workstream that stops on failure, the work the engine cancelled because of this task's
 * failure (not what a person cancelled) goes back to waiting for it.
 */
function reopenStopped(store: SqliteStore, workstreamId: string, key: string): void {
  const stopped = store
    .stmt(
      `SELECT DISTINCT r.entity_id AS id FROM transitions r JOIN tasks t ON t.id = r.entity_id
       WHERE r.workstream_id = ? AND r.event = 'task_cancelled' AND t.status = 'cancelled'
         AND json_extract(r.detail, '$.reason') = ?`,
    )
    .all(workstreamId, stopReason(key)) as { id: string }[];
  for (const { id } of stopped) {
    store.transition({
      kind: "task",
      id,
      from: "cancelled",
      to: store.depsSatisfied(id) ? "queued" : "pending",
      patch: { runAt: store.clock.now() },
      event: "task_reset",
      actor: "monitor",
      workstreamId,
      detail: { reason: `critical task ${key}, whose failure stopped it, was revived` },
    });
  }
}

/** Revives what can be revived (at most `options.limit` tasks), in one write transaction. */
export function reviveTasks(store: SqliteStore, options: RevivalOptions): Revival[] {
  // Most sweeps find no failed task: they should not take the write lock from the workers.
  if (store.stmt("SELECT 1 FROM tasks WHERE status = 'failed' LIMIT 1").get() === undefined) {
    return [];
  }
  return store.write(() => {
    const now = store.clock.now();
    const revived: Revival[] = [];
    const touched = new Set<string>();
    // Many failed tasks share a breaker: read each breaker once per sweep.
    const breakers = new Map<string, BreakerRecord | null>();
    const breakerOf = (name: string) => {
      if (!breakers.has(name)) breakers.set(name, getBreakerRow(store, name));
      return breakers.get(name)!;
    };
    /** Probes each half-open breaker still wants, counted down as tasks are revived as probes. */
    const slots = new Map<string, number>();
    for (const r of candidates(store, options.maxRevivals)) {
      if (revived.length >= options.limit) break;
      const task = rowToTask(r);
      const breaker = task.breaker === null ? null : breakerOf(task.breaker);
      if (breaker?.status === "half_open" && !slots.has(breaker.id)) {
        const queued = store
          .stmt("SELECT COUNT(*) AS n FROM tasks WHERE breaker = ? AND status = 'queued'")
          .get(breaker.id) as { n: number };
        const waiting = queued.n + runningProbes(store, breaker);
        slots.set(breaker.id, Math.max(0, breaker.config.halfOpenMaxCalls - waiting));
      }
      const probes = breaker ? (slots.get(breaker.id) ?? 0) : 0;
      const evidence = revivalEvidence(task, breaker, now, options.rateLimitWindowMs, probes);
      if (!evidence || evidence.confidence < options.minConfidence) continue;
      if (breaker?.status === "half_open") slots.set(breaker.id, probes - 1);
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
          deadlineMs: restartedDeadline(task, now),
          escalation: null,
        },
        event: "task_revived",
        actor: "monitor",
        workstreamId: task.workstreamId,
        detail: { cause: evidence.cause, confidence: evidence.confidence, revival },
      });
      // A non-critical failure had let its dependents run; they wait for it again.
      if (!task.critical) store.holdDependents(task.id, "monitor");
      else reopenStopped(store, task.workstreamId, task.key);
      touched.add(task.workstreamId);
      revived.push({ taskId: task.id, workstreamId: task.workstreamId, ...evidence, revival });
    }
    for (const ws of touched) store.reconcileWorkstream(ws, "monitor");
    if (revived.length > 0) store.wake();
    return revived;
  });
}
