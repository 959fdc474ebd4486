export { type Clock, FakeClock, systemClock } from "./engine/clock.js";
export { type TaskView, viewWorkstream, type WorkstreamView } from "./engine/inspect.js";
export {
  DEFAULT_STALL_AFTER_MS,
  Monitor,
  type MonitorOptions,
  type ResourceChecks,
  type SweepResult,
} from "./engine/Monitor.js";
export { createPlanner, type PlannerOptions } from "./engine/planner.js";
export { type RunOptions, type RunResult, runWorkstream } from "./engine/run.js";
export { type SubmitOptions, submitWorkstream } from "./engine/submit.js";
export {
  RESTART_EXIT_CODE,
  Supervisor,
  type SupervisorOptions,
  type SupervisorOutcome,
} from "./engine/supervisor.js";
export { HandlerProcessError } from "./engine/isolate.js";
export { LeaseLostError, Worker, type WorkerOptions } from "./engine/Worker.js";
export { isMendError, MendError, type MendErrorCode } from "./errors.js";
export {
  type BreakerDefinition,
  defineWorkstream,
  type TaskRetryDefinition,
  validateDefinition,
  type WorkstreamDefinition,
} from "./model/definition.js";
export type { Failure, FailureCategory } from "./model/failure.js";
export {
  defineTask,
  type HandlerFn,
  type HandlerMap,
  type Isolation,
  type TaskContext,
  type TaskDefinition,
} from "./model/handler.js";
export { loadDefinitionFile, loadHandlersModule, loadResourceChecks } from "./model/load.js";
export type * from "./model/records.js";
export type {
  BreakerConfig,
  CompensationPolicy,
  CompensationSpec,
  FallbackOption,
  FallbackPlan,
  ResourceConfig,
  RetryPolicy,
  TaskSpec,
  WorkstreamSpec,
} from "./model/spec.js";
export type {
  BreakerStatus,
  ResourceStatus,
  TaskStatus,
  WorkerStatus,
  WorkstreamStatus,
} from "./model/states.js";
export { TRANSITIONS } from "./model/states.js";
export {
  COMPLETION_EVENTS,
  computeMetrics,
  FAILED_ATTEMPT_EVENTS,
  type MetricsInput,
  prometheusText,
  type RecoveryMetrics,
} from "./observe/metrics.js";
export { type BreakerState, DEFAULT_BREAKER } from "./recovery/breaker.js";
export {
  type BreakerChangeEvent,
  BreakerOpenError,
  type CallContext,
  type CallFn,
  CallPolicy,
  type CallPolicyOptions,
} from "./recovery/call-policy.js";
export { type ClassifierRule, classifyError, TaskTimeoutError } from "./recovery/classify.js";
export {
  type CompensationInput,
  type CompensationOrder,
  type CompensationPlan,
  planCompensation,
} from "./recovery/compensate.js";
export {
  type DegradationConfig,
  type DegradationView,
  parseDegradationConfig,
} from "./recovery/degrade.js";
export {
  type Diagnosis,
  diagnose,
  diagnoseWorkstream,
  ESCALATION_LABELS,
  type EscalationLevel,
} from "./recovery/escalate.js";
export {
  DEFAULT_PATTERN_CONFIG,
  type PatternConfig,
  parsePatternConfig,
} from "./recovery/patterns.js";
export {
  effectivePolicy,
  type EffectivePolicy,
  POLICY_ORDER,
  validatePolicy,
} from "./recovery/policy.js";
export { RETRY_PRESETS } from "./recovery/retry.js";
export { checkWorker, type WorkerCheck, type WorkerPhase } from "./recovery/worker-check.js";
export { DEFAULT_REVIVAL, REVIVAL_CONFIDENCE } from "./recovery/revive.js";
export {
  type BackupInfo,
  type BackupOptions,
  DEFAULT_RETENTION,
  type RetentionPolicy,
} from "./state/backups.js";
export type { Checkpoint, CheckpointRef, CheckpointTask } from "./state/checkpoints.js";
export { DAG_FORMATS, type DagFormat, type DagWorkstream, renderDag } from "./state/dag-render.js";
export type { RecoveryPlan, TaskChange } from "./state/recovery-plan.js";
export { type RepairReport, repairStore } from "./state/repair.js";
export {
  type CheckResult,
  type ValidationReport,
  type Violation,
  validateStore,
} from "./state/validate.js";
export { openStore, resolveStoreUrl } from "./store/open.js";
export {
  type LiveLease,
  planRestore,
  type RestoreOptions,
  type RestorePlan,
  type RestoreResult,
  restoreFromBackup,
  type JournalRestoreOptions,
  type JournalRestoreResult,
  restoreFromJournal,
  sqlitePathOf,
  type StoreCondition,
} from "./store/sqlite/backup.js";
export type {
  Actor,
  DependencyRemoval,
  HeartbeatResult,
  LeaseView,
  Revival,
  RevivalOptions,
  RecoveryOptions,
  RepairOptions,
  RepairOutcome,
  ResourceView,
  StallReport,
  Store,
  WorkerShutdown,
  WorkerShutdownOptions,
} from "./store/store.js";
