import type {
  BreakerRecord,
  DegradationRecord,
  PatternRecord,
  ResourceRecord,
  TaskRecord,
  TransitionRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../model/records.js";
import { ENTITY_KINDS, type EntityKind } from "../model/states.js";

/**
 * All replayable state: each entity kind under its table's name, keyed by id. Liveness fields
 * are left out (see {@link LIVENESS}).
 */
export interface StateSnapshot {
  workstreams: Record<string, Partial<WorkstreamRecord>>;
  tasks: Record<string, Partial<TaskRecord>>;
  workers: Record<string, Partial<WorkerRecord>>;
  breakers: Record<string, Partial<BreakerRecord>>;
  degradation: Record<string, Partial<DegradationRecord>>;
  patterns: Record<string, Partial<PatternRecord>>;
  resources: Record<string, Partial<ResourceRecord>>;
}

/** Where each entity kind lives in a {@link StateSnapshot} (its table's name). */
export const SNAPSHOT_KEYS: Record<EntityKind, keyof StateSnapshot> = {
  workstream: "workstreams",
  task: "tasks",
  worker: "workers",
  breaker: "breakers",
  degradation: "degradation",
  pattern: "patterns",
  resource: "resources",
};

/**
 * Fields that change without a transition ("liveness, not state"): heartbeats, and a breaker's
 * counters between status changes. They are not in the log, so replay cannot and need not
 * reproduce them.
 */
export const LIVENESS = {
  task: ["leaseExpiresAt", "progressAt"],
  worker: ["heartbeatAt"],
  workstream: [],
  breaker: ["failures", "successes", "window"],
  degradation: [],
  pattern: [],
  resource: [],
} as const satisfies Record<EntityKind, readonly string[]>;

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
  if (kind === "task") {
    const running = record.status === "running";
    return { leaseExpiresAt: running ? leaseUntil : null, progressAt: running ? now : null };
  }
  if (kind === "worker") return { heartbeatAt: now };
  if (kind === "breaker") return { failures: 0, successes: 0, window: [] };
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
  const snap: Record<string, object> = {};
  for (const kind of ENTITY_KINDS) snap[SNAPSHOT_KEYS[kind]] = {};
  return snap as unknown as StateSnapshot;
}

/**
 * Applies one transition to a snapshot: creation inserts the record in `data`; any other
 * transition merges `data` and sets the status to `to`.
 */
export function applyTransition(state: StateSnapshot, t: TransitionRecord): void {
  const table = state[SNAPSHOT_KEYS[t.entity]];
  const current = (table as Record<string, Record<string, unknown>>)[t.entityId];
  const next = withoutLiveness(t.entity, { ...(current ?? {}), ...t.data, status: t.to });
  (table as Record<string, unknown>)[t.entityId] = next;
}

/**
 * The fields a record built from patches may lack, with the value they mean: creation records
 * leave out recovery settings most tasks do not have, and records from older versions lack fields
 * added since.
 */
export const REPLAY_DEFAULTS: Record<EntityKind, Record<string, unknown>> = {
  task: {
    leaseToken: null,
    leaseWorker: null,
    lastDelayMs: null,
    output: null,
    lastError: null,
    quality: null,
    escalation: null,
    deadlineMs: null,
    breaker: null,
    fallbacks: null,
    compensation: null,
    qualityThreshold: null,
    requires: null,
    resources: null,
    held: null,
    stallAfterMs: null,
    stalledAt: null,
  },
  worker: { capabilities: [], supervised: false, control: null },
  workstream: {},
  breaker: {},
  degradation: {},
  pattern: {},
  resource: {},
};

/** Replay builds records from patches; fills the fields no patch set so they compare equal. */
export function normalizeReplayed(snap: StateSnapshot): StateSnapshot {
  for (const kind of ENTITY_KINDS) {
    const defaults = REPLAY_DEFAULTS[kind];
    const table = snap[SNAPSHOT_KEYS[kind]] as Record<string, object>;
    for (const [id, record] of Object.entries(table)) table[id] = { ...defaults, ...record };
  }
  return snap;
}
