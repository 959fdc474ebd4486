import type {
  TaskRecord,
  TransitionRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../model/records.js";

/** All replayable state, keyed by id. Liveness fields are left out (see {@link LIVENESS}). */
export interface StateSnapshot {
  workstreams: Record<string, WorkstreamRecord>;
  tasks: Record<string, Partial<TaskRecord>>;
  workers: Record<string, Partial<WorkerRecord>>;
}

/**
 * Fields that heartbeats change without a transition ("liveness, not state"): they are not in
 * the log, so replay cannot and need not reproduce them.
 */
export const LIVENESS = {
  task: ["leaseExpiresAt"],
  worker: ["heartbeatAt"],
  workstream: [],
} as const;

/**
 * The liveness a row rebuilt from the log is given, as the log does not hold it: a running task's
 * lease runs until `leaseUntil`, a worker was last heard from `now`.
 */
export function restoredLiveness(
  kind: keyof typeof LIVENESS,
  record: Record<string, unknown>,
  now: number,
  leaseUntil: number,
): Record<string, unknown> {
  if (kind === "task") return { leaseExpiresAt: record.status === "running" ? leaseUntil : null };
  if (kind === "worker") return { heartbeatAt: now };
  return {};
}

/** Removes liveness fields from a record. */
export function withoutLiveness<T extends object>(
  kind: keyof typeof LIVENESS,
  record: T,
): Partial<T> {
  const copy: Record<string, unknown> = { ...(record as Record<string, unknown>) };
  for (const f of LIVENESS[kind]) delete copy[f];
  return copy as Partial<T>;
}

/** An empty state. */
export function emptySnapshot(): StateSnapshot {
  return { workstreams: {}, tasks: {}, workers: {} };
}

/**
 * Applies one transition to a snapshot: creation inserts the record in `data`; any other
 * transition merges `data` and sets the status to `to`.
 */
export function applyTransition(state: StateSnapshot, t: TransitionRecord): void {
  const table =
    t.entity === "task" ? state.tasks : t.entity === "worker" ? state.workers : state.workstreams;
  const current = (table as Record<string, Record<string, unknown>>)[t.entityId];
  const next = withoutLiveness(t.entity, { ...(current ?? {}), ...t.data, status: t.to });
  (table as Record<string, unknown>)[t.entityId] = next;
}

/** Replay builds records from patches; fills the fields no patch set so they compare equal. */
export function normalizeReplayed(snap: StateSnapshot): StateSnapshot {
  const taskDefaults = {
    leaseToken: null,
    leaseWorker: null,
    lastDelayMs: null,
    output: null,
    lastError: null,
  };
  for (const [id, t] of Object.entries(snap.tasks)) snap.tasks[id] = { ...taskDefaults, ...t };
  return snap;
}
