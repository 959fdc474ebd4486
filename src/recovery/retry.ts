/**
 * What to do after an attempt failed: retry when, fail for good, or quarantine. Pure: time and
 * randomness come in as parameters.
 */
import { MendError } from "../errors.js";
import { formatDuration } from "../model/duration.js";
import type { Failure, FailureCategory } from "../model/failure.js";
import type { RetryPolicy, RetryRule } from "../model/spec.js";
import { backoffDelay } from "./backoff.js";

/** The policy of a task that declares none: 3 attempts, 1 s doubling, full jitter, 5 min cap. */
export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxAttempts: 3,
  backoff: "exponential",
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 300_000,
  jitter: "full",
});

/** Named policies a definition can refer to. */
export const RETRY_PRESETS: Readonly<Record<string, RetryPolicy>> = Object.freeze({
  default: DEFAULT_RETRY,
  none: Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 }),
  "5m-15m-45m": Object.freeze({
    maxAttempts: 4,
    backoff: "constant",
    initialMs: 300_000,
    factor: 1,
    maxDelayMs: 2_700_000,
    jitter: "none",
    scheduleMs: Object.freeze([300_000, 900_000, 2_700_000]) as number[],
  }),
});

/**
 * Built-in behaviour of some categories, used unless the policy configures that category itself.
 * A timeout backs off 2 s, 4 s, 8 s… (DESIGN.md). A lost worker says nothing about the task's
 * dependencies, so the task runs again at once: that is what makes a SIGKILLed worker's task
 * resume within seconds.
 */
const CATEGORY_DEFAULTS: Partial<Record<FailureCategory, Partial<RetryRule>>> = {
  timeout: { backoff: "exponential", initialMs: 2000, factor: 2, jitter: "none" },
  worker_lost: { backoff: "constant", initialMs: 0, jitter: "none" },
};

/**
 * The rule that applies to failures of `category`: the policy's base rule, overlaid with the
 * policy's own `categories[category]` or, when the policy does not set that category, the
 * built-in default for it. An override that names a `backoff` without a `scheduleMs` drops the
 * base's schedule, since a schedule would otherwise override the shape it asked for.
 */
export function ruleFor(policy: RetryPolicy, category: FailureCategory): RetryRule {
  const { categories, ...base } = policy;
  const override = categories?.[category] ?? CATEGORY_DEFAULTS[category];
  if (override === undefined) return base;
  const { scheduleMs, ...rule } = { ...base, ...override };
  const dropSchedule = override.backoff !== undefined && override.scheduleMs === undefined;
  return dropSchedule || scheduleMs === undefined ? rule : { ...rule, scheduleMs };
}

/**
 * What follows a failed attempt. `runAt` is epoch ms. The planner decides retry, fail or
 * quarantine; the store turns a `fail` into a `fallback` when the task has an alternative handler
 * left for this failure.
 */
export type FailureDecision =
  | { action: "retry"; runAt: number; delayMs: number; reason: string }
  | { action: "fail"; reason: string }
  | { action: "quarantine"; reason: string }
  | { action: "fallback"; handler: string; runAt: number; reason: string };

/** Input of {@link planFailure}. */
export interface PlanFailureInput {
  /** The attempt that just failed, from 1. */
  attempt: number;
  policy: RetryPolicy;
  failure: Failure;
  /** The delay used before this attempt, for decorrelated jitter; null on the first attempt. */
  lastDelayMs: number | null;
  /** Consecutive `worker_lost` attempts, including this one when it is `worker_lost`. */
  workerLostStreak: number;
  now: number;
  /** Uniform in `[0, 1)`. */
  random: () => number;
  /** Delay for `backoff: "custom"` (no jitter is applied to it); without it, custom is exponential. */
  customDelay?: (retryNumber: number, failure: Failure) => number;
  /** `worker_lost` streak at which the task is quarantined. Default 3. */
  quarantineAfter?: number;
  /** The task's overall deadline (epoch ms): no attempt starts after it. */
  deadlineAt?: number;
}

/**
 * Decides what follows a failed attempt, in this order: quarantine a task that keeps losing its
 * worker; fail a non-recoverable failure; fail when the category's `maxAttempts` are used up;
 * otherwise retry after the backoff delay, stretched to any `Retry-After` the failure carries
 * (still capped by `maxDelayMs`).
 *
 * @throws MendError `invalid_argument` when `attempt` is not a whole number from 1, or a custom
 *   delay is not a number.
 */
export function planFailure(input: PlanFailureInput): FailureDecision {
  const { attempt, failure, workerLostStreak } = input;
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new MendError(
      "invalid_argument",
      `attempt must be a whole number from 1, got ${attempt}`,
      {
        attempt,
      },
    );
  }
  if (input.deadlineAt !== undefined && input.now >= input.deadlineAt) {
    return { action: "fail", reason: "overall deadline passed" };
  }
  const quarantineAfter = input.quarantineAfter ?? 3;
  if (failure.category === "worker_lost" && workerLostStreak >= quarantineAfter) {
    return {
      action: "quarantine",
      reason: `lost its worker ${workerLostStreak} times in a row; quarantined instead of retried`,
    };
  }
  if (!failure.recoverable) {
    return { action: "fail", reason: `not recoverable: ${failure.category}` };
  }
  const rule = ruleFor(input.policy, failure.category);
  if (attempt >= rule.maxAttempts) {
    return {
      action: "fail",
      reason: `retries exhausted after ${attempt} attempt${attempt === 1 ? "" : "s"}`,
    };
  }

  const maxMs = Math.max(0, Math.floor(rule.maxDelayMs));
  let delayMs = computeDelay(input, rule, maxMs);
  const retryAfterMs = failure.retryAfterMs;
  const askedByServer = retryAfterMs !== undefined && retryAfterMs > delayMs;
  if (askedByServer) delayMs = Math.min(Math.round(retryAfterMs), maxMs);

  if (input.deadlineAt !== undefined && input.now + delayMs >= input.deadlineAt) {
    return {
      action: "fail",
      reason: `the next retry (in ${formatDuration(delayMs)}) would start after the overall deadline`,
    };
  }
  const when = delayMs === 0 ? "at once" : `in ${formatDuration(delayMs)}`;
  return {
    action: "retry",
    runAt: input.now + delayMs,
    delayMs,
    reason:
      `${failure.category} failure; retry ${attempt} of ${rule.maxAttempts - 1} ${when}` +
      (askedByServer ? " as asked by Retry-After" : ""),
  };
}

function computeDelay(input: PlanFailureInput, rule: RetryRule, maxMs: number): number {
  if (rule.backoff !== "custom" || input.customDelay === undefined) {
    return backoffDelay(rule, input.attempt, input.lastDelayMs, input.random);
  }
  const custom = input.customDelay(input.attempt, input.failure);
  if (typeof custom !== "number" || Number.isNaN(custom)) {
    throw new MendError(
      "invalid_argument",
      `custom retry delay must be a number of milliseconds, got ${String(custom)}`,
      { value: custom },
    );
  }
  return Math.round(Math.min(Math.max(custom, 0), maxMs));
}
