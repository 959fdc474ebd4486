/**
 * Compensation of a workstream's completed tasks, planned from the tasks alone: which completed
 * tasks are undone (those that declare a compensation and were not undone since they last
 * completed) and in which order their compensating tasks run. Pure: the store turns a plan into a
 * compensation workstream of durable tasks (`store/sqlite/compensation.ts`).
 */
import { dependentsOf } from "../model/dag.js";
import type { CompensationPolicy, CompensationSpec } from "../model/spec.js";
import type { TaskStatus } from "../model/states.js";

/** The order compensating tasks run in (see {@link planCompensation}). */
export type CompensationOrder = CompensationPolicy["order"];

/** Every order, for checking what a person typed. */
export const COMPENSATION_ORDERS: readonly CompensationOrder[] = [
  "reverse",
  "parallel",
  "dependency",
];

/** What a plan needs to know of a task. */
export interface CompensableTask {
  /** The id as written in the definition. */
  key: string;
  status: TaskStatus;
  /** Keys of the tasks it depends on. */
  deps: readonly string[];
  compensation: CompensationSpec | null;
  /** Seq of the transition that last completed it; null when it never completed. */
  completedSeq: number | null;
  /** The compensation workstream that already undid its last completion; null when none did. */
  compensatedBy: string | null;
}

/** One compensating task of a plan. */
export interface CompensationStep {
  /** Key of the compensating task: `undo-<task>`. */
  key: string;
  /** Key of the completed task it undoes. */
  task: string;
  handler: string;
  /** Idempotent compensations are retried (the default retry policy); others run once. */
  idempotent: boolean;
  timeoutMs: number;
  /** Keys of the compensating tasks that must finish first. */
  after: string[];
}

/** A completed task a plan leaves as it is, and why. */
export interface SkippedCompensation {
  task: string;
  reason: string;
}

/** What a compensation undoes, in which order, or (dry run) would. */
export interface CompensationPlan {
  /** The workstream whose completed tasks are undone. */
  workstreamId: string;
  order: CompensationOrder;
  /** Last completed first (an order the steps may run in). Empty: nothing to compensate. */
  steps: CompensationStep[];
  /** Completed tasks left as they are: no compensation declared, or already compensated. */
  skipped: SkippedCompensation[];
  /** The compensation workstream created; null for a dry run or an empty plan. */
  compensationId: string | null;
}

/** What {@link planCompensation} plans from. */
export interface CompensationInput {
  workstreamId: string;
  order: CompensationOrder;
  /** Every task of the workstream (the dependency order needs the whole DAG). */
  tasks: readonly CompensableTask[];
  /** Only these completed tasks are candidates (a rollback undoes part of a workstream). */
  only?: ReadonlySet<string>;
}

/** The key of the task that undoes `task`. */
export function undoKey(task: string): string {
  return `undo-${task}`;
}

/**
 * Plans the compensation of the completed tasks: each one that declares a compensation and has
 * not been compensated since it last completed gets a compensating task. In `reverse` order each
 * compensation waits for the one of the task completed just after it (a chain, last completed
 * first); in `parallel` order none waits; in `dependency` order the compensation of a task waits
 * for those of its nearest compensated dependents (the DAG reversed), so independent branches
 * are undone side by side.
 */
export function planCompensation(input: CompensationInput): CompensationPlan {
  const completed = input.tasks
    .filter((t) => t.status === "completed" && (input.only?.has(t.key) ?? true))
    .sort((a, b) => (b.completedSeq ?? 0) - (a.completedSeq ?? 0));
  const skipped: SkippedCompensation[] = [];
  const undone: CompensableTask[] = [];
  for (const t of completed) {
    if (t.compensation === null) skipped.push({ task: t.key, reason: "no compensation declared" });
    else if (t.compensatedBy !== null) {
      skipped.push({ task: t.key, reason: `already compensated by ${t.compensatedBy}` });
    } else undone.push(t);
  }
  const after = afterOf(input, undone);
  const steps = undone.map((t, i): CompensationStep => {
    const spec = t.compensation!;
    return {
      key: undoKey(t.key),
      task: t.key,
      handler: spec.handler,
      idempotent: spec.idempotent,
      timeoutMs: spec.timeoutMs,
      after: after(t.key, i),
    };
  });
  return {
    workstreamId: input.workstreamId,
    order: input.order,
    steps,
    skipped,
    compensationId: null,
  };
}

/** The compensating tasks the one of `key` (at `index`, last completed first) waits for. */
function afterOf(
  input: CompensationInput,
  undone: readonly CompensableTask[],
): (key: string, index: number) => string[] {
  switch (input.order) {
    case "parallel":
      return () => [];
    case "reverse":
      return (_, i) => (i === 0 ? [] : [undoKey(undone[i - 1]!.key)]);
    case "dependency": {
      const byKey = new Map(input.tasks.map((t) => [t.key, t]));
      const dependents = dependentsOf(
        input.tasks.map((t) => t.key),
        (k) => byKey.get(k)!.deps,
      );
      const rank = new Map(undone.map((t, i) => [t.key, i]));
      return (key) => {
        // Walks through dependents that are not undone (no compensation, not completed) to the
        // nearest undone ones: their effects may rest on this task's, through those in between.
        const found = new Set<string>();
        const seen = new Set<string>();
        const queue = [...(dependents.get(key) ?? [])];
        for (let i = 0; i < queue.length; i++) {
          const next = queue[i]!;
          if (seen.has(next)) continue;
          seen.add(next);
          if (rank.has(next)) found.add(next);
          else queue.push(...(dependents.get(next) ?? []));
        }
        return [...found].sort((a, b) => rank.get(a)! - rank.get(b)!).map(undoKey);
      };
    }
  }
}
