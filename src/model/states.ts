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

export const WORKSTREAM_STATUSES = ["active", "completed", "failed", "cancelled"] as const;
export type WorkstreamStatus = (typeof WORKSTREAM_STATUSES)[number];

export const WORKER_STATUSES = ["idle", "busy", "unresponsive", "shutdown"] as const;
export type WorkerStatus = (typeof WORKER_STATUSES)[number];

/** The kinds of entity whose state changes are recorded in the transition log. */
export type EntityKind = "task" | "workstream" | "worker";

/**
 * The one table of allowed transitions. `null` as a source is creation.
 * - task `queued → pending`: an operator reset (rollback) — kept for the state-recovery work.
 * - task `running → queued`: a retry after failure, a lost lease, or a graceful release.
 * - task `failed|cancelled|skipped → queued|pending`: operator retry / revival.
 * - task `queued → pending`: also a dependent sent back to wait when its dependency is retried.
 * - workstream `failed → completed`: an operator skipped what made it fail.
 */
export const TRANSITIONS = {
  task: {
    "": ["pending", "queued"],
    pending: ["queued", "cancelled", "skipped"],
    queued: ["running", "pending", "cancelled", "skipped"],
    running: ["completed", "queued", "failed", "cancelled"],
    completed: [],
    failed: ["queued", "pending", "skipped"],
    cancelled: ["queued", "pending", "skipped"],
    skipped: ["queued", "pending"],
  },
  workstream: {
    "": ["active"],
    active: ["completed", "failed", "cancelled"],
    completed: ["active"],
    failed: ["active", "completed", "cancelled"],
    cancelled: ["active"],
  },
  worker: {
    "": ["idle", "busy"],
    // idle → idle: a worker re-registering under the same id (a restarted process).
    idle: ["idle", "busy", "unresponsive", "shutdown"],
    busy: ["idle", "unresponsive", "shutdown"],
    unresponsive: ["idle", "busy", "shutdown"],
    shutdown: ["idle", "busy"],
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
