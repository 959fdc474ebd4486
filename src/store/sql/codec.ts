import type {
  BreakerRecord,
  DegradationRecord,
  InterventionRecord,
  PatternRecord,
  ResourceRecord,
  TaskRecord,
  TransitionRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../../model/records.js";
import type { EntityKind } from "../../model/states.js";
import type { UnhashedTransition } from "../chain.js";
import type { StateSnapshot } from "../replay.js";

/** How a record field is stored in its column. */
export type ColumnKind = "plain" | "json" | "bool";
type FieldMap<R> = { [K in keyof R]-?: readonly [column: string, kind: ColumnKind] };

const TASK_COLUMNS: FieldMap<TaskRecord> = {
  id: ["id", "plain"],
  workstreamId: ["workstream_id", "plain"],
  key: ["key", "plain"],
  handler: ["handler", "plain"],
  input: ["input", "json"],
  status: ["status", "plain"],
  priority: ["priority", "plain"],
  attempts: ["attempts", "plain"],
  retry: ["retry", "json"],
  timeoutMs: ["timeout_ms", "plain"],
  deadlineMs: ["deadline_ms", "plain"],
  critical: ["critical", "bool"],
  deps: ["deps", "json"],
  runAt: ["run_at", "plain"],
  leaseToken: ["lease_token", "plain"],
  leaseWorker: ["lease_worker", "plain"],
  leaseExpiresAt: ["lease_expires_at", "plain"],
  lastDelayMs: ["last_delay_ms", "plain"],
  workerLostStreak: ["worker_lost_streak", "plain"],
  output: ["output", "json"],
  lastError: ["last_error", "json"],
  idempotencyKey: ["idempotency_key", "plain"],
  breaker: ["breaker", "plain"],
  revivals: ["revivals", "plain"],
  fallbacks: ["fallbacks", "json"],
  compensation: ["compensation", "json"],
  quality: ["quality", "plain"],
  qualityThreshold: ["quality_threshold", "plain"],
  escalation: ["escalation", "json"],
  requires: ["requires", "json"],
  resources: ["resources", "json"],
  held: ["held", "json"],
  progressAt: ["progress_at", "plain"],
  stallAfterMs: ["stall_after_ms", "plain"],
  stalledAt: ["stalled_at", "plain"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const WORKSTREAM_COLUMNS: FieldMap<WorkstreamRecord> = {
  id: ["id", "plain"],
  name: ["name", "plain"],
  status: ["status", "plain"],
  onFailure: ["on_failure", "plain"],
  revive: ["revive", "bool"],
  compensation: ["compensation", "json"],
  compensates: ["compensates", "plain"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const BREAKER_COLUMNS: FieldMap<BreakerRecord> = {
  id: ["id", "plain"],
  status: ["status", "plain"],
  config: ["config", "json"],
  openedAt: ["opened_at", "plain"],
  openUntil: ["open_until", "plain"],
  forced: ["forced", "bool"],
  closedAt: ["closed_at", "plain"],
  failures: ["failures", "plain"],
  successes: ["successes", "plain"],
  window: ["window", "json"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const DEGRADATION_COLUMNS: FieldMap<DegradationRecord> = {
  id: ["id", "plain"],
  status: ["status", "plain"],
  level: ["level", "plain"],
  name: ["name", "plain"],
  quality: ["quality", "plain"],
  capabilities: ["capabilities", "json"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const PATTERN_COLUMNS: FieldMap<PatternRecord> = {
  id: ["id", "plain"],
  status: ["status", "plain"],
  detector: ["detector", "plain"],
  subject: ["subject", "plain"],
  confidence: ["confidence", "plain"],
  message: ["message", "plain"],
  action: ["action", "json"],
  detectedAt: ["detected_at", "plain"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const RESOURCE_COLUMNS: FieldMap<ResourceRecord> = {
  id: ["id", "plain"],
  status: ["status", "plain"],
  maxHolders: ["max_holders", "plain"],
  reason: ["reason", "plain"],
  createdAt: ["created_at", "plain"],
  updatedAt: ["updated_at", "plain"],
};

const WORKER_COLUMNS: FieldMap<WorkerRecord> = {
  id: ["id", "plain"],
  host: ["host", "plain"],
  pid: ["pid", "plain"],
  concurrency: ["concurrency", "plain"],
  handlers: ["handlers", "json"],
  capabilities: ["capabilities", "json"],
  supervised: ["supervised", "bool"],
  control: ["control", "json"],
  status: ["status", "plain"],
  startedAt: ["started_at", "plain"],
  heartbeatAt: ["heartbeat_at", "plain"],
};

/**
 * Table and field mapping of each entity whose state is in the transition log. The table's name
 * is also the entity's key in a {@link StateSnapshot}.
 */
export const ENTITY_TABLES: Record<
  EntityKind,
  { table: keyof StateSnapshot; columns: Record<string, readonly [string, ColumnKind]> }
> = {
  workstream: { table: "workstreams", columns: WORKSTREAM_COLUMNS },
  task: { table: "tasks", columns: TASK_COLUMNS },
  worker: { table: "workers", columns: WORKER_COLUMNS },
  breaker: { table: "breakers", columns: BREAKER_COLUMNS },
  degradation: { table: "degradation", columns: DEGRADATION_COLUMNS },
  pattern: { table: "patterns", columns: PATTERN_COLUMNS },
  resource: { table: "resources", columns: RESOURCE_COLUMNS },
};

type Row = Record<string, unknown>;

/** Converts a record field value to its column value. */
export function encodeField(kind: ColumnKind, value: unknown): unknown {
  if (value === undefined || value === null) return null;
  if (kind === "json") return JSON.stringify(value);
  if (kind === "bool") return value ? 1 : 0;
  return value;
}

function decodeRow<R>(columns: Record<string, readonly [string, ColumnKind]>, row: Row): R {
  const out: Row = {};
  for (const [field, [column, kind]] of Object.entries(columns)) {
    const v = row[column];
    out[field] =
      v === null || v === undefined
        ? null
        : kind === "json"
          ? JSON.parse(v as string)
          : kind === "bool"
            ? v === 1
            : v;
  }
  return out as R;
}

export const rowToTask = (row: Row): TaskRecord => decodeRow(TASK_COLUMNS, row);
export const rowToWorkstream = (row: Row): WorkstreamRecord => decodeRow(WORKSTREAM_COLUMNS, row);
export const rowToWorker = (row: Row): WorkerRecord => decodeRow(WORKER_COLUMNS, row);
export const rowToBreaker = (row: Row): BreakerRecord => decodeRow(BREAKER_COLUMNS, row);
export const rowToDegradation = (row: Row): DegradationRecord =>
  decodeRow(DEGRADATION_COLUMNS, row);
export const rowToPattern = (row: Row): PatternRecord => decodeRow(PATTERN_COLUMNS, row);
export const rowToResource = (row: Row): ResourceRecord => decodeRow(RESOURCE_COLUMNS, row);

/** Decodes a row of `kind`'s table. */
export function rowToEntity(kind: EntityKind, row: Row): Record<string, unknown> {
  return decodeRow(ENTITY_TABLES[kind].columns, row);
}

/** A row of the `transitions` table with its JSON left as text, as the hash covers it. */
export function rowToRawTransition(row: Row): UnhashedTransition & { hash: string } {
  return {
    seq: row.seq as number,
    at: row.at as number,
    entity: row.entity as EntityKind,
    entityId: row.entity_id as string,
    workstreamId: (row.workstream_id as string | null) ?? null,
    from: (row.from_state as string | null) ?? null,
    to: row.to_state as string,
    event: row.event as string,
    severity: row.severity as TransitionRecord["severity"],
    actor: row.actor as string,
    dataJson: row.data as string,
    detailJson: (row.detail as string | null) ?? null,
    hash: row.hash as string,
  };
}

/** Decodes a row of the `transitions` table. */
export function rowToTransition(row: Row): TransitionRecord {
  const { dataJson, detailJson, ...rest } = rowToRawTransition(row);
  return {
    ...rest,
    data: JSON.parse(dataJson),
    detail: detailJson ? JSON.parse(detailJson) : null,
  };
}

/** Decodes a row of the `interventions` table. */
export function rowToIntervention(row: Row): InterventionRecord {
  return {
    id: row.id as string,
    at: row.at as number,
    actor: row.actor as string,
    command: row.command as string,
    target: row.target as string,
    reason: (row.reason as string | null) ?? null,
    before: row.before ? JSON.parse(row.before as string) : null,
    after: row.after ? JSON.parse(row.after as string) : null,
  };
}

/** Columns of a `transitions` row, in the order {@link transitionRow} gives their values. */
export const TRANSITION_COLUMNS =
  "seq, at, entity, entity_id, workstream_id, from_state, to_state, event, severity, actor, data, detail, hash";

/** The column values of one `transitions` row. */
export function transitionRow(t: UnhashedTransition & { hash: string }): unknown[] {
  return [
    t.seq,
    t.at,
    t.entity,
    t.entityId,
    t.workstreamId,
    t.from,
    t.to,
    t.event,
    t.severity,
    t.actor,
    t.dataJson,
    t.detailJson,
    t.hash,
  ];
}

/** Inserts one intervention; values from {@link interventionRow}. */
export const INSERT_INTERVENTION =
  "INSERT INTO interventions (id, at, actor, command, target, reason, before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

/** The column values of one `interventions` row. */
export function interventionRow(i: InterventionRecord): unknown[] {
  return [
    i.id,
    i.at,
    i.actor,
    i.command,
    i.target,
    i.reason,
    JSON.stringify(i.before),
    JSON.stringify(i.after),
  ];
}
