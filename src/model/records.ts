import type { Failure } from "./failure.js";
import type {
  BreakerConfig,
  CompensationPolicy,
  CompensationSpec,
  FallbackPlan,
  RetryPolicy,
} from "./spec.js";
import type {
  BreakerStatus,
  EntityKind,
  PatternStatus,
  ResourceStatus,
  TaskStatus,
  WorkerStatus,
  WorkstreamStatus,
} from "./states.js";

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
  /**
   * Attempts started in the current run: since it was submitted, or since a revival or a switch
   * to a fallback handler gave it a fresh retry budget (the log keeps every attempt).
   */
  attempts: number;
  retry: RetryPolicy;
  timeoutMs: number;
  /** Overall deadline from submission, in ms, across every attempt; null for none. */
  deadlineMs: number | null;
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
  /** Circuit breaker guarding the task's calls; while it is open the task waits in the queue. */
  breaker: string | null;
  /** Times the monitor queued the task again after its cause cleared. */
  revivals: number;
  /** Alternative handlers tried when this one fails for good; null when there are none. */
  fallbacks: FallbackPlan | null;
  /** What undoes the task's effects once it completed; null when nothing declared one. */
  compensation: CompensationSpec | null;
  /** Quality of the result (handler's score × its quality factor), when the handler gave one. */
  quality: number | null;
  /** Lowest acceptable quality; a result below it is a `quality` failure. */
  qualityThreshold: number | null;
  /** For a task that failed for good: who must act, and the command to try; else null. */
  escalation: Escalation | null;
  /** Capabilities a worker must have to claim the task; null for none. */
  requires: string[] | null;
  /**
   * Resources the task must hold to run: each need is satisfied by holding one of its resources,
   * tried in order (the later ones are alternatives it may be reallocated to); null for none.
   */
  resources: string[][] | null;
  /** The resources the current attempt holds (one per need), while it runs; else null. */
  held: string[] | null;
  /** When the running attempt last reported progress (heartbeat details or `ctx.progress()`). */
  progressAt: number | null;
  /** Running this long without progress raises `task_stalled`; null for the default. */
  stallAfterMs: number | null;
  /** When the running attempt was reported stalled; null when it was not. */
  stalledAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface WorkstreamRecord {
  id: string;
  name: string;
  status: WorkstreamStatus;
  onFailure: "continue" | "stop";
  /** Whether the monitor revives this workstream's failed tasks once their cause has cleared. */
  revive: boolean;
  /** When and in which order completed tasks are compensated. */
  compensation: CompensationPolicy;
  /** For a compensation workstream: the workstream it undoes. */
  compensates: string | null;
  createdAt: number;
  updatedAt: number;
}

/**
 * The escalation level of a task that failed for good (1 automatic, 2 operator command, 3 manual
 * investigation, 4 code change) and the next command to try, from the recovery decision tree.
 */
export interface Escalation {
  level: 1 | 2 | 3 | 4;
  cause: string;
  summary: string;
  /** The command to try next, e.g. `mend retry ws_…/search-3 --max-attempts 6`. */
  next: string;
  /** Level 1: what the engine will do by itself. */
  automatic: string | null;
}

/** A circuit breaker as stored, shared by every worker. Times are epoch ms. */
export interface BreakerRecord {
  /** The breaker's name, e.g. `search-api`. */
  id: string;
  status: BreakerStatus;
  config: BreakerConfig;
  openedAt: number | null;
  /** When an open breaker lets probes through (half-open); null while closed. */
  openUntil: number | null;
  /** Opened by a person: stays open until a person closes it. */
  forced: boolean;
  /** When it last closed after being open (or a person reset it); null before that. */
  closedAt: number | null;
  /** Counted failures in a row while closed; successes while half-open (liveness). */
  failures: number;
  successes: number;
  /** Rate mode's sliding window: `[bucket, calls, failures]` triples (liveness). */
  window: [number, number, number][];
  createdAt: number;
  updatedAt: number;
}

/** The system's degradation level as stored (one row, id `system`). */
export interface DegradationRecord {
  id: string;
  status: "normal" | "degraded";
  /** 0 is normal; higher is more degraded. */
  level: number;
  name: string;
  /** The level's quality factor (1 when normal). */
  quality: number;
  /** Free-form settings of the level, handed to handlers as `ctx.degradation.capabilities`. */
  capabilities: Record<string, unknown>;
  createdAt: number;
  updatedAt: number;
}

/** A failure pattern the monitor detected, and how it turned out. */
export interface PatternRecord {
  id: string;
  status: PatternStatus;
  detector: string;
  subject: string;
  confidence: number;
  message: string;
  action: unknown;
  detectedAt: number;
  createdAt: number;
  updatedAt: number;
}

export interface WorkerRecord {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  handlers: string[];
  /** What the worker can do; a task that requires capabilities is claimed only by workers with all of them. */
  capabilities: string[];
  /** Started under `mend worker --supervise`: a supervisor restarts it when it exits. */
  supervised: boolean;
  /** An operator's pending request to the worker, picked up at its next heartbeat; else null. */
  control: WorkerControl | null;
  status: WorkerStatus;
  startedAt: number;
  heartbeatAt: number;
}

/** A named capacity tasks hold while they run (e.g. `git_repo_write`, one holder). */
export interface ResourceRecord {
  id: string;
  status: ResourceStatus;
  /** Most tasks that may hold it at once. */
  maxHolders: number;
  /** Why it is unavailable or exhausted, or why its limit last changed; null when nothing says. */
  reason: string | null;
  createdAt: number;
  updatedAt: number;
}

/** What an operator asked a worker to do. */
export interface WorkerControl {
  action: "shutdown" | "restart";
  /** Release its tasks for other workers at once instead of letting them finish. */
  reassign: boolean;
  actor: string;
  reason: string | null;
  at: number;
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
