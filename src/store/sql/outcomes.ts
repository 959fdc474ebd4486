/**
 * What settling a worker's outcomes and claiming tasks write, as changes: shared by the general
 * exchange and the PostgreSQL store's set-based one, so both record exactly the same.
 */
import { failure } from "../../model/failure.js";
import type { TaskRecord } from "../../model/records.js";
import type { FallbackPlan } from "../../model/spec.js";
import { qualityFactor } from "../../recovery/fallback.js";
import type { ClaimedTask, ExchangeRequest, Outcome, Settlement } from "../store.js";
import { RELEASED_LEASE } from "./lifecycle.js";
import type { Reallocation } from "./resources.js";
import type { Change } from "./tx.js";

/** The columns {@link HeldRow} reads. */
export const HELD_COLUMNS = `id, workstream_id AS "workstreamId", status, lease_token AS "leaseToken", lease_worker AS "leaseWorker", attempts, breaker, handler, quality_threshold AS "qualityThreshold", fallbacks, revivals`;

/** The columns of a running task that settling an outcome needs. */
export type HeldRow = Pick<
  TaskRecord,
  | "id"
  | "workstreamId"
  | "status"
  | "leaseToken"
  | "leaseWorker"
  | "attempts"
  | "breaker"
  | "handler"
  | "qualityThreshold"
  | "revivals"
> & { fallbacks: string | null };

export type ClaimRow = Omit<ClaimedTask, "leaseToken" | "input"> & {
  input: string | null;
  deadlineAt: number | null;
  /** The task's resource needs, as stored (JSON), or null. */
  resources: string | null;
};

/**
 * A completion whose quality (scaled by the fallback's factor) is below the task's threshold is
 * a `quality` failure; otherwise the outcome with its scaled quality.
 */
export function judgeQuality(o: Outcome, row: HeldRow, plan: FallbackPlan | null): Outcome {
  if (o.kind !== "complete" || o.quality === undefined) return o;
  const quality = o.quality * qualityFactor(plan, row.handler);
  if (row.qualityThreshold !== null && quality < row.qualityThreshold) {
    return {
      kind: "fail",
      taskId: o.taskId,
      token: o.token,
      failure: failure(
        "quality",
        true,
        `result quality ${quality.toFixed(2)} is below the task's threshold ${row.qualityThreshold}`,
        { quality },
      ),
    };
  }
  return { ...o, quality };
}

/**
 * Why an outcome is refused, or null when its sender holds the task's lease. Token and holder
 * both: a restore rewinds seqs, so a token alone could be granted again to another worker while
 * a stale one still holds it.
 */
export function fencingRefusal(
  o: Outcome,
  held: HeldRow | undefined,
  workerId: string,
): Settlement | null {
  if (held?.status === "running" && held.leaseToken === o.token && held.leaseWorker === workerId) {
    return null;
  }
  return {
    taskId: o.taskId,
    applied: false,
    reason: held
      ? `lease ${o.token} is no longer held: task is ${held.status}${held.leaseToken ? ` under lease ${held.leaseToken}` : ""}`
      : "task not found",
  };
}

/** A held task's completion. */
export function completionChange(
  row: HeldRow,
  outcome: Extract<Outcome, { kind: "complete" }>,
  plan: FallbackPlan | null,
  actor: string,
): Change {
  // Failed attempts in this run, or an earlier run it was revived or switched from.
  const recovered = row.attempts > 1 || row.revivals > 0 || (plan?.tried.length ?? 0) > 0;
  return {
    kind: "task",
    id: row.id,
    from: "running",
    to: "completed",
    patch: {
      output: outcome.output ?? null,
      ...(outcome.quality === undefined ? {} : { quality: outcome.quality }),
      ...RELEASED_LEASE,
      workerLostStreak: 0,
    },
    event: recovered ? "task_recovered" : "task_completed",
    actor,
    workstreamId: row.workstreamId,
    // The handler is in the record's row; the log says it too when a fallback produced it.
    detail: plan?.tried.length
      ? { attempt: row.attempts, handler: row.handler }
      : { attempt: row.attempts },
  };
}

/**
 * A ready task's claim: a new attempt under a lease with fencing token `leaseToken`, holding the
 * resources it was given (the record says which alternatives it took, and why).
 */
export function claimChange(
  r: Pick<ClaimRow, "id" | "attempts" | "workstreamId">,
  leaseToken: number,
  req: Pick<ExchangeRequest, "workerId" | "leaseMs">,
  now: number,
  given: { held: string[] | null; reallocated: Reallocation[] } = NOTHING_HELD,
): Change {
  return {
    kind: "task",
    id: r.id,
    from: "queued",
    to: "running",
    patch: {
      attempts: r.attempts + 1,
      leaseToken,
      leaseWorker: req.workerId,
      leaseExpiresAt: now + req.leaseMs,
      ...(given.held === null ? {} : { held: given.held }),
    },
    event: "task_started",
    actor: `worker:${req.workerId}`,
    workstreamId: r.workstreamId,
    detail: given.reallocated.length > 0 ? { reallocated: given.reallocated } : null,
  };
}

const NOTHING_HELD = { held: null, reallocated: [] };

/** What the claiming worker is told about a task it claimed. */
export function claimedTask(
  r: Omit<ClaimRow, "resources"> & { resources?: unknown },
  leaseToken: number,
  now: number,
): ClaimedTask {
  const { deadlineAt, resources: _resources, ...task } = r;
  return {
    ...task,
    input: r.input === null ? null : JSON.parse(r.input),
    attempts: r.attempts + 1,
    leaseToken,
    // The overall deadline bounds each attempt's own timeout.
    timeoutMs: deadlineAt === null ? r.timeoutMs : Math.min(r.timeoutMs, deadlineAt - now),
  };
}
