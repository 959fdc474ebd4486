/**
 * Fallbacks: which alternative handler a task runs next when its current one has failed for good.
 * Pure; the store calls it inside the transaction that records the failure.
 */
import type { Failure } from "../model/failure.js";
import type { FallbackOption, FallbackPlan } from "../model/spec.js";

/** What {@link chooseFallback} needs to know about the failed task. */
export interface FallbackInput {
  plan: FallbackPlan;
  /** The handler that just failed. */
  current: string;
  failure: Failure;
  /** Time since the task was submitted, in ms. */
  elapsedMs: number;
  /** Uniform in `[0, 1)`, for the `random` selector. */
  random: () => number;
  /** Tasks running now per handler, for the `least_loaded` selector. */
  load: (handler: string) => number;
}

/** Whether an option's conditions all hold for this failure. */
export function fallbackMatches(
  option: FallbackOption,
  failure: Failure,
  elapsedMs: number,
): boolean {
  if (option.on.length > 0 && !option.on.includes(failure.category)) return false;
  if (option.qualityBelow !== undefined) {
    if (failure.quality === undefined || failure.quality >= option.qualityBelow) return false;
  }
  if (option.afterMs !== undefined && elapsedMs < option.afterMs) return false;
  return true;
}

/**
 * The next handler to try: among the options not tried yet whose conditions hold, the first
 * (`sequential`), the one with the highest quality factor (`best_quality`, ties in order), one at
 * random, or the one with the fewest running tasks (`least_loaded`, ties in order). Null when
 * none is left.
 */
export function chooseFallback(input: FallbackInput): FallbackOption | null {
  const { plan, failure, elapsedMs } = input;
  const tried = new Set([...plan.tried, input.current]);
  const candidates = plan.options.filter(
    (o) => !tried.has(o.handler) && fallbackMatches(o, failure, elapsedMs),
  );
  if (candidates.length === 0) return null;
  switch (plan.selector) {
    case "sequential":
      return candidates[0]!;
    case "best_quality":
      return candidates.reduce((best, o) => (o.quality > best.quality ? o : best));
    case "random":
      return candidates[
        Math.min(candidates.length - 1, Math.floor(input.random() * candidates.length))
      ]!;
    case "least_loaded": {
      const loads = candidates.map((o) => input.load(o.handler));
      return candidates[loads.indexOf(Math.min(...loads))]!;
    }
  }
}

/** The quality factor of `handler` under a plan: its option's, or 1 for the task's own handler. */
export function qualityFactor(plan: FallbackPlan | null, handler: string): number {
  return plan?.options.find((o) => o.handler === handler)?.quality ?? 1;
}
