import { existsSync, rmSync } from "node:fs";
import { MendError } from "../../errors.js";
import { fsyncPath } from "../../state/fsync.js";
import type { JournalLimit, JournalPosition } from "../../state/journal.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";
import type { LogCopyReply, LogCopyRequest } from "./rebuild-log.js";
import { openUnsynced } from "./bulk.js";
import { SAVE_JOURNAL_POSITION } from "./journal-position.js";
import type { StateReplayMessage, StateReplayRequest } from "./rebuild-state.js";
import { startThread, unwrap } from "./threads.js";

/** Options of {@link rebuildFromJournal}. */
export interface RebuildOptions {
  /** Stop at a transaction boundary at or after this seq, or before the first after this time. */
  limit?: JournalLimit;
  /** Time of the rebuild: running tasks get a fresh lease from it, workers a heartbeat. */
  now: number;
  /** Lease given to tasks that were running (default 5 s: a live holder renews it, a dead one is swept). */
  leaseMs?: number;
  /** Called every `progressEvery` transitions with the last seq applied. */
  onProgress?: (seq: number) => void;
  progressEvery?: number;
}

/** What a rebuild produced. */
export interface RebuildResult {
  transitions: number;
  interventions: number;
  lastSeq: number;
  lastHash: string | null;
  /** Where the journal ends after the last transaction included. */
  end: JournalPosition;
  tornRecords: number;
}

/**
 * Builds a new database file at `target` from the transition journal in `journalDir`: every
 * transition (its chain verified on the way), the state replayed from them, the interventions,
 * and the journal position; the caller installs it in place of the live database. The two halves
 * run at once: a worker thread verifies and copies the log while this thread replays the state,
 * then writes it and builds the indexes. The file is not synced until the end (it is not in use).
 */
export async function rebuildFromJournal(
  journalDir: string,
  target: string,
  options: RebuildOptions,
): Promise<RebuildResult> {
  const stateFile = `${target}.state`;
  for (const f of [target, stateFile]) {
    if (existsSync(f)) throw new MendError("internal", `rebuild file ${f} already exists`, { f });
  }
  const limit = options.limit ?? {};
  const indexes = createSchema(target);
  createSchema(stateFile);
  const logIndexes = indexes.filter((i) => i.table === "transitions").map((i) => i.sql);
  // Two threads at once: one verifies and copies the log into the target, the other replays the
  // state into a file of its own; this thread merges them once both are done. Both allocate a
  // string or object per field of every record, most of it short-lived: with a young generation
  // of 384 MiB (the default is 16 times smaller) garbage collection stops dominating, and 1M
  // transitions rebuild in about 8.5 s instead of 13 s.
  const copying = startThread<LogCopyReply>(
    "rebuild-log",
    { mendRebuildLog: true, journalDir, target, limit, logIndexes } satisfies LogCopyRequest,
    { youngGenerationMb: YOUNG_GENERATION_MB },
  );
  const replaying = startThread<StateReplayMessage>(
    "rebuild-state",
    {
      mendRebuildState: true,
      journalDir,
      stateFile,
      limit,
      now: options.now,
      leaseMs: options.leaseMs ?? 5_000,
      progressEvery: options.progressEvery ?? 50_000,
    } satisfies StateReplayRequest,
    {
      youngGenerationMb: YOUNG_GENERATION_MB,
      onProgress: (m) => options.onProgress?.(m.progress),
    },
  );
  let log: Exclude<LogCopyReply, { error: unknown }>;
  try {
    [log] = await Promise.all([copying.done.then(unwrap), replaying.done.then(unwrap)]);
  } catch (err) {
    await Promise.all([copying.cancel(), replaying.cancel()]);
    rmSync(stateFile, { force: true });
    throw err;
  }
  const db = openUnsynced(target);
  try {
    db.prepare("ATTACH DATABASE ? AS st").run(stateFile);
    db.transaction(() => {
      for (const table of STATE_TABLES) {
        db.exec(`INSERT INTO main.${table} SELECT * FROM st.${table}`);
      }
      db.prepare(SAVE_JOURNAL_POSITION).run(log.end.segment, log.end.offset, log.end.lastSeq);
      for (const i of indexes) if (i.table !== "transitions") db.exec(i.sql);
    })();
    db.exec("DETACH DATABASE st");
  } finally {
    db.close();
    rmSync(stateFile, { force: true });
  }
  fsyncPath(target);
  return {
    transitions: log.transitions,
    interventions: log.interventions,
    lastSeq: log.end.lastSeq,
    lastHash: log.lastHash,
    end: log.end,
    tornRecords: log.tornRecords,
  };
}

/** The rebuild threads' young generation, in MiB (see rebuildFromJournal). */
const YOUNG_GENERATION_MB = 384;

/** Tables the replayed state fills. */
const STATE_TABLES = ["workstreams", "tasks", "task_deps", "workers"] as const;

/** Creates the schema without its secondary indexes (built once at the end); returns them. */
function createSchema(path: string): { table: string; sql: string }[] {
  const db = openUnsynced(path);
  try {
    for (const m of SQLITE_MIGRATIONS) db.exec(m);
    db.pragma(`user_version = ${SQLITE_MIGRATIONS.length}`);
    // Sorting once at the end is much faster than keeping indexes up to date row by row.
    const indexes = db
      .prepare(
        "SELECT name, tbl_name AS \"table\", sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
      )
      .all() as { name: string; table: string; sql: string }[];
    for (const i of indexes) db.exec(`DROP INDEX ${i.name}`);
    return indexes;
  } finally {
    db.close();
  }
}
