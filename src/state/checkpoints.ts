/**
 * Workstream checkpoints, derived from the transition log: a workstream is checkpointed after every
 * task transition, and a checkpoint is addressed by the seq of that transition. Nothing is copied
 * per transition: a checkpoint's state is the fold of the workstream's records up to its seq,
 * started from the nearest materialized snapshot of that fold. Snapshots fall at most once every
 * {@link snapshotInterval} records, so their total size grows with the number of transitions.
 *
 * This module is SQL-free: the stores feed it records and keep its snapshots.
 */
import { z } from "zod";
import type { TransitionRecord } from "../model/records.js";
import { TASK_STATUSES, type TaskStatus } from "../model/states.js";

/** A task's state at a checkpoint: what a rollback restores. */
export interface CheckpointTask {
  /** The id as written in the definition. */
  key: string;
  status: TaskStatus;
  attempts: number;
}

/** A workstream's state after one of its task transitions. */
export interface Checkpoint {
  workstreamId: string;
  /** Seq of the transition that produced it: the checkpoint's address. */
  seq: number;
  at: number;
  /** The event of that transition, e.g. `task_completed`. */
  event: string;
  /** Key of the task that transition changed. */
  task: string;
  /** Every task's state after it, in definition order. */
  tasks: CheckpointTask[];
}

/** Which checkpoint an operation starts from: a seq, or the newest one at which nothing ran. */
export type CheckpointRef = number | "latest";

/**
 * The fold of a workstream's records up to one of them: a plain value, saved as a snapshot and
 * continued from there.
 */
export interface CheckpointFold {
  workstreamId: string;
  /** Seq of the last record folded (0 before any). */
  seq: number;
  /** How many of the workstream's records were folded; decides where snapshots fall. */
  position: number;
  /** Task states by key, in creation order. */
  tasks: Map<string, { status: TaskStatus; attempts: number }>;
  /** How many tasks are running, kept up to date so quiet points are found without a scan. */
  running: number;
}

/** Fewest records between two snapshots of one workstream. */
export const MIN_SNAPSHOT_INTERVAL = 100;

/**
 * Records between two snapshots of a workstream with `taskCount` tasks. A snapshot holds one
 * entry per task, so spacing them at least that far apart keeps their total size linear in the
 * number of records.
 */
export function snapshotInterval(taskCount: number): number {
  return Math.max(MIN_SNAPSHOT_INTERVAL, taskCount);
}

/** True when a snapshot of `fold` belongs at its current position. */
export function isSnapshotPoint(fold: CheckpointFold, interval: number): boolean {
  return fold.position > 0 && fold.position % interval === 0;
}

/** The fold before any record of the workstream. */
export function startFold(workstreamId: string): CheckpointFold {
  return { workstreamId, seq: 0, position: 0, tasks: new Map(), running: 0 };
}

/** Applies one of the workstream's records (in seq order) to `fold`. */
export function foldRecord(fold: CheckpointFold, record: TransitionRecord): void {
  fold.seq = record.seq;
  fold.position++;
  if (record.entity !== "task") return;
  const key = record.entityId.slice(record.entityId.indexOf("/") + 1);
  const before = fold.tasks.get(key);
  const status = record.to as TaskStatus;
  const attempts = record.data.attempts;
  fold.tasks.set(key, {
    status,
    attempts: typeof attempts === "number" ? attempts : (before?.attempts ?? 0),
  });
  if (before?.status === "running") fold.running--;
  if (status === "running") fold.running++;
}

/**
 * True when `record`, just folded, produced a checkpoint: a task transition after which every
 * task exists. A submission creates its tasks in one transaction, so the states between its
 * creation records were never visible and are not checkpoints; the last one is.
 */
export function isCheckpoint(
  fold: CheckpointFold,
  record: TransitionRecord,
  taskCount: number,
): boolean {
  return record.entity === "task" && fold.tasks.size === taskCount;
}

/** The checkpoint `record` produced, from the fold just after it. */
export function toCheckpoint(fold: CheckpointFold, record: TransitionRecord): Checkpoint {
  return {
    workstreamId: fold.workstreamId,
    seq: record.seq,
    at: record.at,
    event: record.event,
    task: record.entityId.slice(record.entityId.indexOf("/") + 1),
    tasks: [...fold.tasks].map(([key, t]) => ({ key, status: t.status, attempts: t.attempts })),
  };
}

/**
 * A fold as saved in a snapshot. Tasks are a list, not an object: task ids may look like array
 * indexes ("1"), and objects put those first, which would lose the definition order.
 */
const savedFold = z.object({
  position: z.number().int().nonnegative(),
  tasks: z.array(z.tuple([z.string(), z.enum(TASK_STATUSES), z.number().int().nonnegative()])),
});

/** Serializes a fold for a snapshot. */
export function encodeFold(fold: CheckpointFold): string {
  return JSON.stringify({
    position: fold.position,
    tasks: [...fold.tasks].map(([key, t]) => [key, t.status, t.attempts]),
  });
}

/**
 * Reads a snapshot saved after record `seq`; `null` when it does not parse. Snapshots are a cache
 * of the log, so a damaged one is ignored and derived again rather than trusted or fatal.
 */
export function decodeFold(workstreamId: string, seq: number, json: string): CheckpointFold | null {
  let parsed: z.infer<typeof savedFold>;
  try {
    parsed = savedFold.parse(JSON.parse(json));
  } catch {
    return null;
  }
  const fold = startFold(workstreamId);
  fold.seq = seq;
  fold.position = parsed.position;
  for (const [key, status, attempts] of parsed.tasks) {
    fold.tasks.set(key, { status, attempts });
    if (status === "running") fold.running++;
  }
  return fold;
}
