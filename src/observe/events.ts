import type { Severity } from "../model/records.js";

/**
 * Every event Mend emits and its severity. Each transition produces exactly one of these; the
 * transition log is the event store, so nothing can be recorded without its event.
 */
export const EVENTS = {
  workstream_created: "info",
  workstream_completed: "info",
  workstream_failed: "error",
  workstream_cancelled: "warning",
  workstream_reopened: "info",
  workstream_rolled_back: "warning",
  workstream_retried: "info",
  workstream_resumed: "info",
  workstream_archived: "info",
  workstream_merged: "info",
  task_created: "info",
  task_ready: "info",
  task_waiting: "info",
  task_started: "info",
  task_completed: "info",
  task_recovered: "info",
  task_retry_scheduled: "warning",
  task_timeout: "warning",
  worker_lost: "warning",
  task_released: "info",
  task_failed: "error",
  task_failed_noncritical: "warning",
  task_quarantined: "critical",
  task_retried: "info",
  task_skipped: "warning",
  task_cancelled: "warning",
  task_rolled_back: "info",
  task_reset: "info",
  task_dependency_removed: "warning",
  task_revived: "info",
  task_escalated: "error",
  task_fallback: "warning",
  task_stalled: "warning",
  task_progressing: "info",
  compensation_scheduled: "warning",
  breaker_created: "info",
  breaker_opened: "error",
  breaker_half_opened: "warning",
  breaker_closed: "info",
  breaker_reset: "info",
  breaker_configured: "info",
  resource_created: "info",
  resource_limit_changed: "info",
  resource_exhausted: "warning",
  resource_available: "info",
  resource_unavailable: "error",
  degradation_changed: "warning",
  degradation_recovered: "info",
  pattern_detected: "warning",
  pattern_confirmed: "warning",
  pattern_false_positive: "info",
  worker_registered: "info",
  worker_idle: "info",
  worker_busy: "info",
  worker_unresponsive: "warning",
  worker_shutdown: "info",
  worker_presumed_dead: "error",
  worker_shutdown_requested: "warning",
  worker_restart_requested: "warning",
  worker_shutdown_forced: "warning",
} as const satisfies Record<string, Severity>;

export type EventName = keyof typeof EVENTS;

/** Severities from least to most severe, for `--severity` filters. */
export const SEVERITY_ORDER: readonly Severity[] = ["info", "warning", "error", "critical"];

/** Severities at or above `min`. */
export function severitiesFrom(min: Severity): Severity[] {
  return SEVERITY_ORDER.slice(SEVERITY_ORDER.indexOf(min));
}
