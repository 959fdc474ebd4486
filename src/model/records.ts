import type { Failure } from "./failure.js";
import type { RetryPolicy } from "./spec.js";
import type { EntityKind, TaskStatus, WorkerStatus, WorkstreamStatus } from "./states.js";

/** Event severities (DESIGN.md vocabulary). */
export type Severity = "info" | "warning" | "error" | "critical";

/** A task as stored. Times are epoch milliseconds. */
export interface TaskRecord {
  /** Globally unique id (`t_…`). */
  id: string;
  workstreamId: string;
  /** Id as written in the definition. */
  key: string;
  handler: string;
  input: unknown;
  status: TaskStatus;
  priority: number;
  /** Attempts started so far. */
  attempts: number;
  retry: RetryPolicy;
  timeoutMs: number;
  critical: boolean;
  deps: string[];
  /** Earliest time the task may be claimed. */
  runAt: number;
  /** Fencing token of the current lease (the seq of the transition that granted it). */
  leaseToken: number | null;
  leaseWorker: string | null;
  leaseExpiresAt: number | null;
  /** Last delay used by a retry, for decorrelated jitter. */
  lastDelayMs: number | null;
  /** Consecutive attempts that ended with the worker lost. */
  workerLostStreak: number;
  output: unknown;
  lastError: Failure | null;
  idempotencyKey: string;
  createdAt: number;
  updatedAt: number;
}

export interface WorkstreamRecord {
  id: string;
  name: string;
  status: WorkstreamStatus;
  onFailure: "continue" | "stop";
  createdAt: number;
  updatedAt: number;
}

export interface WorkerRecord {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  handlers: string[];
  status: WorkerStatus;
  startedAt: number;
  heartbeatAt: number;
}

/** One entry of the hash-chained transition log; also the event people see. */
export interface TransitionRecord {
  seq: number;
  at: number;
  entity: EntityKind;
  entityId: string;
  workstreamId: string | null;
  from: string | null;
  to: string;
  /** Event name, e.g. `task_retry_scheduled`. */
  event: string;
  severity: Severity;
  /** Fields changed by this transition (or the whole row on creation); enough to replay it. */
  data: Record<string, unknown>;
  /** What is not state but explains the change: the failure, the decision, a reason. */
  detail: Record<string, unknown> | null;
  /** Who caused it: `engine`, `worker:ID`, `monitor`, or a person for interventions. */
  actor: string;
  hash: string;
}

/** A manual action, always logged. */
export interface InterventionRecord {
  id: string;
  at: number;
  actor: string;
  command: string;
  target: string;
  reason: string | null;
  before: unknown;
  after: unknown;
}
