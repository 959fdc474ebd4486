import { MendError } from "../errors.js";

/** Task lifecycle (DESIGN.md "Task states"). */
export const TASK_STATUSES = [
  "pending",
  "queued",
  "running",
  "completed",
  "failed",
  "cancelled",
  "skipped",
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

/** Statuses a task never leaves on its own; only an operator retry or revival reopens `failed`. */
export const TERMINAL_TASK_STATUSES: ReadonlySet<TaskStatus> = new Set([
  "completed",
  "failed",
  "cancelled",
  "skipped",
]);

/**
 * True when a task in `status` lets its dependents run: completed, skipped, or a non-critical task
 * that failed for good (DESIGN.md invariant 7 and "Task states").
 */
export function satisfiesDependents(status: TaskStatus, critical: boolean): boolean {
  return status === "completed" || status === "skipped" || (status === "failed" && !critical);
}

export const WORKSTREAM_STATUSES = [
  "active",
  "completed",
  "failed",
  "cancelled",
  "archived",
  "merged",
] as const;
export type WorkstreamStatus = (typeof WORKSTREAM_STATUSES)[number];

/**
 * Workstream statuses nothing leaves: an archived workstream is closed to recovery, and a merged
 * one's results are in their destination, so rolling it back or re-running it would fork them.
 */
export const FINAL_WORKSTREAM_STATUSES: ReadonlySet<WorkstreamStatus> = new Set([
  "archived",
  "merged",
]);

export const WORKER_STATUSES = ["idle", "busy", "unresponsive", "shutdown"] as const;
export type WorkerStatus = (typeof WORKER_STATUSES)[number];

export const BREAKER_STATUSES = ["closed", "open", "half_open"] as const;
export type BreakerStatus = (typeof BREAKER_STATUSES)[number];

/** A detected pattern is `active` until the outcomes after it confirm it or prove it wrong. */
export const PATTERN_STATUSES = ["active", "confirmed", "false_positive"] as const;
export type PatternStatus = (typeof PATTERN_STATUSES)[number];

/**
 * A resource is `available`; `exhausted` while every slot is held and tasks wait for one (the
 * monitor says so; claims go on as slots free); `unavailable` when a person, a health check or a
 * failure pattern took it out of service: tasks needing it wait, or take an alternative.
 */
export const RESOURCE_STATUSES = ["available", "exhausted", "unavailable"] as const;
export type ResourceStatus = (typeof RESOURCE_STATUSES)[number];

/** The kinds of entity whose state changes are recorded in the transition log. */
export const ENTITY_KINDS = [
  "workstream",
  "task",
  "worker",
  "breaker",
  "degradation",
  "pattern",
  "resource",
] as const;
export type EntityKind = (typeof ENTITY_KINDS)[number];

/**
 * The one table of allowed transitions. `null` as a source is creation.
 * - task `queued → pending`: a rollback's reset, or a dependent sent back to wait when its
 *   dependency is retried.
 * - task `running → queued`: a retry after failure, a lost lease, or a graceful release.
 * - task `running → pending`: a rollback or workstream re-run revokes the lease (the worker is
 *   told through its heartbeat and stops; its outcome is refused).
 * - task `failed|cancelled|skipped → queued|pending`: operator retry / revival / rollback.
 * - task `completed → pending`: a person re-runs finished work (`workstream retry`, `resume`).
 * - task `pending → pending`: the task's definition changed while it waits (a dependency removed,
 *   attempts reset); the record carries the change so replay reproduces it.
 * - workstream `failed → completed`: an operator skipped what made it fail.
 * - workstream `active → active`: a rollback or re-run of a workstream that is still running.
 * - workstream `archived`, `merged`: final (see {@link FINAL_WORKSTREAM_STATUSES}).
 * - task `failed → queued` without a person: the monitor revives a task whose cause cleared.
 * - task `queued → failed`: its overall deadline passed while it waited to run again.
 * - task `failed → failed`: escalated, automatic recovery having had its time.
 * - task `running → running`: the monitor reports it stalled (no progress for its threshold), or
 *   progressing again after a stall.
 * - resource self-loops: its limit changed.
 */
export const TRANSITIONS = {
  task: {
    "": ["pending", "queued"],
    pending: ["pending", "queued", "cancelled", "skipped"],
    queued: ["running", "pending", "cancelled", "skipped", "failed"],
    running: ["completed", "queued", "failed", "cancelled", "pending", "running"],
    completed: ["pending"],
    failed: ["queued", "pending", "skipped", "failed"],
    cancelled: ["queued", "pending", "skipped"],
    skipped: ["queued", "pending"],
  },
  workstream: {
    "": ["active"],
    active: ["active", "completed", "failed", "cancelled"],
    completed: ["active", "archived", "merged"],
    failed: ["active", "completed", "cancelled", "archived"],
    cancelled: ["active", "archived"],
    archived: [],
    merged: [],
  },
  worker: {
    "": ["idle", "busy"],
    // idle → idle: a worker re-registering under the same id (a restarted process). idle → idle
    // and busy → busy: an operator's shutdown or restart request, stored for the worker's next
    // heartbeat. shutdown → shutdown: a person forces the shutdown of a worker presumed dead that
    // still holds leases.
    idle: ["idle", "busy", "unresponsive", "shutdown"],
    busy: ["idle", "busy", "unresponsive", "shutdown"],
    unresponsive: ["idle", "busy", "shutdown"],
    shutdown: ["idle", "busy", "shutdown"],
  },
  // closed → closed: a reset or new settings; open → open: a person forces it open, or new
  // settings; half_open → half_open: new settings while probes run.
  breaker: {
    "": ["closed", "open"],
    closed: ["closed", "open"],
    open: ["open", "half_open", "closed"],
    half_open: ["closed", "open", "half_open"],
  },
  // degraded → degraded: a move between two degraded levels.
  degradation: {
    "": ["normal", "degraded"],
    normal: ["degraded"],
    degraded: ["degraded", "normal"],
  },
  pattern: {
    "": ["active"],
    active: ["confirmed", "false_positive"],
    confirmed: [],
    false_positive: [],
  },
  resource: {
    "": ["available", "unavailable"],
    available: ["available", "exhausted", "unavailable"],
    exhausted: ["exhausted", "available", "unavailable"],
    unavailable: ["unavailable", "available"],
  },
} as const satisfies Record<EntityKind, Record<string, readonly string[]>>;

/** True when `kind` may move from `from` (null: creation) to `to`. */
export function canTransition(kind: EntityKind, from: string | null, to: string): boolean {
  const table = TRANSITIONS[kind] as Record<string, readonly string[] | undefined>;
  return table[from ?? ""]?.includes(to) ?? false;
}

/** Throws a typed `illegal_transition` error unless the transition is in {@link TRANSITIONS}. */
export function assertTransition(
  kind: EntityKind,
  id: string,
  from: string | null,
  to: string,
): void {
  if (!canTransition(kind, from, to)) {
    throw new MendError(
      "illegal_transition",
      `${kind} ${id} cannot go from ${from ?? "(new)"} to ${to}`,
      { kind, id, from, to },
    );
  }
}
