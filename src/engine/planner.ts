import type { Failure } from "../model/failure.js";
import { planFailure } from "../recovery/retry.js";
import type { FailurePlanner } from "../store/store.js";

/** Options for {@link createPlanner}. */
export interface PlannerOptions {
  /** Source of jitter, in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** A task that lost its worker this many times in a row is quarantined (default 3). */
  quarantineAfter?: number;
  /** Custom backoff functions by handler name (from `defineTask({ retry: { customDelay } })`). */
  customDelay?: (
    handler: string,
  ) => ((retryNumber: number, failure: Failure) => number) | undefined;
}

/**
 * The failure planner the store calls inside its transaction: it feeds the stored task (attempts,
 * retry policy, last delay, worker-lost streak) to the retry policy.
 */
export function createPlanner(options: PlannerOptions = {}): FailurePlanner {
  const random = options.random ?? Math.random;
  return (task, failure, now) =>
    planFailure({
      attempt: task.attempts,
      policy: task.retry,
      failure,
      lastDelayMs: task.lastDelayMs,
      workerLostStreak: failure.category === "worker_lost" ? task.workerLostStreak + 1 : 0,
      now,
      random,
      customDelay: options.customDelay?.(task.handler),
      quarantineAfter: options.quarantineAfter ?? 3,
      deadlineAt: task.deadlineMs === null ? undefined : task.createdAt + task.deadlineMs,
    });
}
