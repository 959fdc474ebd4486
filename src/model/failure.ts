/** Failure categories (DESIGN.md "Failure taxonomy"). */
export const FAILURE_CATEGORIES = [
  "network",
  "rate_limited",
  "external_service",
  "timeout",
  "resource_exhausted",
  "worker_lost",
  "tool_failure",
  "quality",
  "invalid_state",
  "coordination",
  "logic",
  "data_corruption",
  "unknown",
] as const;
export type FailureCategory = (typeof FAILURE_CATEGORIES)[number];

/**
 * A classified error, as data: serializable into the transition log and shown by `mend show`.
 */
export interface Failure {
  category: FailureCategory;
  recoverable: boolean;
  message: string;
  /** Error class name, e.g. `TypeError`. */
  name?: string;
  /** Node or library error code, e.g. `ECONNRESET`. */
  code?: string;
  /** HTTP status, when the error carried one. */
  status?: number;
  /** Delay the failing service asked for (Retry-After), in ms. */
  retryAfterMs?: number;
  /** For a `quality` failure: the quality the result had. */
  quality?: number;
}

/** Builds a failure record; the single place that shapes one. */
export function failure(
  category: FailureCategory,
  recoverable: boolean,
  message: string,
  extra: Omit<Failure, "category" | "recoverable" | "message"> = {},
): Failure {
  return { category, recoverable, message, ...extra };
}
