/**
 * The half of a rebuild that replays the state, in a worker thread of its own (so it can have a
 * young generation much larger than the main thread's default; see rebuild.ts):
 * folds the journal's transitions into records and writes them, as rows, to a file of their own,
 * while the other worker copies the log (see rebuild.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { dependencyRows } from "../../model/ids.js";
import type { TaskRecord } from "../../model/records.js";
import { ENTITY_KINDS } from "../../model/states.js";
import { type JournalLimit, scanJournal } from "../../state/journal.js";
import { REPLAY_DEFAULTS, restoredLiveness } from "../replay.js";
import { batchInsert, openUnsynced } from "./bulk.js";
import { threadFailure, type ThreadFailure } from "./threads.js";
import { type ColumnKind, ENTITY_TABLES, encodeField } from "../sql/codec.js";

/** What the main thread asks for. */
export interface StateReplayRequest {
  /** Marks a rebuild's state worker (other workers, e.g. a test runner's, carry other data). */
  mendRebuildState: true;
  journalDir: string;
  /** The file the rows go to; its schema already exists. */
  stateFile: string;
  limit: JournalLimit;
  now: number;
  leaseMs: number;
  progressEvery: number;
}

/** Progress while replaying, then the end (or the error that stopped it). */
export type StateReplayMessage =
  { progress: number } | { done: true; transitions: number } | ThreadFailure;

/** Replays the journal into records and writes them to `request.stateFile`. */
function replayToFile(request: StateReplayRequest, report: (m: StateReplayMessage) => void): void {
  try {
    let transitions = 0;
    const state = replayState(
      request.journalDir,
      request.limit,
      request.progressEvery,
      (seq, n) => {
        transitions = n;
        report({ progress: seq });
      },
    );
    const db = openUnsynced(request.stateFile);
    try {
      db.transaction(() => writeState(db, state, request.now, request.leaseMs))();
    } finally {
      db.close();
    }
    report({ done: true, transitions });
  } catch (err) {
    report(threadFailure(err));
  }
}

/**
 * What replay.ts's applyTransition does, in place over maps: creation inserts the record, every
 * other transition merges its data and sets the status (copying records costs seconds at 1M).
 */
function replayState(
  journalDir: string,
  limit: JournalLimit,
  every: number,
  onProgress: (seq: number, count: number) => void,
) {
  const state = Object.fromEntries(ENTITY_KINDS.map((k) => [k, new Map()])) as ReplayedState;
  let count = 0;
  let last = 0;
  scanJournal(journalDir, limit, (tx) => {
    for (const t of tx.transitions) {
      const table = state[t.entity];
      let record = table.get(t.entityId);
      if (!record) table.set(t.entityId, (record = {}));
      Object.assign(record, t.data);
      record.status = t.to;
      last = t.seq;
      if (++count % every === 0) onProgress(t.seq, count);
    }
  });
  onProgress(last, count);
  return state;
}

type ReplayedState = Record<keyof typeof ENTITY_TABLES, Map<string, Record<string, unknown>>>;

/** Writes replayed state as rows; liveness the log does not hold is given from `now`. */
function writeState(db: Database.Database, state: ReplayedState, now: number, leaseMs: number) {
  const entity = (kind: keyof typeof ENTITY_TABLES) => {
    const { table, columns } = ENTITY_TABLES[kind];
    const fields = Object.keys(columns);
    const kinds: ColumnKind[] = fields.map((f) => columns[f]![1]);
    const insert = batchInsert(
      db,
      table,
      fields.map((f) => columns[f]![0]),
    );
    return {
      add: (record: Record<string, unknown>) =>
        insert.add(fields.map((f, i) => encodeField(kinds[i]!, record[f]))),
      flush: insert.flush,
    };
  };
  const deps = batchInsert(db, "task_deps", ["task_id", "dep_id"]);
  for (const kind of ENTITY_KINDS) {
    const rows = entity(kind);
    for (const record of state[kind].values()) {
      rows.add({
        ...REPLAY_DEFAULTS[kind],
        ...record,
        ...restoredLiveness(kind, record, now, now + leaseMs),
      });
      if (kind !== "task") continue;
      const t = record as unknown as TaskRecord;
      for (const row of dependencyRows(t.workstreamId, t.id, t.deps)) deps.add(row);
    }
    rows.flush();
  }
  deps.flush();
}

if (parentPort && (workerData as Partial<StateReplayRequest> | null)?.mendRebuildState === true) {
  const port = parentPort;
  replayToFile(workerData as StateReplayRequest, (m) => port.postMessage(m));
}
