/**
 * Escalation: how much help a task or workstream needs, and the exact `mend` command to try next
 * (DESIGN.md "Recovery policies": every permanently failed task says its level and the command to
 * try). Follows the Task and Workstream Recovery Decision Trees of the recovery procedures.
 *
 * Pure: the records and the time come in; nothing is read or written. Commands named here are the
 * real CLI commands, so what `mend diagnose` prints can be pasted as is (placeholders in `<…>`).
 */
import { formatDuration } from "../model/duration.js";
import type { Failure, FailureCategory } from "../model/failure.js";
import type { TaskRecord, WorkstreamRecord } from "../model/records.js";
import { FINAL_WORKSTREAM_STATUSES, satisfiesDependents } from "../model/states.js";
import { ruleFor } from "./retry.js";

/** 1 automatic, 2 operator command, 3 manual investigation, 4 code change. */
export type EscalationLevel = 1 | 2 | 3 | 4;

/** What each {@link EscalationLevel} means, as `mend diagnose` prints it. */
export const ESCALATION_LABELS: Readonly<Record<EscalationLevel, string>> = Object.freeze({
  1: "automatic",
  2: "operator command",
  3: "manual investigation",
  4: "code change",
});

/** Why a task needs what it needs. `unknown` also when nothing failed. */
export type DiagnosisCause =
  | "transient"
  | "rate_limited"
  | "dependency"
  | "logic"
  | "definition"
  | "data"
  | "worker"
  | "coordination"
  | "unknown";

/** A command to run and why it is the right one. */
export interface Suggestion {
  command: string;
  why: string;
}

/** What a task needs, from whom, and the command to try next. */
export interface Diagnosis {
  level: EscalationLevel;
  cause: DiagnosisCause;
  /** One sentence: what happened. */
  summary: string;
  /** The exact next command to try. */
  next: Suggestion;
  alternatives: Suggestion[];
  /** At level 1: what the engine will do by itself, and when; otherwise null. */
  automatic: string | null;
}

/** Breaker statuses as the store reports them. */
export type BreakerStatusName = "open" | "half_open" | "closed";

/**
 * A task record, with the revival fields read when present (older records lack them): the circuit
 * breaker guarding the task and how many times the monitor revived it.
 */
export type DiagnosableTask = TaskRecord & { breaker?: string | null; revivals?: number };

/** A workstream record; `revive` says whether the monitor revives its failed tasks. */
export type DiagnosableWorkstream = WorkstreamRecord & { revive?: boolean };

/** What {@link diagnose} needs besides the task. */
export interface DiagnoseContext {
  /** Current time, epoch ms. */
  now: number;
  /**
   * Tasks of the task's workstream, where its dependencies are looked up by key (transitively, to
   * find the failure a pending task waits on). Without them a pending task cannot be blamed on
   * a dependency.
   */
  tasks?: readonly DiagnosableTask[];
  /** The task's workstream: whether it revives failed tasks, and whether it is closed for good. */
  workstream?: DiagnosableWorkstream | null;
  /** Known breaker statuses by breaker name; a breaker not listed is treated as unknown. */
  breakers?: Readonly<Record<string, BreakerStatusName>>;
  /** `worker_lost` streak at which a task is quarantined (the planner's, default 3). */
  quarantineAfter?: number;
}

/** Failures that may pass on a later attempt with nothing changed but time. */
const TRANSIENT: ReadonlySet<FailureCategory> = new Set<FailureCategory>([
  "network",
  "timeout",
  "external_service",
  "rate_limited",
  "resource_exhausted",
  "worker_lost",
]);

/** HTTP statuses that reject the request itself: the input, not the handler, is wrong. */
const INPUT_REJECTED = new Set([400, 422]);
/** Error names of schema validation (zod, and the common hand-rolled name). */
const VALIDATION_ERRORS = new Set(["ZodError", "ValidationError"]);

/**
 * Diagnoses one task (Task Recovery Decision Tree): not failed → level 1, what the engine does
 * next; a pending task blocked by a failed dependency → that dependency's diagnosis; otherwise by
 * its last error's category (see docs/escalation.md for the table).
 */
export function diagnose(task: DiagnosableTask, context: DiagnoseContext): Diagnosis {
  switch (task.status) {
    case "completed":
      return automatic(task, "unknown", `${task.key} completed.`, "nothing to do: it completed");
    case "queued":
      return queued(task, context);
    case "running":
      return running(task, context);
    case "pending":
      return pending(task, context);
    case "cancelled":
    case "skipped":
      return inClosedWorkstream(task, context) ?? stopped(task);
    case "failed":
      return inClosedWorkstream(task, context) ?? failed(task, context);
  }
}

// ---- level 1: the engine is on it

function automatic(
  task: DiagnosableTask,
  cause: DiagnosisCause,
  summary: string,
  what: string,
): Diagnosis {
  return {
    level: 1,
    cause,
    summary,
    next: { command: `mend show ${task.id}`, why: "follow its attempts; nothing needs doing" },
    alternatives: [],
    automatic: what,
  };
}

function causeOrUnknown(task: DiagnosableTask): DiagnosisCause {
  return task.lastError ? causeOf(task.lastError) : "unknown";
}

/** Attempts the task's policy allows for its last failure's category. */
function maxAttempts(task: DiagnosableTask): number {
  return ruleFor(task.retry, task.lastError?.category ?? "unknown").maxAttempts;
}

function at(ms: number, now: number): string {
  const when = new Date(ms).toISOString();
  return ms > now ? `at ${when} (in ${formatDuration(ms - now)})` : `now (due since ${when})`;
}

function queued(task: DiagnosableTask, context: DiagnoseContext): Diagnosis {
  const attempt = `attempt ${task.attempts + 1} of ${maxAttempts(task)}`;
  const breaker = task.breaker ? context.breakers?.[task.breaker] : undefined;
  if (task.breaker && breaker !== undefined && breaker !== "closed") {
    return automatic(
      task,
      causeOrUnknown(task),
      `${task.key} is queued behind circuit breaker ${task.breaker}, which is ${breaker}.`,
      `${attempt} when breaker ${task.breaker} lets calls through`,
    );
  }
  const summary = task.lastError
    ? `${task.key} failed (${describeFailure(task.lastError)}) and is queued for a retry.`
    : `${task.key} is queued.`;
  return automatic(
    task,
    causeOrUnknown(task),
    summary,
    `${attempt} ${at(task.runAt, context.now)}, on the next worker that serves ${task.handler}`,
  );
}

function running(task: DiagnosableTask, context: DiagnoseContext): Diagnosis {
  const stalledAt = task.stalledAt ?? null;
  if (stalledAt !== null) return stalled(task, stalledAt, context);
  const lease =
    task.leaseExpiresAt === null
      ? ""
      : `; its lease runs to ${at(task.leaseExpiresAt, context.now)}`;
  return automatic(
    task,
    causeOrUnknown(task),
    `${task.key} is running attempt ${task.attempts} of ${maxAttempts(task)}.`,
    `finishes on worker ${task.leaseWorker ?? "?"}${lease}; if that worker is lost, the task is queued again when the lease expires`,
  );
}

/**
 * A running task the monitor reported stalled: it may still finish, but nothing says it is
 * getting anywhere, and only its timeout ends it by itself.
 */
function stalled(task: DiagnosableTask, stalledAt: number, context: DiagnoseContext): Diagnosis {
  const ago = formatDuration(Math.max(0, context.now - stalledAt));
  return {
    level: 3,
    cause: "unknown",
    summary: `${task.key} is running attempt ${task.attempts} of ${maxAttempts(task)} on worker ${task.leaseWorker ?? "?"}, but stalled: it reported no progress for its stall threshold (reported ${ago} ago). Only its ${formatDuration(task.timeoutMs)} timeout ends the attempt by itself.`,
    next: show(
      task,
      "task_stalled says how long it had been silent; then the worker's log says what the handler was doing (a call without a timeout, a lock, a loop). A long step should call ctx.progress()",
    ),
    alternatives: [
      {
        command: `mend cancel ${task.id} --reason stalled`,
        why: "if it is hung: its worker is told at its next heartbeat and aborts it; mend retry runs it again",
      },
    ],
    automatic: null,
  };
}

// ---- dependencies

/** The failed (critical) or cancelled task a pending task waits on, found through pending ones. */
function blockerOf(
  task: DiagnosableTask,
  byKey: ReadonlyMap<string, DiagnosableTask>,
  seen: Set<string>,
): DiagnosableTask | null {
  for (const key of task.deps) {
    const dep = byKey.get(key);
    if (!dep || seen.has(key)) continue;
    seen.add(key);
    if ((dep.status === "failed" && dep.critical) || dep.status === "cancelled") return dep;
    if (dep.status === "pending") {
      const found = blockerOf(dep, byKey, seen);
      if (found) return found;
    }
  }
  return null;
}

function pending(task: DiagnosableTask, context: DiagnoseContext): Diagnosis {
  const tasks = (context.tasks ?? []).filter((t) => t.workstreamId === task.workstreamId);
  const byKey = new Map(tasks.map((t) => [t.key, t]));
  const blocker = blockerOf(task, byKey, new Set([task.key]));
  if (!blocker) {
    const waiting = task.deps
      .map((k) => byKey.get(k))
      .filter((dep) => dep && !satisfiesDependents(dep.status, dep.critical))
      .map((dep) => `${dep!.key} (${dep!.status})`);
    return automatic(
      task,
      "unknown",
      `${task.key} waits for its dependencies.`,
      `starts once ${waiting.length ? waiting.join(", ") : "its dependencies"} complete`,
    );
  }
  const d = diagnose(blocker, context);
  const direct = task.deps.includes(blocker.key);
  const alternatives = [...d.alternatives];
  if (!alternatives.some((a) => a.command.startsWith(`mend skip ${blocker.id} `))) {
    alternatives.push(skip(blocker, `let ${task.key} run without ${blocker.key}'s result`));
  }
  if (direct) {
    alternatives.push({
      command: `mend deps remove --from ${task.id} --to ${blocker.key} --reason "<why it is not needed>"`,
      why: `if ${task.key} does not really need ${blocker.key}: it starts without it`,
    });
  }
  return {
    level: d.level,
    cause: "dependency",
    summary: `${task.key} cannot start: it depends${direct ? "" : " indirectly"} on ${blocker.key}, which ${blocker.status === "failed" ? "failed" : "was cancelled"}. ${d.summary}`,
    next: { command: d.next.command, why: `${blocker.key} blocks it: ${d.next.why}` },
    alternatives,
    automatic: d.automatic && `${task.key} starts after ${blocker.key}: ${d.automatic}`,
  };
}

// ---- the operator's turn

function skip(task: DiagnosableTask, why: string): Suggestion {
  return { command: `mend skip ${task.id} --reason "<why its result is not needed>"`, why };
}

function show(task: DiagnosableTask, why: string): Suggestion {
  return { command: `mend show ${task.id}`, why };
}

/**
 * A task of an archived or merged workstream can never run again in place, whatever its failure:
 * the only way on is a new workstream. Null for any other workstream.
 */
function inClosedWorkstream(task: DiagnosableTask, context: DiagnoseContext): Diagnosis | null {
  const ws = context.workstream;
  if (!ws || !FINAL_WORKSTREAM_STATUSES.has(ws.status)) return null;
  return {
    level: 2,
    cause: task.lastError ? causeOf(task.lastError) : "unknown",
    summary: `${task.key} is ${task.status} in workstream ${ws.name}, which is ${ws.status}: closed for good.`,
    next: {
      command: "mend submit <definition file>",
      why: `an ${ws.status} workstream is final (no retry, rollback or resume); run the work again as a new workstream`,
    },
    alternatives: [show(task, "read what happened to it")],
    automatic: null,
  };
}

function stopped(task: DiagnosableTask): Diagnosis {
  const skipped = task.status === "skipped";
  const alternatives = [show(task, "its history says who stopped it and why")];
  // `workstream retry-failed` re-runs failed and cancelled tasks, not skipped ones.
  if (!skipped) {
    alternatives.push({
      command: `mend workstream retry-failed ${task.workstreamId}`,
      why: "run every failed and cancelled task of the workstream again, and what depends on them",
    });
  }
  return {
    level: 2,
    cause: "unknown",
    summary: skipped
      ? `${task.key} was skipped; its dependents ran without its result.`
      : `${task.key} was cancelled.`,
    next: {
      command: `mend retry ${task.id}`,
      why: "queues it again with a fresh attempt budget, if its result is needed after all",
    },
    alternatives,
    automatic: null,
  };
}

function failed(task: DiagnosableTask, context: DiagnoseContext): Diagnosis {
  const f = task.lastError;
  if (!f) {
    return {
      level: 3,
      cause: "unknown",
      summary: `${task.key} failed without a recorded error.`,
      next: show(task, "its history says how it got there"),
      alternatives: [
        {
          command: "mend state validate",
          why: "a failure without an error is not what Mend writes",
        },
      ],
      automatic: null,
    };
  }
  const quarantineAfter = context.quarantineAfter ?? 3;
  if (f.category === "worker_lost" && task.workerLostStreak >= quarantineAfter) {
    return quarantined(task);
  }
  const revival = revived(task, f, context);
  if (revival) return revival;
  if (TRANSIENT.has(f.category) || (f.category === "tool_failure" && f.recoverable)) {
    return transient(task, f);
  }
  switch (f.category) {
    case "logic":
      return isInputRejected(f) ? definition(task, f) : codeChange(task, f);
    case "tool_failure":
      return codeChange(task, f);
    case "quality":
      return quality(task, f);
    case "data_corruption":
      return data(task, f);
    case "invalid_state":
    case "coordination":
      return coordination(task, f);
    default:
      return unclassified(task, f);
  }
}

function causeOf(f: Failure): DiagnosisCause {
  switch (f.category) {
    case "rate_limited":
      return "rate_limited";
    case "worker_lost":
      return "worker";
    case "logic":
      return isInputRejected(f) ? "definition" : "logic";
    case "tool_failure":
      return f.recoverable ? "transient" : "logic";
    case "data_corruption":
      return "data";
    case "invalid_state":
    case "coordination":
      return "coordination";
    case "unknown":
      return "unknown";
    default:
      return "transient";
  }
}

function isInputRejected(f: Failure): boolean {
  return (
    (f.status !== undefined && INPUT_REJECTED.has(f.status)) ||
    (f.name !== undefined && VALIDATION_ERRORS.has(f.name))
  );
}

/** `TypeError: x is undefined (HTTP 422)`, as one phrase. */
export function describeFailure(f: Failure): string {
  const name = f.name && f.name !== "Error" && !f.message.startsWith(f.name) ? `${f.name}: ` : "";
  return `${f.category}, ${name}${f.message}${f.status ? ` (HTTP ${f.status})` : ""}`;
}

function attempts(n: number): string {
  return `${n} attempt${n === 1 ? "" : "s"}`;
}

function failedAfter(task: DiagnosableTask, f: Failure): string {
  const critical = task.critical ? "" : " (not critical: its dependents went on without it)";
  return `${task.key} failed for good after ${attempts(task.attempts)}: ${describeFailure(f)}${critical}.`;
}

function quarantined(task: DiagnosableTask): Diagnosis {
  return {
    level: 3,
    cause: "worker",
    summary: `${task.key} lost its worker ${task.workerLostStreak} times in a row and was quarantined rather than retried.`,
    next: show(
      task,
      "every attempt ended with its worker gone: the handler likely crashes the process (out of memory, native crash, process.exit) or blocks the event loop so heartbeats stop; read each attempt, then the worker logs",
    ),
    alternatives: [
      {
        command: "mend events --severity warning",
        why: "worker_unresponsive and worker_presumed_dead events around the attempts say which workers died and when",
      },
      {
        command: `mend retry ${task.id} --reason "<what was fixed>"`,
        why: "once the handler is fixed, or on workers with more memory",
      },
      skip(task, "if its result is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

/** Level 1 when the monitor will revive the task itself: its breaker is open and revival is on. */
function revived(task: DiagnosableTask, f: Failure, context: DiagnoseContext): Diagnosis | null {
  if (!f.recoverable || !task.breaker || context.workstream?.revive !== true) return null;
  const status = context.breakers?.[task.breaker];
  if (status !== "open" && status !== "half_open") return null;
  const before = task.revivals
    ? ` (revived ${task.revivals} time${task.revivals === 1 ? "" : "s"} so far)`
    : "";
  return {
    level: 1,
    cause: causeOf(f),
    summary: `${failedAfter(task, f)} Circuit breaker ${task.breaker} is ${status}: the service it guards is failing.`,
    next: show(
      task,
      `nothing to do while ${task.breaker} is ${status}: the task comes back by itself`,
    ),
    alternatives: [retryMore(task, f, "to try now anyway, with a larger budget")],
    automatic: `revived when breaker ${task.breaker} closes${before}`,
  };
}

/** `mend retry` with a larger budget, and for a timeout a doubled deadline. */
function retryMore(task: DiagnosableTask, f: Failure, why: string): Suggestion {
  const budget = Math.max(3, 2 * maxAttempts(task));
  const timeout =
    f.category === "timeout" ? ` --timeout ${formatDuration(2 * task.timeoutMs)}` : "";
  return { command: `mend retry ${task.id}${timeout} --max-attempts ${budget}`, why };
}

function transient(task: DiagnosableTask, f: Failure): Diagnosis {
  const max = maxAttempts(task);
  const reasons: Partial<Record<FailureCategory, string>> = {
    timeout: `it ran past its ${formatDuration(task.timeoutMs)} deadline on every attempt: twice the time and more attempts`,
    rate_limited: `the service kept rate-limiting it${f.retryAfterMs ? ` (it asked to wait ${formatDuration(f.retryAfterMs)})` : ""}: once its quota resets, more attempts spread over more time`,
    resource_exhausted:
      "free the memory, disk or quota it ran out of first, or it fails the same way; then more attempts",
    worker_lost: "its workers were lost (not often enough to quarantine it): more attempts",
  };
  const why = reasons[f.category];
  return {
    level: 2,
    cause: causeOf(f),
    summary: `${failedAfter(task, f)} The policy allowed ${max}.`,
    next: retryMore(
      task,
      f,
      why ??
        `${f.category} failures are usually temporary: the policy's ${max} attempts were not enough`,
    ),
    alternatives: [
      show(task, "read every attempt first if the failures did not look temporary"),
      skip(task, "if its result is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

function codeChange(task: DiagnosableTask, f: Failure): Diagnosis {
  const permissions = f.status === 401 || f.status === 403;
  const fix = permissions
    ? `the credentials or permissions handler ${task.handler} uses`
    : f.category === "tool_failure"
      ? `the tool call handler ${task.handler} makes (the tool says it cannot succeed as made)`
      : `handler ${task.handler}`;
  return {
    level: 4,
    cause: "logic",
    summary: failedAfter(task, f),
    next: {
      command: `mend retry ${task.id} --reason "<what was fixed>"`,
      why: `after you fix ${fix} and restart the workers: retrying unchanged code fails the same way`,
    },
    alternatives: [
      show(task, "read the error and its input"),
      skip(task, "if its result is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

function definition(task: DiagnosableTask, f: Failure): Diagnosis {
  return {
    level: 4,
    cause: "definition",
    summary: `${failedAfter(task, f)} The request built from the task's input was rejected.`,
    next: {
      command: "mend submit <corrected definition file>",
      why: "the input is wrong, and a submitted task's input cannot be edited (it is part of the log), so the fix is a change to the definition, run as a new workstream",
    },
    alternatives: [
      {
        command: `mend retry ${task.id} --reason "<what was fixed>"`,
        why: `if the input is right and handler ${task.handler} builds the request wrongly: after fixing the handler and restarting the workers`,
      },
      show(task, "read the error and the input it was given"),
      skip(task, "if its result is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

function quality(task: DiagnosableTask, f: Failure): Diagnosis {
  return {
    level: 2,
    cause: "transient",
    summary: `${failedAfter(task, f)} Its results stayed below the quality threshold.`,
    next: retryMore(
      task,
      f,
      "results vary from attempt to attempt: more attempts may pass the threshold; if they keep missing, give the task a fallback handler in its definition",
    ),
    alternatives: [
      show(task, "read the failed results"),
      skip(task, "if a result below the threshold is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

function data(task: DiagnosableTask, f: Failure): Diagnosis {
  return {
    level: 3,
    cause: "data",
    summary: `${failedAfter(task, f)} Data failed an integrity check.`,
    next: {
      command: "mend state validate",
      why: "checks the store (integrity, hash chain, replay): it tells whether Mend's state is damaged or only the data the task read",
    },
    alternatives: [
      {
        command: "mend state repair --dry-run",
        why: "if validation finds rows that disagree with an intact log: shows what repair would rewrite",
      },
      {
        command: "mend state restore --from-backup latest",
        why: "if the database or its hash chain is damaged",
      },
      {
        command: `mend retry ${task.id} --reason "<what was fixed>"`,
        why: "once the data it reads is sound again",
      },
    ],
    automatic: null,
  };
}

function coordination(task: DiagnosableTask, f: Failure): Diagnosis {
  return {
    level: 3,
    cause: "coordination",
    summary: `${failedAfter(task, f)} Something was in a state nobody expected (deadlock, cascade, conflict).`,
    next: show(task, "read what it saw and when, next to what ran beside it"),
    alternatives: [
      {
        command: `mend dag ${task.workstreamId}`,
        why: "see what it depends on and what depends on it",
      },
      { command: "mend state validate", why: "rule out a damaged store" },
      {
        command: `mend retry ${task.id} --reason "<what was resolved>"`,
        why: "once the conflict is resolved",
      },
    ],
    automatic: null,
  };
}

function unclassified(task: DiagnosableTask, f: Failure): Diagnosis {
  return {
    level: 3,
    cause: "unknown",
    summary: `${failedAfter(task, f)} Mend could not classify the error.`,
    next: show(
      task,
      "read the attempts: a temporary error deserves a retry with more attempts (and a classifier rule), a bug a fix",
    ),
    alternatives: [
      retryMore(task, f, "if the error looks temporary"),
      skip(task, "if its result is not needed: its dependents run without it"),
    ],
    automatic: null,
  };
}

// ---- workstreams

/** A task of a workstream that needs a person, and at which level. */
export interface TaskNeedingAPerson {
  taskId: string;
  key: string;
  level: EscalationLevel;
}

/** What a workstream needs (Workstream Recovery Decision Tree). */
export interface WorkstreamDiagnosis {
  level: EscalationLevel;
  summary: string;
  next: Suggestion;
  alternatives: Suggestion[];
  /** Failed and cancelled tasks whose own diagnosis is above level 1. */
  tasksNeedingAPerson: TaskNeedingAPerson[];
}

/**
 * Diagnoses a workstream from its tasks: every task failed → a systemic cause (workers, a service,
 * configuration), level 3; a critical task failed → that task's diagnosis, then
 * `mend workstream retry-failed`; otherwise what is left is an operator command or nothing.
 */
export function diagnoseWorkstream(
  ws: DiagnosableWorkstream,
  tasks: readonly DiagnosableTask[],
  context: Omit<DiagnoseContext, "tasks" | "workstream">,
): WorkstreamDiagnosis {
  const full = { ...context, tasks, workstream: ws };
  const diagnosed = tasks.map((task) => ({ task, d: diagnose(task, full) }));
  const needing = diagnosed.filter(
    ({ task, d }) => (task.status === "failed" || task.status === "cancelled") && d.level > 1,
  );
  const tasksNeedingAPerson = needing.map(({ task, d }) => ({
    taskId: task.id,
    key: task.key,
    level: d.level,
  }));
  const failedTasks = diagnosed.filter(({ task }) => task.status === "failed");
  const retryFailed: Suggestion = {
    command: `mend workstream retry-failed ${ws.id}`,
    why: "once the causes are fixed: runs every failed and cancelled task again, and what depends on them",
  };
  const status: Suggestion = { command: `mend status ${ws.id}`, why: "see every task" };
  const base = { tasksNeedingAPerson };

  if (FINAL_WORKSTREAM_STATUSES.has(ws.status)) {
    return {
      ...base,
      level: 1,
      summary: `${ws.name} is ${ws.status}: closed for good.`,
      next: status,
      alternatives: [],
    };
  }

  const ran = tasks.filter((t) => t.attempts > 0);
  const succeeded = tasks.some((t) => t.status === "completed" || t.status === "skipped");
  if (failedTasks.length >= 2 && !succeeded && ran.every((t) => t.status === "failed")) {
    return {
      ...base,
      ...systemic(
        ws,
        failedTasks.map(({ task }) => task),
      ),
      alternatives: [retryFailed],
    };
  }

  const critical = failedTasks.filter(({ task }) => task.critical);
  if (critical.length > 0) {
    // The worst first: fixing it is what the workstream waits on longest.
    const worst = [...critical].sort((a, b) => b.d.level - a.d.level)[0]!;
    const state = ws.status === "active" ? "is still running, but" : `${ws.status}:`;
    const others =
      critical.length === 1
        ? ""
        : ` critical tasks ${critical.map(({ task }) => task.key).join(", ")} failed for good;`;
    return {
      ...base,
      level: worst.d.level,
      summary: `${ws.name} ${state}${others} ${worst.d.summary}`,
      next: {
        command: worst.d.next.command,
        why: worst.d.next.why,
      },
      alternatives: [...worst.d.alternatives, retryFailed, status],
    };
  }

  if (ws.status === "active" || ws.status === "completed") {
    const nonCritical = failedTasks.map(({ task }) => task.key);
    const without = nonCritical.length ? ` without non-critical ${nonCritical.join(", ")}` : "";
    return {
      ...base,
      level: 1,
      summary:
        ws.status === "active"
          ? `${ws.name} is running${without ? `, going on${without}` : ""}.`
          : `${ws.name} completed${without}.`,
      next: status,
      alternatives: nonCritical.length ? [retryFailed] : [],
    };
  }

  // Failed or cancelled with no critical failure: only non-critical or cancelled tasks are left.
  return {
    ...base,
    level: 2,
    summary: `${ws.name} is ${ws.status}; ${needing.length ? `${needing.map(({ task }) => `${task.key} (${task.status})`).join(", ")} did not finish` : "no failed task is left"}.`,
    next: {
      command: retryFailed.command,
      why: "runs the failed and cancelled tasks again, and what depends on them; the completed ones stay",
    },
    alternatives: [status],
  };
}

/** Every task that ran failed: the cause is shared, not in any one task. */
function systemic(
  ws: DiagnosableWorkstream,
  failedTasks: DiagnosableTask[],
): Pick<WorkstreamDiagnosis, "level" | "summary" | "next"> {
  const categories = new Set(failedTasks.map((t) => t.lastError?.category ?? "unknown"));
  const only = categories.size === 1 ? [...categories][0]! : null;
  const all = `${ws.name}: all ${failedTasks.length} tasks that ran failed`;
  if (only === "worker_lost" || only === "resource_exhausted") {
    const what =
      only === "worker_lost"
        ? "workers: they die or hang"
        : "resources: memory, disk or quota ran out";
    return {
      level: 3,
      summary: `${all}, all with ${only}; a systemic problem with the ${what}.`,
      next: {
        command: "mend events --severity warning",
        why: "worker and resource events are not filed under the workstream: see which workers went silent or what ran out, and when",
      },
    };
  }
  const shared =
    only && TRANSIENT.has(only)
      ? `all with ${only}: a service or the network they share is down`
      : only
        ? `all with ${only}: look at configuration (handlers deployed, credentials, the definition)`
        : `with ${[...categories].join(", ")}: look at workers, resources and configuration`;
  return {
    level: 3,
    summary: `${all}, ${shared}.`,
    next: {
      command: `mend events --workstream ${ws.id} --severity error`,
      why: "every failure of the workstream in one list, to see what they have in common",
    },
  };
}
