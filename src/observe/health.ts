/**
 * Health scores: one number in [0, 1] for the system, each worker and each workstream, computed
 * from the recovery episodes and failed attempts that `computeMetrics` (metrics.ts) attributes to
 * it. The formula is seed 003's ("Recovery Metrics"), with its undefined cases given values so
 * that a score always exists and is never NaN. See docs/metrics.md.
 *
 * @module
 */

/** What one scope's health is computed from, over one window. */
export interface HealthInputs {
  /** Failure episodes that ended in the window: recovered, or settled without recovering. */
  ended: number;
  /** Of `ended`, those that recovered (the task completed and released its lease). */
  recovered: number;
  /** Sum of the recovered episodes' durations, in seconds. */
  recoverySeconds: number;
  /** Failed attempts in the window. */
  failures: number;
}

/** Weights of the three terms; they sum to 1, so the score stays in [0, 1]. */
export const HEALTH_WEIGHTS = { success: 0.5, speed: 0.3, calm: 0.2 } as const;

/** Shortest window a rate is taken over: a burst in a tiny window must not read as a huge rate. */
export const MIN_RATE_WINDOW_MS = 60_000;

/** Inputs of a scope that saw nothing yet. */
export function emptyHealthInputs(): HealthInputs {
  return { ended: 0, recovered: 0, recoverySeconds: 0, failures: 0 };
}

/**
 * Failed attempts per minute over a window of `windowMs` milliseconds; windows shorter than
 * {@link MIN_RATE_WINDOW_MS} count as one minute, which also defines the zero-length window.
 */
export function failuresPerMinute(failures: number, windowMs: number): number {
  return failures / (Math.max(windowMs, MIN_RATE_WINDOW_MS) / 60_000);
}

/**
 * The health score, rounded to 3 decimals:
 * `0.5 × successRate + 0.3 × 1/(1 + meanRecoverySeconds) + 0.2 × 1/(1 + failuresPerMinute)`.
 *
 * - `successRate` = recovered / ended episodes (manual recoveries count: the task did recover);
 *   1 when no episode ended, since nothing has failed to recover yet.
 * - `meanRecoverySeconds` = mean duration of the recovered episodes, in seconds. When no episode
 *   ended the term is 1 (as if 0 s); when episodes ended but none recovered it is 0 (the recovery
 *   time is unbounded), so a scope that never recovers does not earn the speed term for free.
 * - `failuresPerMinute` = {@link failuresPerMinute} of the scope's failed attempts.
 *
 * @param windowMs - length of the window the inputs were counted over, in milliseconds.
 */
export function healthScore(inputs: HealthInputs, windowMs: number): number {
  const { ended, recovered, recoverySeconds, failures } = inputs;
  const success = ended === 0 ? 1 : recovered / ended;
  const speed = ended === 0 ? 1 : recovered === 0 ? 0 : 1 / (1 + recoverySeconds / recovered);
  const calm = 1 / (1 + failuresPerMinute(failures, windowMs));
  const score =
    HEALTH_WEIGHTS.success * success + HEALTH_WEIGHTS.speed * speed + HEALTH_WEIGHTS.calm * calm;
  return Math.round(score * 1000) / 1000;
}
