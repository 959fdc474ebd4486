import type { FailureCategory } from "./failure.js";

/** Backoff shapes a retry policy can take. `custom` is only available through the TypeScript API. */
export type BackoffKind = "constant" | "linear" | "exponential" | "fibonacci" | "custom";
/** Jitter applied to a computed delay. */
export type JitterKind = "none" | "full" | "equal" | "decorrelated";

/** The tunable part of a retry policy, all durations in milliseconds. */
export interface RetryRule {
  /** Total attempts including the first one (not "retries"). */
  maxAttempts: number;
  backoff: BackoffKind;
  /** First delay. */
  initialMs: number;
  /** Multiplier for exponential, step multiplier for linear. */
  factor: number;
  /** Upper bound on any delay, including one asked for by `Retry-After`. */
  maxDelayMs: number;
  jitter: JitterKind;
  /** Explicit delays per retry (index 0 = after attempt 1); the last one repeats. Overrides `backoff`. */
  scheduleMs?: number[];
}

/** A normalized retry policy: a base rule plus per-category overrides. JSON-serializable. */
export interface RetryPolicy extends RetryRule {
  categories?: Partial<Record<FailureCategory, Partial<RetryRule>>>;
}

/**
 * A circuit breaker's settings (durations in ms). In `consecutive` mode it opens after
 * `failureThreshold` counted failures in a row; in `rate` mode when at least `minimumCalls`
 * outcomes in the last `windowMs` include a share of failures of `failureRate` or more. It stays
 * open `openMs`, then lets up to `halfOpenMaxCalls` probes run at once and closes after
 * `successThreshold` of them succeed; a failed probe opens it again.
 */
export interface BreakerConfig {
  mode: "consecutive" | "rate";
  failureThreshold: number;
  failureRate: number;
  windowMs: number;
  minimumCalls: number;
  openMs: number;
  halfOpenMaxCalls: number;
  successThreshold: number;
}

/** How the next fallback is chosen among those whose conditions match. */
export type FallbackSelector = "sequential" | "best_quality" | "random" | "least_loaded";

/** One alternative handler and when it may be used. */
export interface FallbackOption {
  handler: string;
  /** Failure categories it answers; empty: any. */
  on: FailureCategory[];
  /** Only when the failed result's quality was below this. */
  qualityBelow?: number;
  /** Only once this long has passed since the task first started, in ms. */
  afterMs?: number;
  /** Multiplies the quality its results report (default 1). */
  quality: number;
  /** The circuit breaker guarding this handler's calls (not the task's own). */
  breaker?: string;
}

/** A task's fallbacks and which handlers it has run so far (its own first). */
export interface FallbackPlan {
  selector: FallbackSelector;
  options: FallbackOption[];
  tried: string[];
}

/** How a completed task's effects are undone: another handler run with its input and output. */
export interface CompensationSpec {
  handler: string;
  /** Idempotent compensations are retried; others run once, bounded by `timeoutMs`. */
  idempotent: boolean;
  timeoutMs: number;
}

/** When a workstream's completed tasks are compensated, and in which order. */
export interface CompensationPolicy {
  on: ("failed" | "cancelled")[];
  order: "reverse" | "parallel" | "dependency";
}

/** A validated, normalized task of a workstream, ready to be stored. */
export interface TaskSpec {
  /** The id as written in the definition, unique within its workstream. */
  key: string;
  handler: string;
  input: unknown;
  /** Keys of the tasks this one depends on. */
  deps: string[];
  /** Higher runs first. Default 0. */
  priority: number;
  retry: RetryPolicy;
  timeoutMs: number;
  /** Overall deadline from submission across all attempts, in ms; null for none. */
  deadlineMs: number | null;
  /** A critical task's permanent failure blocks its dependents (default true). */
  critical: boolean;
  /** Name of the circuit breaker guarding it. */
  breaker: string | null;
  fallbacks: Omit<FallbackPlan, "tried"> | null;
  compensation: CompensationSpec | null;
  qualityThreshold: number | null;
  /** Capabilities a worker must all have to claim the task (sorted, no repeats); null for none. */
  requires: string[] | null;
  /**
   * Running this long without progress (heartbeat details or `ctx.progress()`) is reported as
   * `task_stalled`, in ms; null for the monitor's default (30 minutes).
   */
  stallAfterMs: number | null;
  /**
   * Resources the task must hold to run: each need is met by one of its resources, the first in
   * order that is available with a free slot (the rest are alternatives); null for none.
   */
  resources: string[][] | null;
}

/** A resource's settings (a named capacity). */
export interface ResourceConfig {
  /** Most tasks that may hold it at once. */
  maxHolders: number;
}

/** What the rest of a workstream does after a critical task fails for good. */
export type OnFailure = "continue" | "stop";

/** A validated, normalized workstream definition. */
export interface WorkstreamSpec {
  name: string;
  onFailure: OnFailure;
  /** Revive failed tasks automatically once their cause clears (default true). */
  revive: boolean;
  compensation: CompensationPolicy;
  /**
   * The breakers its tasks name: the settings the definition gives (defaults filled in), or null
   * for a breaker named without settings (it keeps the ones it has, or gets the defaults).
   */
  breakers: Record<string, BreakerConfig | null>;
  /**
   * The resources its tasks need: the settings the definition gives, or null for one named
   * without settings (it keeps its limit, or is created with one holder).
   */
  resources: Record<string, ResourceConfig | null>;
  tasks: TaskSpec[];
}
