/**
 * The recovery report: what failed, what recovered on its own and how fast, and the two numbers
 * that must be zero (tasks lost, duplicate completions). Computed from the transition log alone,
 * the source of truth, so it is as trustworthy as the log; pure, so it can be tested on a
 * hand-made log.
 */
import { formatDuration } from "../model/duration.js";
import type { TaskRecord, TransitionRecord, WorkstreamRecord } from "../model/records.js";
import { TASK_STATUSES, type TaskStatus, TERMINAL_TASK_STATUSES } from "../model/states.js";
import {
  COMPLETION_EVENTS,
  FAILED_ATTEMPT_EVENTS as FAILURE_EVENTS,
  isPerson,
} from "../observe/metrics.js";
import type { LedgerEntry } from "./ledger.js";

/** Events a person causes on a task (an engine-made cancellation is not one of them). */
const INTERVENTION_EVENTS: ReadonlySet<string> = new Set([
  "task_retried",
  "task_skipped",
  "task_cancelled",
]);

/** What the report is computed from. */
export interface ReportInput {
  workstream: Pick<WorkstreamRecord, "id" | "name" | "status" | "createdAt" | "updatedAt">;
  /** The workstream's tasks at the end. */
  tasks: readonly Pick<TaskRecord, "id" | "key" | "status">[];
  /** The transition log; records of other workstreams are ignored. */
  transitions: readonly TransitionRecord[];
  /** Handler executions that reached success (the side-effect ledger); entries of other workstreams are ignored. */
  executions?: readonly LedgerEntry[];
}

/** One task that failed at least once, and what became of it. */
export interface TaskFailures {
  task: string;
  /** Failure categories in the order they happened. */
  categories: string[];
  status: TaskStatus | "missing";
  /** Recovered without an intervention. */
  recovered: boolean;
  /** From the first failure to the completion; null unless it completed. */
  recoverMs: number | null;
}

/** The recovery report. Counts of tasks unless said otherwise. */
export interface RecoveryReport {
  workstream: { id: string; name: string; status: string };
  /** From submission until the workstream settled; null while it is still active. */
  wallMs: number | null;
  tasks: { total: number; completed: number; byStatus: Record<TaskStatus, number> };
  /** Attempts started (claims). */
  attempts: number;
  /** Failed attempts, by failure category. */
  failures: { total: number; byCategory: Record<string, number> };
  /** Tasks that failed at least once. */
  tasksWithFailures: number;
  /** Tasks that failed at least once and then completed without an intervention. */
  automaticRecoveries: number;
  /** `automaticRecoveries / tasksWithFailures`; null when nothing failed. */
  autoRecoveryRate: number | null;
  /** First failure to completion over the recovered tasks, in ms; null when none recovered. */
  timeToRecoverMs: { p50: number; p90: number; max: number } | null;
  /** Operator actions on the workstream's tasks. */
  interventions: number;
  /** Accepted tasks that are not in a terminal state (or have vanished). Must be 0. */
  lost: { count: number; tasks: string[] };
  /** Tasks whose completion was recorded more than once. Must be 0. */
  duplicateCompletions: { count: number; tasks: string[] };
  /** Successful handler executions beyond the first, per idempotency key (at-least-once). */
  sideEffectsRepeated: { count: number; tasks: string[] };
  failedTasks: TaskFailures[];
  /** The workstream completed, and nothing was lost or completed twice. */
  ok: boolean;
}

/** The `p`th percentile (0–100) of ascending `sorted`, by nearest rank. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

function keyOf(taskId: string): string {
  return taskId.slice(taskId.lastIndexOf("/") + 1);
}

/** Computes the recovery report of one workstream. */
export function computeReport(input: ReportInput): RecoveryReport {
  const wsId = input.workstream.id;
  const log = input.transitions.filter((t) => t.entity === "task" && t.workstreamId === wsId);
  const tasks = new Map(input.tasks.map((t) => [t.id, t]));
  const keyFor = (id: string) => tasks.get(id)?.key ?? keyOf(id);

  const accepted = new Set(tasks.keys());
  const failures = new Map<string, TransitionRecord[]>();
  const completions = new Map<string, TransitionRecord[]>();
  const intervened = new Set<string>();
  const byCategory: Record<string, number> = {};
  let attempts = 0;
  let interventions = 0;
  for (const t of log) {
    if (t.from === null) accepted.add(t.entityId);
    if (t.event === "task_started") attempts++;
    if (FAILURE_EVENTS.has(t.event)) {
      const category =
        (t.detail?.failure as { category?: string } | undefined)?.category ?? "unknown";
      byCategory[category] = (byCategory[category] ?? 0) + 1;
      failures.set(t.entityId, [...(failures.get(t.entityId) ?? []), t]);
    }
    if (COMPLETION_EVENTS.has(t.event)) {
      completions.set(t.entityId, [...(completions.get(t.entityId) ?? []), t]);
    }
    if (INTERVENTION_EVENTS.has(t.event) && isPerson(t.actor)) {
      interventions++;
      intervened.add(t.entityId);
    }
  }

  const failedTasks = [...failures].map(([id, list]): TaskFailures => {
    const completed = completions.get(id)?.[0];
    const recoverMs = completed ? completed.at - list[0]!.at : null;
    return {
      task: keyFor(id),
      categories: list.map(
        (t) => (t.detail?.failure as { category?: string } | undefined)?.category ?? "unknown",
      ),
      status: tasks.get(id)?.status ?? "missing",
      recovered: completed !== undefined && !intervened.has(id),
      recoverMs,
    };
  });
  const recovered = failedTasks.filter((f) => f.recovered);
  const times = recovered.map((f) => f.recoverMs!).sort((a, b) => a - b);

  const lost = [...accepted]
    .filter((id) => {
      const status = tasks.get(id)?.status;
      return status === undefined || !TERMINAL_TASK_STATUSES.has(status);
    })
    .map(keyFor);
  const duplicates = [...completions]
    .filter(([, list]) => list.length > 1)
    .map(([id]) => keyFor(id));

  const runs = new Map<string, LedgerEntry[]>();
  for (const e of input.executions ?? []) {
    if (e.workstreamId !== wsId) continue;
    runs.set(e.idempotencyKey, [...(runs.get(e.idempotencyKey) ?? []), e]);
  }
  const repeated = [...runs.values()].filter((list) => list.length > 1);

  const byStatus = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<
    TaskStatus,
    number
  >;
  for (const t of input.tasks) byStatus[t.status]++;

  return {
    workstream: { id: wsId, name: input.workstream.name, status: input.workstream.status },
    wallMs:
      input.workstream.status === "active"
        ? null
        : input.workstream.updatedAt - input.workstream.createdAt,
    tasks: { total: accepted.size, completed: byStatus.completed, byStatus },
    attempts,
    failures: {
      total: Object.values(byCategory).reduce((a, b) => a + b, 0),
      byCategory: Object.fromEntries(Object.entries(byCategory).sort(([, a], [, b]) => b - a)),
    },
    tasksWithFailures: failedTasks.length,
    automaticRecoveries: recovered.length,
    autoRecoveryRate: failedTasks.length === 0 ? null : recovered.length / failedTasks.length,
    timeToRecoverMs:
      times.length === 0
        ? null
        : { p50: percentile(times, 50), p90: percentile(times, 90), max: times.at(-1)! },
    interventions,
    lost: { count: lost.length, tasks: lost },
    duplicateCompletions: { count: duplicates.length, tasks: duplicates },
    sideEffectsRepeated: {
      count: repeated.reduce((n, list) => n + list.length - 1, 0),
      tasks: repeated.map((list) => list[0]!.task),
    },
    failedTasks,
    ok: input.workstream.status === "completed" && lost.length === 0 && duplicates.length === 0,
  };
}

function row(label: string, value: string | number, note = ""): string {
  return `  ${label.padEnd(31)}${String(value)}${note ? `  ${note}` : ""}`;
}

/** The report as people read it, one fact per line. */
export function formatReport(report: RecoveryReport): string {
  const ws = report.workstream;
  const wall = report.wallMs === null ? "" : ` in ${formatDuration(report.wallMs)}`;
  const mustBeZero = (n: number) => (n === 0 ? "✓" : "✗ must be 0");
  const lines = [
    `Recovery report: ${ws.name} ${ws.id} ${ws.status}${wall}`,
    row("tasks", report.tasks.total, `(${report.tasks.completed} completed)`),
    row("attempts", report.attempts),
    row("failures", report.failures.total),
    ...Object.entries(report.failures.byCategory).map(([category, n]) => row(`  ${category}`, n)),
    row(
      "automatic recoveries",
      report.automaticRecoveries,
      `of ${report.tasksWithFailures} task${report.tasksWithFailures === 1 ? "" : "s"} that failed`,
    ),
    row(
      "auto-recovery rate",
      report.autoRecoveryRate === null ? "n/a" : `${(report.autoRecoveryRate * 100).toFixed(1)}%`,
    ),
    row(
      "time to recover",
      report.timeToRecoverMs === null
        ? "n/a"
        : `p50 ${formatDuration(report.timeToRecoverMs.p50)}  p90 ${formatDuration(report.timeToRecoverMs.p90)}  max ${formatDuration(report.timeToRecoverMs.max)}`,
    ),
    row("interventions", report.interventions),
    // Until the workstream settles its open tasks are unfinished, not lost: they are in the store.
    ws.status === "active"
      ? row("tasks not finished", report.lost.count, `(${report.lost.tasks.join(", ")})`)
      : row(
          "tasks lost",
          report.lost.count,
          `${mustBeZero(report.lost.count)}${report.lost.count ? ` (${report.lost.tasks.join(", ")})` : ""}`,
        ),
    row(
      "duplicate completions",
      report.duplicateCompletions.count,
      `${mustBeZero(report.duplicateCompletions.count)}${report.duplicateCompletions.count ? ` (${report.duplicateCompletions.tasks.join(", ")})` : ""}`,
    ),
    row(
      "handler side-effects repeated",
      report.sideEffectsRepeated.count,
      report.sideEffectsRepeated.count ? `(${report.sideEffectsRepeated.tasks.join(", ")})` : "",
    ),
  ];
  if (report.sideEffectsRepeated.count > 0) {
    lines.push(
      "  (handlers run at least once: a worker died after a handler finished but before its completion was committed, so it ran again; the completion is still recorded once, and idempotencyKey lets external systems drop the repeat)",
    );
  }
  return lines.join("\n");
}
