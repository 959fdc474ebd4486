/**
 * Revival: deciding, from evidence in the store, that the cause of a task's permanent failure has
 * cleared so that running it again can succeed. Pure; the monitor's sweep feeds it the failed
 * tasks and what it knows about their breakers.
 */
import type { BreakerRecord, ResourceRecord, TaskRecord } from "../model/records.js";

/** How strongly each kind of evidence says a new attempt can succeed. */
export const REVIVAL_CONFIDENCE = {
  /** The task's breaker opened, was probed, and closed after the task failed. */
  breakerClosed: 0.9,
  /** The window a rate limit asked for has passed. */
  rateLimitPassed: 0.7,
  /**
   * The resources the task needs are all in service again after one was taken out (or was
   * exhausted) when it failed for lack of resources.
   */
  resourceAvailable: 0.8,
  /**
   * The task's breaker is half-open and nothing else is waiting to probe it: the task runs as a
   * probe (otherwise a breaker whose tasks all failed would never be probed, nor close).
   */
  halfOpenProbe: 0.6,
} as const;

/** Defaults of the monitor's revival sweep. */
export const DEFAULT_REVIVAL = Object.freeze({
  maxRevivals: 3,
  minConfidence: 0.5,
  rateLimitWindowMs: 60_000,
  limit: 100,
});

/** Why a task may run again, and how sure that is. */
export interface RevivalEvidence {
  cause: string;
  confidence: number;
}

/**
 * The evidence that a failed task's cause has cleared, or null. Only a recoverable failure can
 * clear by itself; a lost worker is left to quarantine (the task is the suspect, not a dependency).
 */
export function revivalEvidence(
  task: Pick<TaskRecord, "status" | "lastError" | "breaker" | "updatedAt">,
  breaker: Pick<BreakerRecord, "id" | "status" | "closedAt"> | null,
  now: number,
  rateLimitWindowMs: number,
  /** Probes a half-open breaker still wants (its probe limit less its tasks queued or running). */
  probeSlots = 0,
  /** The resources the task needs, as stored now. */
  resources: ReadonlyMap<string, Pick<ResourceRecord, "status" | "updatedAt">> = new Map(),
  needs: Pick<TaskRecord, "resources">["resources"] = null,
): RevivalEvidence | null {
  const failure = task.lastError;
  if (task.status !== "failed" || !failure?.recoverable || failure.category === "worker_lost") {
    return null;
  }
  // Closed since the failure after being open (not merely reconfigured): its probes succeeded.
  if (breaker?.status === "closed" && (breaker.closedAt ?? 0) > task.updatedAt) {
    return {
      cause: `breaker ${breaker.id} closed again`,
      confidence: REVIVAL_CONFIDENCE.breakerClosed,
    };
  }
  if (breaker?.status === "half_open" && probeSlots > 0) {
    return {
      cause: `breaker ${breaker.id} is half-open: revived as a probe`,
      confidence: REVIVAL_CONFIDENCE.halfOpenProbe,
    };
  }
  if (failure.category === "resource_exhausted" && needs !== null) {
    // Each need has a resource in service, and one of them came back since the task failed.
    const usable = needs.map((need) => need.find((r) => resources.get(r)?.status === "available"));
    const back = usable.some((r) => r && resources.get(r)!.updatedAt > task.updatedAt);
    if (usable.every((r) => r !== undefined) && back) {
      return {
        cause: `resource ${usable.join(", ")} available again`,
        confidence: REVIVAL_CONFIDENCE.resourceAvailable,
      };
    }
  }
  if (failure.category === "rate_limited") {
    const waitMs = Math.max(failure.retryAfterMs ?? 0, rateLimitWindowMs);
    if (now >= task.updatedAt + waitMs) {
      return {
        cause: `rate-limit window of ${Math.round(waitMs / 1000)} s passed`,
        confidence: REVIVAL_CONFIDENCE.rateLimitPassed,
      };
    }
  }
  return null;
}

/**
 * The deadline of a task that runs again (revived, or retried by a person): as long again from
 * now as it was from submission, since the old one may have passed while it lay failed.
 */
export function restartedDeadline(
  task: Pick<TaskRecord, "deadlineMs" | "createdAt">,
  now: number,
): number | null {
  return task.deadlineMs === null ? null : now - task.createdAt + task.deadlineMs;
}
