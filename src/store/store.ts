import type { Failure } from "../model/failure.js";
import type {
  InterventionRecord,
  Severity,
  TaskRecord,
  TransitionRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../model/records.js";
import type { WorkstreamSpec } from "../model/spec.js";
import type { TaskStatus, WorkerStatus } from "../model/states.js";
import type { FailureDecision } from "../recovery/retry.js";
import type { ChainReport } from "./chain.js";
import type { StateSnapshot } from "./replay.js";

/**
 * Decides what happens to a task after a failure. Called inside the store's transaction with the
 * task as stored, so the decision always sees the authoritative attempt count.
 */
export type FailurePlanner = (task: TaskRecord, failure: Failure, now: number) => FailureDecision;

/** What a worker reports about a task it held. Every outcome is fenced by the lease token. */
export type Outcome =
  | { kind: "complete"; taskId: string; token: number; output: unknown }
  | { kind: "fail"; taskId: string; token: number; failure: Failure }
  /** Give the task back unrun (graceful shutdown): it is queued again at once. */
  | { kind: "release"; taskId: string; token: number; reason: string };

/** How one outcome was applied. `refused` means the lease was no longer the caller's. */
export type Settlement =
  | { taskId: string; applied: true; status: TaskStatus; decision?: FailureDecision }
  | { taskId: string; applied: false; reason: string };

/** A worker's single round trip: settle finished tasks and claim new ones, in one transaction. */
export interface ExchangeRequest {
  workerId: string;
  outcomes: Outcome[];
  /** How many ready tasks to claim (0 to only settle). */
  claim: number;
  leaseMs: number;
  /** Only tasks with these handler names are claimed. */
  handlers: readonly string[];
  planner: FailurePlanner;
}

/** What a worker needs to run a task it just claimed. */
export type ClaimedTask = Pick<
  TaskRecord,
  "id" | "workstreamId" | "key" | "handler" | "input" | "attempts" | "timeoutMs" | "idempotencyKey"
> & { leaseToken: number };

export interface ExchangeResult {
  settled: Settlement[];
  claimed: ClaimedTask[];
}

/** A lease held by a worker, as it reports it in a heartbeat. */
export interface HeldLease {
  taskId: string;
  token: number;
}

/** A worker as it registers itself. */
export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  handlers: string[];
}

/** A task whose lease expired and what the monitor did about it. */
export interface SweptTask {
  taskId: string;
  workerId: string | null;
  decision: FailureDecision;
}

/** Filter for the transition log (and so for events). */
export interface TransitionQuery {
  afterSeq?: number;
  entityId?: string;
  workstreamId?: string;
  minSeverity?: Severity;
  limit?: number;
  /** Newest first (default oldest first). */
  newestFirst?: boolean;
}

/** Who asked for an operator action, and why. */
export interface Actor {
  actor: string;
  reason?: string | null;
  command: string;
}

/** Overrides an operator may give when retrying a task. */
export interface RetryOverrides {
  timeoutMs?: number;
  maxAttempts?: number;
}

/**
 * The one place state lives. Every change goes through the implementation's transition function
 * (DESIGN.md invariant 1); driver types never leak out of it.
 */
export interface Store {
  /** The store's location, e.g. `sqlite:/path/mend.db`. */
  readonly url: string;

  /** Accepts a validated workstream; all of it or nothing is written. */
  submit(
    spec: WorkstreamSpec,
    actor?: string,
  ): Promise<{ workstreamId: string; taskIds: string[] }>;

  /** Settles a worker's outcomes and claims ready tasks, as one transaction (group commit). */
  exchange(req: ExchangeRequest): Promise<ExchangeResult>;

  /** Renews the leases a worker still holds; returns the ids of those it no longer holds. */
  heartbeat(
    workerId: string,
    status: WorkerStatus,
    leases: HeldLease[],
    leaseMs: number,
  ): Promise<{ lost: string[] }>;

  registerWorker(info: WorkerInfo): Promise<void>;
  /** Marks a worker shut down after it released its tasks. */
  stopWorker(workerId: string): Promise<void>;

  /** Requeues (or fails) every running task whose lease has expired. */
  sweepExpiredLeases(planner: FailurePlanner): Promise<SweptTask[]>;
  /** Moves silent workers to `unresponsive`, then `shutdown`. */
  markSilentWorkers(unresponsiveMs: number, shutdownMs: number): Promise<WorkerRecord[]>;
  /** Takes or renews a named leadership lease; true while `holder` leads. */
  acquireLeadership(name: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLeadership(name: string, holder: string): Promise<void>;

  retryTask(taskId: string, overrides: RetryOverrides, who: Actor): Promise<TaskRecord>;
  skipTask(taskId: string, who: Actor): Promise<TaskRecord>;
  cancelTask(taskId: string, who: Actor): Promise<TaskRecord>;

  listWorkstreams(): Promise<WorkstreamRecord[]>;
  getWorkstream(id: string): Promise<WorkstreamRecord | null>;
  listTasks(workstreamId: string): Promise<TaskRecord[]>;
  /** How many tasks of each workstream are in each status (statuses with none are left out). */
  countTasks(): Promise<Map<string, Partial<Record<TaskStatus, number>>>>;
  getTask(id: string): Promise<TaskRecord | null>;
  /** Ids (workstreams, tasks) that start with `prefix`, for resolving what a person typed. */
  findIds(prefix: string, limit: number): Promise<{ workstreams: string[]; tasks: string[] }>;
  findWorkstreamsByName(name: string): Promise<WorkstreamRecord[]>;
  listWorkers(): Promise<WorkerRecord[]>;
  listTransitions(query?: TransitionQuery): Promise<TransitionRecord[]>;
  listInterventions(limit?: number): Promise<InterventionRecord[]>;
  /** Count of transitions per (entity id, event), e.g. to count completions. */
  countEvents(event: string, workstreamId?: string): Promise<Map<string, number>>;

  /** The current state, without liveness fields (what replay must reproduce). */
  snapshot(): Promise<StateSnapshot>;
  /** Rebuilds state from the transition log alone. */
  replay(): Promise<StateSnapshot>;
  verifyChain(): Promise<ChainReport>;

  /** Calls `fn` soon after another process may have queued work; returns an unsubscribe. */
  onWake(fn: () => void): () => void;
  close(): Promise<void>;
}
