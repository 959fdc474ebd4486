/**
 * What follows from a task's change inside the same transaction: a failure goes through the
 * planner (retry, fallback, or a permanent failure with its escalation), a finished task lets
 * its dependents run, and a workstream's status follows its tasks.
 */
import type { Failure } from "../../model/failure.js";
import type { TaskRecord } from "../../model/records.js";
import type { FallbackOption } from "../../model/spec.js";
import type { EventName } from "../../observe/events.js";
import { countsForBreaker } from "../../recovery/breaker.js";
import { chooseFallback } from "../../recovery/fallback.js";
import type { FailureDecision } from "../../recovery/retry.js";
import type { FailurePlanner } from "../store.js";
import { recordBreakerOutcome } from "./breakers.js";
import { onWorkstreamEnded } from "./compensation.js";
import { escalationOf } from "./escalation.js";
import { SATISFIED_SQL, type Tx } from "./tx.js";

/**
 * The patch that ends a task's lease, and with it the attempt's progress and stall marks (every
 * attempt starts unstalled) and the resources it held (invariant 6: a task that is not running
 * holds none, and the hold ends in the transition that ends the attempt, so a crash cannot leak
 * it). `stalledAt` and `held` are written (and logged) whether or not they were set, so that
 * every attempt's end has one shape, which the set-based exchange batches.
 */
export const RELEASED_LEASE = {
  leaseToken: null,
  leaseWorker: null,
  leaseExpiresAt: null,
  progressAt: null,
  stalledAt: null,
  held: null,
} as const;

/** Why a workstream that stops on failure cancelled its open tasks (revival looks for it). */
export function stopReason(criticalKey: string): string {
  return `critical task ${criticalKey} failed`;
}

/** Records a running task's failure and what the planner decided about it. */
export async function applyFailure(
  tx: Tx,
  row: TaskRecord,
  failure: Failure,
  planner: FailurePlanner,
  actor: string,
): Promise<FailureDecision> {
  const now = tx.now();
  if (row.breaker !== null && countsForBreaker(failure)) {
    await recordBreakerOutcome(tx, row.breaker, false, actor, row.id);
  }
  const planned = planner(row, failure, now);
  const fallback = planned.action === "fail" ? await fallbackFor(tx, row, failure, now) : null;
  const decision: FailureDecision = fallback
    ? {
        action: "fallback",
        handler: fallback.handler,
        runAt: now,
        reason: `${planned.reason}; switching from ${row.handler} to fallback ${fallback.handler}`,
      }
    : planned;
  const streak = failure.category === "worker_lost" ? row.workerLostStreak + 1 : 0;
  const detail = { attempt: row.attempts, failure, decision, worker: row.leaseWorker };
  if (fallback) {
    await tx.transition({
      kind: "task",
      id: row.id,
      from: "running",
      to: "queued",
      patch: {
        handler: fallback.handler,
        // The fallback's own breaker, if any: the primary's may be open for its outage.
        breaker: fallback.breaker ?? null,
        fallbacks: { ...row.fallbacks!, tried: [...row.fallbacks!.tried, row.handler] },
        attempts: 0,
        runAt: now,
        lastDelayMs: null,
        lastError: failure,
        workerLostStreak: streak,
        ...RELEASED_LEASE,
      },
      event: "task_fallback",
      actor,
      workstreamId: row.workstreamId,
      detail: { ...detail, from: row.handler, to: fallback.handler },
    });
    tx.wake();
    return decision;
  }
  if (decision.action === "retry") {
    await tx.transition({
      kind: "task",
      id: row.id,
      from: "running",
      to: "queued",
      patch: {
        runAt: decision.runAt,
        lastDelayMs: decision.delayMs,
        lastError: failure,
        workerLostStreak: streak,
        ...RELEASED_LEASE,
      },
      event:
        failure.category === "worker_lost"
          ? "worker_lost"
          : failure.category === "timeout"
            ? "task_timeout"
            : "task_retry_scheduled",
      actor,
      workstreamId: row.workstreamId,
      detail,
    });
    tx.wake();
    return decision;
  }
  await failTask(tx, row, "running", { lastError: failure, workerLostStreak: streak }, actor, {
    event: decision.action === "quarantine" ? "task_quarantined" : undefined,
    detail,
  });
  return decision;
}

/**
 * Records a task's permanent failure and what follows from it: a non-critical task lets its
 * dependents run; a critical one in a `stop` workstream cancels the work still waiting.
 */
export async function failTask(
  tx: Tx,
  row: TaskRecord,
  from: "running" | "queued",
  patch: Record<string, unknown>,
  actor: string,
  record: { event?: EventName; detail: Record<string, unknown> },
): Promise<void> {
  const failed: TaskRecord = { ...row, ...patch, ...RELEASED_LEASE, status: "failed" };
  await tx.transition({
    kind: "task",
    id: row.id,
    from,
    to: "failed",
    patch: { ...patch, ...RELEASED_LEASE, escalation: await escalationOf(tx, failed) },
    event: record.event ?? (row.critical ? "task_failed" : "task_failed_noncritical"),
    actor,
    workstreamId: row.workstreamId,
    detail: record.detail,
  });
  if (!row.critical) {
    await promoteDependents(tx, row.id, actor);
  } else if ((await tx.getWorkstreamRow(row.workstreamId))?.onFailure === "stop") {
    await cancelOpenTasks(tx, row.workstreamId, actor, stopReason(row.key));
  }
}

/** The fallback handler a task that failed for good switches to, if it has one left. */
async function fallbackFor(
  tx: Tx,
  row: TaskRecord,
  failure: Failure,
  now: number,
): Promise<FallbackOption | null> {
  if (row.fallbacks === null) return null;
  // The loads are read first: the selector is synchronous.
  const loads = new Map<string, number>();
  if (row.fallbacks.selector === "least_loaded") {
    for (const o of row.fallbacks.options) {
      const r = await tx.get<{ n: number }>(
        "SELECT COUNT(*) AS n FROM tasks WHERE status = 'running' AND handler = ?",
        [o.handler],
      );
      loads.set(o.handler, r!.n);
    }
  }
  return chooseFallback({
    plan: row.fallbacks,
    current: row.handler,
    failure,
    elapsedMs: now - row.createdAt,
    random: Math.random,
    load: (handler) => loads.get(handler) ?? 0,
  });
}

/** Queues every pending dependent of `taskId` whose dependencies are now all satisfied. */
export async function promoteDependents(tx: Tx, taskId: string, actor: string): Promise<void> {
  const candidates = await tx.all<{ id: string; workstream_id: string }>(
    `SELECT t.id, t.workstream_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.status = 'pending'`,
    [taskId],
  );
  for (const c of candidates) {
    if (!(await tx.depsSatisfied(c.id))) continue;
    await tx.transition({
      kind: "task",
      id: c.id,
      from: "pending",
      to: "queued",
      patch: { runAt: tx.now() },
      event: "task_ready",
      actor,
      workstreamId: c.workstream_id,
    });
    tx.wake();
  }
}

/** A reopened dependency no longer satisfies its dependents: queued ones wait again. */
export async function holdDependents(tx: Tx, taskId: string, actor: string): Promise<void> {
  const queued = await tx.all<{ id: string; workstream_id: string }>(
    `SELECT t.id, t.workstream_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.status = 'queued'`,
    [taskId],
  );
  for (const t of queued) {
    await tx.transition({
      kind: "task",
      id: t.id,
      from: "queued",
      to: "pending",
      patch: {},
      event: "task_waiting",
      actor,
      workstreamId: t.workstream_id,
      detail: { reason: `dependency ${taskId} was reopened` },
    });
  }
}

/** Cancels a workstream's pending and queued tasks. */
export async function cancelOpenTasks(
  tx: Tx,
  workstreamId: string,
  actor: string,
  reason: string,
): Promise<void> {
  const open = await tx.all<{ id: string; status: string }>(
    `SELECT id, status FROM tasks WHERE workstream_id = ? AND status IN ('pending','queued')`,
    [workstreamId],
  );
  for (const t of open) {
    await tx.transition({
      kind: "task",
      id: t.id,
      from: t.status,
      to: "cancelled",
      patch: {},
      event: "task_cancelled",
      actor,
      workstreamId,
      detail: { reason },
    });
  }
}

/**
 * Brings a workstream's status in line with its tasks: an active one with nothing queued or
 * running has settled (completed if every task is satisfied, else failed); a settled one that
 * has work again (an operator retried or skipped a task) is active again.
 */
export async function reconcileWorkstream(
  tx: Tx,
  workstreamId: string,
  actor: string,
): Promise<void> {
  const ws = await tx.getWorkstreamRow(workstreamId);
  if (!ws) return;
  const live = await tx.get(
    `SELECT 1 AS n FROM tasks WHERE workstream_id = ? AND status IN ('queued','running') LIMIT 1`,
    [workstreamId],
  );
  if (live) {
    if (ws.status !== "active") {
      await tx.transition({
        kind: "workstream",
        id: ws.id,
        from: ws.status,
        to: "active",
        patch: {},
        event: "workstream_reopened",
        actor,
        workstreamId: ws.id,
      });
    }
    return;
  }
  if (ws.status !== "active" && ws.status !== "failed") return;
  const unsatisfied = await tx.get<{ n: number }>(
    `SELECT COUNT(*) AS n FROM tasks t WHERE t.workstream_id = ? AND NOT ${SATISFIED_SQL}`,
    [workstreamId],
  );
  const to = unsatisfied!.n === 0 ? "completed" : "failed";
  if (to === ws.status) return;
  await tx.transition({
    kind: "workstream",
    id: ws.id,
    from: ws.status,
    to,
    patch: {},
    event: to === "completed" ? "workstream_completed" : "workstream_failed",
    actor,
    workstreamId: ws.id,
    detail: to === "failed" ? { unsatisfiedTasks: unsatisfied!.n } : null,
  });
  // In the same transaction: a failure its policy compensates, or a compensation that is done.
  await onWorkstreamEnded(tx, { ...ws, status: to }, actor);
}
