import type { Failure, FailureCategory } from "../model/failure.js";
import type {
  BreakerRecord,
  DegradationRecord,
  InterventionRecord,
  PatternRecord,
  ResourceRecord,
  Severity,
  TaskRecord,
  TransitionRecord,
  WorkerControl,
  WorkerRecord,
  WorkstreamRecord,
} from "../model/records.js";
import type { WorkstreamSpec } from "../model/spec.js";
import type { EntityKind, TaskStatus, WorkerStatus } from "../model/states.js";
import type { CompensationOrder, CompensationPlan } from "../recovery/compensate.js";
import type { FailureDecision } from "../recovery/retry.js";
import type { BackupInfo, BackupOptions } from "../state/backups.js";
import type { Checkpoint, CheckpointRef } from "../state/checkpoints.js";
import type { RecoveryPlan } from "../state/recovery-plan.js";
import type { ChainReport } from "./chain.js";
import type { StateSnapshot } from "./replay.js";

/**
 * Decides what happens to a task after a failure. Called inside the store's transaction with the
 * task as stored, so the decision always sees the authoritative attempt count.
 */
export type FailurePlanner = (task: TaskRecord, failure: Failure, now: number) => FailureDecision;

/** What a worker reports about a task it held. Every outcome is fenced by the lease token. */
export type Outcome =
  | {
      kind: "complete";
      taskId: string;
      token: number;
      output: unknown;
      /** The quality the handler reported for its result, in [0, 1]. */
      quality?: number;
    }
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
  /**
   * What the worker can do: a task that requires capabilities is claimed only when all of them
   * are here (default none: only tasks that require nothing).
   */
  capabilities?: readonly string[];
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
  /** The system's degradation level as stored, for handlers' `ctx.degradation`. */
  degradation: DegradationView;
}

/** What a handler sees of the degradation level. */
export type DegradationView = Pick<
  DegradationRecord,
  "level" | "name" | "quality" | "capabilities"
>;

/** A resource as people see it: its record, and how many tasks hold it and wait for it. */
export type ResourceView = ResourceRecord & {
  /** Running tasks holding it now. */
  holders: number;
  /** Queued tasks that need it (it may be one of their alternatives). */
  waiting: number;
};

/** A failed task the monitor queued again because its cause cleared. */
export interface Revival {
  taskId: string;
  workstreamId: string;
  /** What cleared, e.g. `breaker search-api closed`. */
  cause: string;
  /** How sure the evidence makes us that a new attempt can succeed, in [0, 1]. */
  confidence: number;
  /** This task's revivals, this one included. */
  revival: number;
}

/** Limits of {@link Store.reviveTasks}. */
export interface RevivalOptions {
  /** A task is revived at most this many times (default 3). */
  maxRevivals: number;
  /** Revive only on evidence at least this strong (default 0.5). */
  minConfidence: number;
  /** A rate-limited task waits at least this long after failing, when no Retry-After says more. */
  rateLimitWindowMs: number;
  /** Most tasks revived per call. */
  limit: number;
}

/** A lease held by a worker, as it reports it in a heartbeat. */
export interface HeldLease {
  taskId: string;
  token: number;
  /**
   * The handler reported progress since the worker's last heartbeat (`ctx.progress()`, or
   * `ctx.heartbeat(details)`): the store stamps the task's `progressAt` with its own clock.
   */
  progressed?: boolean;
}

/** A worker as it registers itself. */
export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  handlers: string[];
  /** What it can do (default none); see {@link ExchangeRequest.capabilities}. */
  capabilities?: string[];
  /** Started by `mend worker --supervise`, which restarts it when it exits (default false). */
  supervised?: boolean;
}

/** What a heartbeat tells the worker. */
export interface HeartbeatResult {
  /** Tasks whose lease it no longer holds: it must stop them, as their outcomes will be refused. */
  lost: string[];
  /** An operator's pending request (shut down, restart), or null. */
  control: WorkerControl | null;
}

/** A running task's lease, as an operator sees it. */
export interface LeaseView {
  taskId: string;
  workstreamId: string;
  key: string;
  handler: string;
  workerId: string;
  token: number;
  /** When it expires unless its worker heartbeats (epoch ms). */
  expiresAt: number;
  attempt: number;
}

/** Options of {@link Store.requestWorkerShutdown}. */
export interface WorkerShutdownOptions {
  /** Release the worker's running tasks at once, for other workers, instead of letting it finish them. */
  reassign: boolean;
}

/** What a shutdown request did. */
export interface WorkerShutdown {
  worker: WorkerRecord;
  /**
   * The worker was already unresponsive or shut down: it was marked `shutdown` at once (its
   * tasks released) rather than asked to stop at its next heartbeat.
   */
  immediate: boolean;
  /** Ids of the running tasks released and queued again (their leases revoked). */
  released: string[];
}

/** A task whose lease expired and what the monitor did about it. */
export interface SweptTask {
  taskId: string;
  workerId: string | null;
  decision: FailureDecision;
}

/**
 * A running task the monitor reported stalled (`task_stalled`: no progress for its threshold), or
 * whose progress ended a reported stall (`task_progressing`).
 */
export type StallReport = {
  taskId: string;
  workstreamId: string;
  /** The worker running it. */
  workerId: string | null;
  attempt: number;
  /** The threshold that applies: the task's `stallAfter`, or the monitor's default. */
  stallAfterMs: number;
} & (
  | {
      status: "stalled";
      /** How long it had reported no progress. */
      silentForMs: number;
    }
  | {
      status: "progressing";
      /** From the stall's report to the progress. */
      stalledForMs: number;
    }
);

/**
 * One attempt's end (or start) as read from the log for pattern detection and degradation: just
 * what they need, without decoding whole records.
 */
export interface TaskOutcome {
  seq: number;
  at: number;
  taskId: string;
  workstreamId: string;
  /** `started`, `ok` (completed) or `failed` (an attempt failed, whatever came next). */
  kind: "started" | "ok" | "failed";
  /** The failure's category, for `failed`. */
  category: FailureCategory | null;
  handler: string;
  breaker: string | null;
  /** The resources the task needs (JSON, as stored), or null. */
  resources: string | null;
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

/** Options of {@link Store.repair}. */
export interface RepairOptions {
  who: Actor;
  planner: FailurePlanner;
  /** A running task whose lease expired longer ago than this is treated as lost. */
  leaseGraceMs: number;
  dryRun: boolean;
}

/** One entity whose stored row disagreed with the log, and in which fields (`*`: row missing). */
export interface RowRepair {
  kind: EntityKind;
  id: string;
  fields: string[];
}

/** What a repair changed (or, in a dry run, would change). */
export interface RepairOutcome {
  /** Rows rewritten from the log. */
  rows: RowRepair[];
  /** Running tasks without a live lease, handed to the retry policy as `worker_lost`. */
  requeued: string[];
  /** Workstreams whose status did not follow from their tasks. */
  workstreams: { id: string; from: string; to: string }[];
  /** Rows the log never created: nothing to derive them from, left for a person. */
  unexplained: { kind: EntityKind; id: string }[];
}

/** Overrides an operator may give when retrying a task. */
export interface RetryOverrides {
  timeoutMs?: number;
  maxAttempts?: number;
}

/** Options of the workstream recoveries. */
export interface RecoveryOptions {
  /** Compute and return the plan only: nothing is written. */
  dryRun?: boolean;
  /**
   * Rollback only: the tasks completed since the checkpoint that declare a compensation are
   * undone by a compensation workstream and reset, instead of being kept.
   */
  compensate?: boolean;
}

/** Options of {@link Store.compensateWorkstream}. */
export interface CompensateOptions {
  /** Default: the order of the workstream's compensation policy. */
  order?: CompensationOrder;
  /** Compute and return the plan only: nothing is written. */
  dryRun?: boolean;
}

/** What cancelling a workstream did. */
export interface WorkstreamCancellation {
  workstream: WorkstreamRecord;
  /** Keys of the tasks cancelled; running ones lost their lease (their workers are told). */
  cancelled: string[];
  /** The compensation scheduled because the workstream's policy compensates on cancel. */
  compensation: CompensationPlan | null;
}

/** What removing a dependency changed (or, in a dry run, would change). */
export interface DependencyRemoval {
  taskId: string;
  /** Key of the dependency removed. */
  removed: string;
  deps: { from: string[]; to: string[] };
  /** `queued` when nothing else held the task back. */
  status: { from: TaskStatus; to: TaskStatus };
}

/**
 * The one place state lives. Every change goes through the implementation's transition function
 * (DESIGN.md invariant 1); driver types never leak out of it.
 */
export interface Store {
  /** The store's location, e.g. `sqlite:/path/mend.db` (passwords redacted). */
  readonly url: string;
  /**
   * Whether {@link Store.backup} works: the SQLite store copies its file; a PostgreSQL store is
   * backed up by the server's own tools.
   */
  readonly backupsSupported: boolean;

  /** Accepts a validated workstream; all of it or nothing is written. */
  submit(
    spec: WorkstreamSpec,
    actor?: string,
  ): Promise<{ workstreamId: string; taskIds: string[] }>;

  /** Settles a worker's outcomes and claims ready tasks, as one transaction (group commit). */
  exchange(req: ExchangeRequest): Promise<ExchangeResult>;

  /**
   * Renews the leases a worker still holds; returns the ids of those it no longer holds, and an
   * operator's pending request to the worker.
   */
  heartbeat(
    workerId: string,
    status: WorkerStatus,
    leases: HeldLease[],
    leaseMs: number,
  ): Promise<HeartbeatResult>;

  registerWorker(info: WorkerInfo): Promise<void>;
  /** Marks a worker shut down after it released its tasks. */
  stopWorker(workerId: string): Promise<void>;

  /** Requeues (or fails) every running task whose lease has expired. */
  sweepExpiredLeases(planner: FailurePlanner): Promise<SweptTask[]>;
  /** Fails queued tasks whose overall deadline has passed; returns their ids. */
  expireDeadlines(): Promise<string[]>;
  /**
   * Reports running tasks without progress for their `stallAfterMs` (or `defaultStallAfterMs`)
   * as stalled, once per silence (`task_stalled`, setting `stalledAt`), and stalled ones that
   * progressed since as progressing again (`task_progressing`, clearing it). Silence counts from
   * the attempt's last progress, or its start. Writes nothing when neither is due.
   */
  detectStalls(defaultStallAfterMs: number): Promise<StallReport[]>;
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
  /**
   * Completions and failed attempts after `afterSeq`, oldest first, and task starts too when
   * `starts` (for latencies).
   */
  listOutcomes(afterSeq: number, limit: number, starts: boolean): Promise<TaskOutcome[]>;
  /** The last record's seq (0 for an empty log). */
  lastSeq(): Promise<number>;
  listInterventions(limit?: number): Promise<InterventionRecord[]>;
  /** Count of transitions per (entity id, event), e.g. to count completions. */
  countEvents(event: string, workstreamId?: string): Promise<Map<string, number>>;

  // ---- workstream recovery: checkpoints, rollback, re-runs, DAG edits. Each change is an
  // intervention (actor, reason, before and after); archived and merged workstreams refuse them.

  /** A workstream's checkpoints, newest first: the newest `limit`, or all. */
  listCheckpoints(workstreamId: string, limit?: number): Promise<Checkpoint[]>;
  /**
   * Rolls a workstream back to a checkpoint: running tasks lose their lease, tasks take their
   * state at the checkpoint (queued or running ones become pending), completed tasks stay. With
   * `compensate`, those completed since the checkpoint that declare a compensation are undone by
   * a compensation workstream and reset too; they wait (pending) until it completes. The store is
   * backed up first (not for a dry run, nor for a rollback that is refused).
   */
  rollbackWorkstream(
    workstreamId: string,
    to: CheckpointRef,
    who: Actor,
    options?: RecoveryOptions,
  ): Promise<RecoveryPlan>;
  /** Runs every task again (`all`), or the failed and cancelled ones and their dependents. */
  retryWorkstream(
    workstreamId: string,
    scope: "all" | "failed",
    who: Actor,
    options?: RecoveryOptions,
  ): Promise<RecoveryPlan>;
  /** Runs the task `fromTask` (its key) and everything downstream of it again. */
  resumeWorkstream(
    workstreamId: string,
    fromTask: string,
    who: Actor,
    options?: RecoveryOptions,
  ): Promise<RecoveryPlan>;
  /** Removes "`taskId` depends on `depId`"; the task is queued if nothing else holds it. */
  removeDependency(
    taskId: string,
    depId: string,
    who: Actor,
    options?: RecoveryOptions,
  ): Promise<DependencyRemoval>;
  /**
   * Cancels an active or failed workstream: its pending, queued and running tasks are cancelled
   * (running ones lose their lease) and it ends `cancelled`; its completed tasks are compensated
   * in the same transaction when its policy compensates on cancel (the default).
   */
  cancelWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamCancellation>;
  /**
   * Undoes a finished (completed, failed or cancelled) workstream's completed tasks: a new
   * workstream `compensate <name>` runs each one's compensating handler with the task's input
   * and output, in the order asked for. Tasks without a compensation, or already compensated
   * since they completed, are skipped; with nothing to undo nothing is written. Refused for an
   * active, archived or merged workstream, a compensation itself, or one whose earlier
   * compensation is still active.
   */
  compensateWorkstream(
    workstreamId: string,
    who: Actor,
    options?: CompensateOptions,
  ): Promise<CompensationPlan>;
  /** Closes a finished workstream for good (completed, failed or cancelled). */
  archiveWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamRecord>;
  /** Records that a completed workstream's results were merged into their destination (final). */
  mergeWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamRecord>;

  /** The current state, without liveness fields (what replay must reproduce). */
  snapshot(): Promise<StateSnapshot>;
  /** Rebuilds state from the transition log alone. */
  replay(): Promise<StateSnapshot>;
  verifyChain(): Promise<ChainReport>;

  // -------------------------------------------------------------- backups and validation

  /**
   * Takes a consistent copy of the whole store while workers run, then applies the retention
   * policy. Logged as an intervention when `options.actor` (a person) asked for it.
   */
  backup(options: BackupOptions): Promise<BackupInfo>;
  /** Complete backups of this store, newest first. */
  listBackups(): Promise<BackupInfo[]>;
  /** Problems the database's own integrity check finds; empty when it is sound. */
  integrityCheck(): Promise<string[]>;

  // -------------------------------------------------------------- repair

  /**
   * Fixes what follows from the log, in one transaction: rows that disagree with it are rewritten
   * from it, running tasks without a live lease go through the retry policy as `worker_lost`, and
   * workstream statuses are recomputed. A dry run computes exactly that and writes nothing. Only
   * meaningful when the hash chain verifies. Logged as an intervention when anything changed.
   */
  repair(options: RepairOptions): Promise<RepairOutcome>;

  // -------------------------------------------------------------- recovery strategies

  /** Every circuit breaker, by name. */
  listBreakers(): Promise<BreakerRecord[]>;
  /**
   * A person opens (until closed again), closes, or resets (closes and clears the counters of) a
   * breaker; logged as an intervention. Opening a breaker no task named yet creates it.
   */
  controlBreaker(
    name: string,
    action: "open" | "close" | "reset",
    who: Actor,
  ): Promise<BreakerRecord>;
  /**
   * Escalates failed tasks left to automatic recovery (level 1) for longer than `afterMs`: they
   * get the level and next command a person needs (event `task_escalated`). Returns their ids.
   */
  escalateStale(afterMs: number): Promise<string[]>;
  /** Opens a closed breaker early (a detected pattern); null when it was not closed. */
  tripBreaker(name: string, reason: string): Promise<BreakerRecord | null>;
  /** Moves open breakers whose open time is up to half-open (the claim path does it too). */
  advanceBreakers(): Promise<BreakerRecord[]>;
  /**
   * Queues again the failed tasks whose failure was recoverable and whose cause has cleared (a
   * breaker closed again, a rate-limit window passed), within the options' bounds, in workstreams
   * that allow revival.
   */
  reviveTasks(options: RevivalOptions): Promise<Revival[]>;
  /** The stored degradation level (level 0, `normal`, when none was ever set). */
  getDegradation(): Promise<DegradationRecord>;
  /** Records a new degradation level; null when it is the current one already. */
  setDegradation(
    view: DegradationView,
    reason: string,
    actor: string,
  ): Promise<DegradationRecord | null>;
  /** Records newly detected patterns (ids already recorded are skipped); returns the new ones. */
  recordPatterns(
    patterns: Omit<PatternRecord, "status" | "createdAt" | "updatedAt">[],
  ): Promise<PatternRecord[]>;
  /** Patterns in a status (all when omitted), newest first. */
  listPatterns(status?: PatternRecord["status"]): Promise<PatternRecord[]>;
  /** Settles an active pattern as confirmed or a false positive. */
  judgePattern(id: string, verdict: "confirmed" | "false_positive", reason: string): Promise<void>;

  // -------------------------------------------------------------- workers (operator surface)

  /** One worker as registered, or null. */
  getWorker(id: string): Promise<WorkerRecord | null>;
  /** The leases of running tasks, soonest expiry first: all of them, or one worker's. */
  listLeases(workerId?: string): Promise<LeaseView[]>;
  /**
   * A person asks a worker to shut down. A live worker (idle or busy) gets the request at its
   * next heartbeat and stops gracefully; with `reassign` its running tasks are released at once,
   * in this transaction (queued again without using an attempt, their leases revoked so its
   * outcomes are refused). A worker already unresponsive or shut down, or silent for the
   * unresponsive threshold (30 s) though no monitor marked it yet, is marked `shutdown` at once
   * and its running tasks are released. Logged as an intervention; refused when the worker
   * is shut down and holds nothing.
   */
  requestWorkerShutdown(
    workerId: string,
    options: WorkerShutdownOptions,
    who: Actor,
  ): Promise<WorkerShutdown>;
  /**
   * A person asks a supervised worker (`mend worker --supervise`) to restart: it stops gracefully
   * at its next heartbeat and exits so that its supervisor starts it again. Logged as an
   * intervention; refused for a worker without a supervisor, or one not heartbeating (as for
   * {@link Store.requestWorkerShutdown}).
   */
  requestWorkerRestart(workerId: string, who: Actor): Promise<WorkerRecord>;

  // -------------------------------------------------------------- resources

  /** Every resource with its holders and waiting tasks, by name. */
  listResources(): Promise<ResourceView[]>;
  /**
   * A person sets a resource's limit (an intervention); a resource no task named yet is created.
   * Tasks already holding it keep their holds; a lower limit takes effect as they end.
   */
  setResourceLimit(id: string, maxHolders: number, who: Actor): Promise<ResourceRecord>;
  /**
   * Takes a resource out of service or puts it back: by a person (an intervention), a health
   * check or a failure pattern (`who` just an actor). Tasks needing an unavailable resource
   * wait, or take an alternative their definition allows. Null when it already was so.
   */
  markResource(
    id: string,
    available: boolean,
    reason: string,
    who: Actor | { actor: string },
  ): Promise<ResourceRecord | null>;
  /** The monitor marks resources exhausted while tasks wait on all their slots, and back. */
  refreshResources(): Promise<ResourceRecord[]>;

  /** Calls `fn` soon after another process may have queued work; returns an unsubscribe. */
  onWake(fn: () => void): () => void;
  close(): Promise<void>;
}
