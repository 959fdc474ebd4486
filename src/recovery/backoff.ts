/**
 * Retry delays as a pure function of the rule, the retry number and an injected random source.
 */
import { MendError } from "../errors.js";
import type { RetryRule } from "../model/spec.js";

/**
 * The delay before retry number `retryNumber` (1 = the first retry), in whole milliseconds,
 * always within `[0, maxDelayMs]`.
 *
 * The un-jittered delay `d` comes from `scheduleMs` when it is non-empty (entry `retryNumber - 1`,
 * the last one repeating), otherwise from the backoff shape:
 * - `constant`: `initialMs`
 * - `linear`: `initialMs + (retryNumber - 1) × initialMs × factor` (factor 1 gives 1×, 2×, 3×…)
 * - `exponential`: `initialMs × factor^(retryNumber - 1)`
 * - `fibonacci`: `initialMs × 1, 2, 3, 5, 8…`
 * - `custom`: the caller supplies the delay; here it falls back to `exponential`.
 *
 * `d` is capped at `maxDelayMs`, then jittered with `random()` in `[0, 1)`:
 * - `none`: `d`; `full`: `[0, d]`; `equal`: `[d/2, d]`
 * - `decorrelated` (AWS "Exponential Backoff and Jitter"): replaces the shape with a draw from
 *   `[initialMs, 3 × prev]`, where `prev` is `prevDelayMs` (the last delay used) or `initialMs`,
 *   then capped at `maxDelayMs`.
 *
 * @throws MendError `invalid_argument` when `retryNumber` is not a whole number from 1.
 */
export function backoffDelay(
  rule: RetryRule,
  retryNumber: number,
  prevDelayMs: number | null,
  random: () => number,
): number {
  if (!Number.isInteger(retryNumber) || retryNumber < 1) {
    throw new MendError(
      "invalid_argument",
      `retry number must be a whole number from 1, got ${retryNumber}`,
      { retryNumber },
    );
  }
  const maxMs = Math.max(0, Math.floor(rule.maxDelayMs));
  const delay = clamp(baseDelay(rule, retryNumber, maxMs), maxMs);
  return Math.round(clamp(jitter(rule, delay, prevDelayMs, random), maxMs));
}

/** NaN (e.g. `0 × Infinity`) counts as no delay; overflow to Infinity hits the cap. */
function clamp(ms: number, maxMs: number): number {
  return Number.isNaN(ms) ? 0 : Math.min(Math.max(ms, 0), maxMs);
}

function baseDelay(rule: RetryRule, retryNumber: number, maxMs: number): number {
  const schedule = rule.scheduleMs;
  if (schedule !== undefined && schedule.length > 0) {
    return schedule[Math.min(retryNumber, schedule.length) - 1]!;
  }
  switch (rule.backoff) {
    case "constant":
      return rule.initialMs;
    case "linear":
      return rule.initialMs * (1 + (retryNumber - 1) * rule.factor);
    case "fibonacci":
      return rule.initialMs * fibonacci(retryNumber, maxMs / rule.initialMs);
    case "exponential":
    case "custom":
      return rule.initialMs * rule.factor ** (retryNumber - 1);
  }
}

/** The n-th term of 1, 2, 3, 5, 8…, stopping early once it reaches `limit` (it is capped anyway). */
function fibonacci(n: number, limit: number): number {
  let current = 1;
  let next = 2;
  for (let i = 1; i < n && current < limit; i++) {
    [current, next] = [next, current + next];
  }
  return current;
}

function jitter(
  rule: RetryRule,
  delay: number,
  prevDelayMs: number | null,
  random: () => number,
): number {
  switch (rule.jitter) {
    case "none":
      return delay;
    case "full":
      return random() * delay;
    case "equal":
      return delay / 2 + (random() * delay) / 2;
    case "decorrelated": {
      // A previous delay below initialMs / 3 would invert the range.
      const high = Math.max(rule.initialMs, 3 * (prevDelayMs ?? rule.initialMs));
      return rule.initialMs + random() * (high - rule.initialMs);
    }
  }
}
