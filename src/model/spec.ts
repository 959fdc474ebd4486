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
  /** A critical task's permanent failure blocks its dependents (default true). */
  critical: boolean;
}

/** What the rest of a workstream does after a critical task fails for good. */
export type OnFailure = "continue" | "stop";

/** A validated, normalized workstream definition. */
export interface WorkstreamSpec {
  name: string;
  onFailure: OnFailure;
  tasks: TaskSpec[];
}
