/**
 * The monitor's revival sweep on the SQL stores: failed tasks whose cause has cleared are queued
 * again, each as one transition (`task_revived`) with the evidence and its confidence.
 */
import type { BreakerRecord, ResourceRecord } from "../../model/records.js";
import { restartedDeadline, revivalEvidence } from "../../recovery/revive.js";
import type { Revival, RevivalOptions } from "../store.js";
import { getResourceRow } from "./resources.js";
import { getBreakerRow, runningProbes } from "./breakers.js";
import { rowToTask } from "./codec.js";
import { holdDependents, reconcileWorkstream, stopReason } from "./lifecycle.js";
import type { Row } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

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
async function* candidates(tx: Tx, maxRevivals: number): AsyncGenerator<Row> {
  const recoverable = tx.store.dialect.jsonFlag("t.last_error", ["recoverable"]);
  let after: [number, string] = [-1, ""];
  for (let scanned = 0; scanned < MAX_SCANNED; scanned += PAGE) {
    const page = await tx.all(
      `SELECT t.* FROM tasks t JOIN workstreams w ON w.id = t.workstream_id
       WHERE t.status = 'failed' AND t.revivals < ? AND w.revive = 1
         AND w.status IN ('active', 'failed')
         AND ${recoverable} = 1
         AND (t.updated_at, t.id) > (?, ?)
       ORDER BY t.updated_at, t.id LIMIT ${PAGE}`,
      [maxRevivals, after[0], after[1]],
    );
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
async function reopenStopped(tx: Tx, workstreamId: string, key: string): Promise<void> {
  const stopped = await tx.all<{ id: string }>(
    `SELECT DISTINCT r.entity_id AS id FROM transitions r JOIN tasks t ON t.id = r.entity_id
     WHERE r.workstream_id = ? AND r.event = 'task_cancelled' AND t.status = 'cancelled'
       AND ${tx.store.dialect.jsonText("r.detail", ["reason"])} = ?`,
    [workstreamId, stopReason(key)],
  );
  for (const { id } of stopped) {
    await tx.transition({
      kind: "task",
      id,
      from: "cancelled",
      to: (await tx.depsSatisfied(id)) ? "queued" : "pending",
      patch: { runAt: tx.now() },
      event: "task_reset",
      actor: "monitor",
      workstreamId,
      detail: { reason: `critical task ${key}, whose failure stopped it, was revived` },
    });
  }
}

/** Revives what can be revived (at most `options.limit` tasks), in one write transaction. */
export async function reviveTasks(store: SqlStore, options: RevivalOptions): Promise<Revival[]> {
  // Most sweeps find no failed task: they should not take the write lock from the workers.
  if (
    (await store.q.get("SELECT 1 AS n FROM tasks WHERE status = 'failed' LIMIT 1")) === undefined
  ) {
    return [];
  }
  return store.write(async (tx) => {
    const now = tx.now();
    const revived: Revival[] = [];
    const touched = new Set<string>();
    // Many failed tasks share a breaker: read each breaker once per sweep.
    const breakers = new Map<string, BreakerRecord | null>();
    const breakerOf = async (name: string) => {
      if (!breakers.has(name)) breakers.set(name, await getBreakerRow(tx, name));
      return breakers.get(name)!;
    };
    const resources = new Map<string, ResourceRecord | null>();
    const resourcesOf = async (needs: string[][]) => {
      const out = new Map<string, ResourceRecord>();
      for (const id of needs.flat()) {
        if (!resources.has(id)) resources.set(id, await getResourceRow(tx, id));
        const r = resources.get(id);
        if (r) out.set(id, r);
      }
      return out;
    };
    /** Probes each half-open breaker still wants, counted down as tasks are revived as probes. */
    const slots = new Map<string, number>();
    for await (const r of candidates(tx, options.maxRevivals)) {
      if (revived.length >= options.limit) break;
      const task = rowToTask(r);
      const breaker = task.breaker === null ? null : await breakerOf(task.breaker);
      if (breaker?.status === "half_open" && !slots.has(breaker.id)) {
        const queued = await tx.get<{ n: number }>(
          "SELECT COUNT(*) AS n FROM tasks WHERE breaker = ? AND status = 'queued'",
          [breaker.id],
        );
        const waiting = queued!.n + (await runningProbes(tx, breaker));
        slots.set(breaker.id, Math.max(0, breaker.config.halfOpenMaxCalls - waiting));
      }
      const probes = breaker ? (slots.get(breaker.id) ?? 0) : 0;
      const evidence = revivalEvidence(
        task,
        breaker,
        now,
        options.rateLimitWindowMs,
        probes,
        task.resources === null ? new Map() : await resourcesOf(task.resources),
        task.resources,
      );
      if (!evidence || evidence.confidence < options.minConfidence) continue;
      if (breaker?.status === "half_open") slots.set(breaker.id, probes - 1);
      const ready = await tx.depsSatisfied(task.id);
      const revival = task.revivals + 1;
      await tx.transition({
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
      if (!task.critical) await holdDependents(tx, task.id, "monitor");
      else await reopenStopped(tx, task.workstreamId, task.key);
      touched.add(task.workstreamId);
      revived.push({ taskId: task.id, workstreamId: task.workstreamId, ...evidence, revival });
    }
    for (const ws of touched) await reconcileWorkstream(tx, ws, "monitor");
    if (revived.length > 0) tx.wake();
    return revived;
  });
}
