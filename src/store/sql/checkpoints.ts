/**
 * Reading checkpoints from a SQL store's log: a workstream's records are read through the
 * `(workstream_id, seq)` index from the nearest usable snapshot on, and the snapshots the fold
 * passes are kept for the next reader. Nothing here runs when tasks change state.
 */
import { MendError } from "../../errors.js";
import type { TransitionRecord } from "../../model/records.js";
import {
  type Checkpoint,
  type CheckpointFold,
  decodeFold,
  encodeFold,
  foldRecord,
  isCheckpoint,
  isSnapshotPoint,
  snapshotInterval,
  startFold,
  toCheckpoint,
} from "../../state/checkpoints.js";
import { rowToTransition } from "./codec.js";
import type { Queryable, Row } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";

/** How many records {@link fold} reads per query. */
const FOLD_PAGE = 500;

/** One workstream's log, as checkpoints are read from it. */
export interface CheckpointLog {
  /** Where the log is read: the open transaction, or `store.q`. */
  q: Queryable;
  workstreamId: string;
  taskCount: number;
  interval: number;
  /** Seqs of the snapshots that still match the log. */
  saved: Set<number>;
  /** Snapshots the fold passed that are not saved yet ({@link saveSnapshots} writes them). */
  unsaved: { seq: number; hash: string; state: string }[];
}

/** Opens a workstream's log for reading checkpoints. */
export async function openCheckpointLog(
  q: Queryable,
  workstreamId: string,
): Promise<CheckpointLog> {
  const { n } = (await q.get<{ n: number }>(
    "SELECT COUNT(*) AS n FROM tasks WHERE workstream_id = ?",
    [workstreamId],
  ))!;
  const saved = await q.all<{ seq: number }>(
    `SELECT s.seq FROM checkpoint_snapshots s JOIN transitions t ON t.seq = s.seq AND t.hash = s.hash
       WHERE s.workstream_id = ?`,
    [workstreamId],
  );
  return {
    q,
    workstreamId,
    taskCount: n,
    interval: snapshotInterval(n),
    saved: new Set(saved.map((r) => r.seq)),
    unsaved: [],
  };
}

/**
 * Writes the snapshots the log's folds passed; the caller chooses the transaction (`tx`, which
 * need not be the one the log was read in).
 */
export async function saveSnapshots(tx: Queryable, log: CheckpointLog): Promise<void> {
  for (const s of log.unsaved) {
    await tx.run(
      `INSERT INTO checkpoint_snapshots (workstream_id, seq, hash, state) VALUES (?, ?, ?, ?)
       ON CONFLICT (workstream_id, seq) DO UPDATE SET hash = excluded.hash, state = excluded.state`,
      [log.workstreamId, s.seq, s.hash, s.state],
    );
  }
  log.unsaved = [];
}

/**
 * The newest checkpoints of a workstream, newest first (all when `limit` is omitted), read in one
 * consistent view (a transaction that writes nothing and is rolled back); the snapshots the read
 * passed are saved afterwards in a short write of their own.
 */
export async function readCheckpoints(
  store: SqlStore,
  workstreamId: string,
  limit?: number,
): Promise<Checkpoint[]> {
  const { log, found } = await store.dryRun(async (q: Queryable) => {
    if (!(await q.get("SELECT id FROM workstreams WHERE id = ?", [workstreamId]))) {
      throw new MendError("not_found", `workstream ${workstreamId} not found`, { workstreamId });
    }
    const log = await openCheckpointLog(q, workstreamId);
    return { log, found: await listCheckpoints(log, limit) };
  });
  if (log.unsaved.length > 0) await store.write((tx) => saveSnapshots(tx, log));
  return found;
}

/** The newest checkpoints of a workstream, newest first; all of them when `limit` is omitted. */
export async function listCheckpoints(log: CheckpointLog, limit?: number): Promise<Checkpoint[]> {
  // The oldest checkpoint listed is at or after the limit-th newest task record.
  const oldest =
    limit === undefined
      ? undefined
      : await log.q.get<{ seq: number }>(
          "SELECT seq FROM transitions WHERE workstream_id = ? AND entity = 'task' ORDER BY seq DESC LIMIT 1 OFFSET ?",
          [log.workstreamId, limit - 1],
        );
  const from = oldest?.seq ?? 0;
  const found: Checkpoint[] = [];
  await fold(log, await nearestFold(log, from - 1), Number.MAX_SAFE_INTEGER, (f, record) => {
    if (record.seq >= from && isCheckpoint(f, record, log.taskCount)) {
      found.push(toCheckpoint(f, record));
    }
  });
  found.reverse();
  return limit === undefined ? found : found.slice(0, limit);
}

/**
 * The checkpoint at `seq`. Refuses, writing nothing, a seq that is not one of this workstream's
 * checkpoints: not found (with what it is instead) or, past the newest, invalid.
 */
export async function checkpointAt(log: CheckpointLog, seq: number): Promise<Checkpoint> {
  const { q, workstreamId } = log;
  const hint = `see mend workstream checkpoints ${workstreamId}`;
  if (!Number.isSafeInteger(seq) || seq <= 0) {
    throw new MendError(
      "invalid_argument",
      `a checkpoint is a transition seq (a positive integer), got ${seq}; ${hint}`,
      { seq },
    );
  }
  const row = await q.get("SELECT * FROM transitions WHERE seq = ?", [seq]);
  const record = row ? rowToTransition(row) : null;
  if (record && record.workstreamId !== workstreamId) {
    throw new MendError(
      "not_found",
      `transition ${seq} is not a checkpoint of workstream ${workstreamId}: it belongs to ${record.workstreamId ? `workstream ${record.workstreamId}` : `${record.entity} ${record.entityId}`}; ${hint}`,
      { workstreamId, seq, belongsTo: record.workstreamId ?? record.entityId },
    );
  }
  const newest = (await q.get<{ seq: number | null }>(
    "SELECT MAX(seq) AS seq FROM transitions WHERE workstream_id = ? AND entity = 'task'",
    [workstreamId],
  ))!;
  if (seq > (newest.seq ?? 0)) {
    throw new MendError(
      "invalid_argument",
      `checkpoint ${seq} is newer than the newest checkpoint of workstream ${workstreamId} (${newest.seq}); ${hint}`,
      { workstreamId, seq, newest: newest.seq },
    );
  }
  const f = await fold(log, await nearestFold(log, seq), seq);
  if (!record || !isCheckpoint(f, record, log.taskCount)) {
    throw new MendError(
      "not_found",
      `transition ${seq} is not a checkpoint of workstream ${workstreamId}: ${notACheckpoint(record)}; ${hint}`,
      { workstreamId, seq },
    );
  }
  return toCheckpoint(f, record);
}

function notACheckpoint(record: TransitionRecord | null): string {
  if (!record) return "there is no such transition";
  if (record.entity !== "task") return `it is the workstream's ${record.event}`;
  return "the workstream was still being submitted (its first checkpoint is once every task exists)";
}

/**
 * The newest checkpoint at which no task of the workstream was running: the last quiet point.
 * Searched backwards one snapshot interval at a time, so recent quiet points cost one interval
 * of records; a workstream's first checkpoint (after submission) is always quiet.
 */
export async function latestQuietCheckpoint(log: CheckpointLog): Promise<Checkpoint> {
  let upper = Number.MAX_SAFE_INTEGER;
  for (;;) {
    const start = await nearestFold(log, upper - 1);
    const floor = start.seq;
    let quiet = 0;
    await fold(log, start, upper, (f, record) => {
      if (f.running === 0 && isCheckpoint(f, record, log.taskCount)) quiet = record.seq;
    });
    if (quiet > 0) return checkpointAt(log, quiet);
    if (floor === 0) {
      throw new MendError("not_found", `workstream ${log.workstreamId} has no checkpoint`, {
        workstreamId: log.workstreamId,
      });
    }
    upper = floor;
  }
}

/** The fold at the newest usable snapshot at or before `seq`, else at the beginning. */
async function nearestFold(log: CheckpointLog, seq: number): Promise<CheckpointFold> {
  const rows = await log.q.all<{ seq: number; state: string }>(
    `SELECT s.seq, s.state FROM checkpoint_snapshots s JOIN transitions t ON t.seq = s.seq AND t.hash = s.hash
       WHERE s.workstream_id = ? AND s.seq <= ? ORDER BY s.seq DESC`,
    [log.workstreamId, seq],
  );
  for (const r of rows) {
    const f = decodeFold(log.workstreamId, r.seq, r.state);
    if (f) return f;
    // Unreadable: derive it again and let it be replaced.
    log.saved.delete(r.seq);
  }
  return startFold(log.workstreamId);
}

/**
 * Folds the workstream's records after `f.seq` up to `toSeq` into `f`, calling `visit` after each,
 * and notes the snapshots it passes that are not saved. Reads {@link FOLD_PAGE} records at a time.
 */
async function fold(
  log: CheckpointLog,
  f: CheckpointFold,
  toSeq: number,
  visit?: (f: CheckpointFold, record: TransitionRecord) => void,
): Promise<CheckpointFold> {
  for (;;) {
    const rows = await log.q.all<Row>(
      "SELECT * FROM transitions WHERE workstream_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
      [log.workstreamId, f.seq, toSeq, FOLD_PAGE],
    );
    for (const row of rows) {
      const record = rowToTransition(row);
      foldRecord(f, record);
      if (isSnapshotPoint(f, log.interval) && !log.saved.has(record.seq)) {
        log.unsaved.push({ seq: record.seq, hash: record.hash, state: encodeFold(f) });
        log.saved.add(record.seq);
      }
      visit?.(f, record);
    }
    if (rows.length < FOLD_PAGE) return f;
  }
}
