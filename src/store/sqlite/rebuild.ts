import { closeSync, existsSync, fsyncSync, openSync, rmSync } from "node:fs";
import { dirname, extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { MendError } from "../../errors.js";
import { taskId as makeTaskId } from "../../model/ids.js";
import type { TaskRecord } from "../../model/records.js";
import { type JournalLimit, type JournalPosition, scanJournal } from "../../state/journal.js";
import { type ColumnKind, ENTITY_TABLES, encodeField } from "./codec.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";
import type { LogCopyReply, LogCopyRequest } from "./rebuild-log.js";

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
  const copying = startLogCopy({ mendRebuildLog: true, journalDir, target, limit, logIndexes });
  try {
    // While the worker copies the log, this thread replays the state and writes it to a file of
    // its own; both are merged once the log is in.
    const state = replayState(journalDir, limit, options);
    const db = openUnsynced(stateFile);
    try {
      db.transaction(() => writeState(db, state, options.now, options.leaseMs ?? 5_000))();
    } finally {
      db.close();
    }
  } catch (err) {
    await copying.cancel();
    rmSync(stateFile, { force: true });
    throw err;
  }
  let log: Awaited<typeof copying.done>;
  try {
    log = await copying.done;
  } catch (err) {
    rmSync(stateFile, { force: true });
    throw err;
  }
  const db = openUnsynced(target);
  try {
    db.prepare("ATTACH DATABASE ? AS st").run(stateFile);
    db.transaction(() => {
      for (const table of STATE_TABLES)
        db.exec(`INSERT INTO main.${table} SELECT * FROM st.${table}`);
      db.prepare(
        "INSERT INTO journal_position (id, segment, offset, last_seq) VALUES (1, ?, ?, ?)",
      ).run(log.end.segment, log.end.offset, log.end.lastSeq);
      for (const i of indexes) if (i.table !== "transitions") db.exec(i.sql);
    })();
    db.exec("DETACH DATABASE st");
  } finally {
    db.close();
    rmSync(stateFile, { force: true });
  }
  fsyncFile(target);
  return {
    transitions: log.transitions,
    interventions: log.interventions,
    lastSeq: log.end.lastSeq,
    lastHash: log.lastHash,
    end: log.end,
    tornRecords: log.tornRecords,
  };
}

/** Tables the replayed state fills. */
const STATE_TABLES = ["workstreams", "tasks", "task_deps", "workers"] as const;

function openUnsynced(path: string): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = OFF");
  db.pragma("synchronous = OFF");
  db.pragma("cache_size = -262144");
  return db;
}

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

/**
 * The worker thread copying the log. Built, the module beside this one is JavaScript; under the
 * tests it is the TypeScript source, loaded through tsx's loader in the worker.
 */
function startLogCopy(request: LogCopyRequest) {
  const self = fileURLToPath(import.meta.url);
  const script = pathToFileURL(join(dirname(self), `rebuild-log${extname(self)}`)).href;
  // A young generation larger than the default: the copy allocates a string per field.
  const resourceLimits = { maxYoungGenerationSizeMb: 64 };
  const worker = script.endsWith(".ts")
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => tsx.register()).then(() => import(${JSON.stringify(script)}))`,
        { eval: true, workerData: request, resourceLimits },
      )
    : new Worker(new URL(script), { workerData: request, resourceLimits });
  const done = new Promise<Exclude<LogCopyReply, { error: unknown }>>((resolve, reject) => {
    worker.once("message", (reply: LogCopyReply) => {
      if ("error" in reply) {
        reject(new MendError(reply.error.code, reply.error.message, reply.error.context));
      } else {
        resolve(reply);
      }
    });
    worker.once("error", reject);
    worker.once("exit", (code) =>
      reject(new MendError("internal", `log copy exited with ${code}`)),
    );
  });
  return {
    done,
    cancel: async () => {
      done.catch(() => undefined);
      await worker.terminate();
    },
  };
}

/**
 * What replay.ts's applyTransition does, in place over maps: creation inserts the record, every
 * other transition merges its data and sets the status (copying records costs seconds at 1M).
 */
function replayState(journalDir: string, limit: JournalLimit, options: RebuildOptions) {
  const state: ReplayedState = { task: new Map(), workstream: new Map(), worker: new Map() };
  const every = options.progressEvery ?? 50_000;
  let count = 0;
  scanJournal(journalDir, limit, (tx) => {
    for (const t of tx.transitions) {
      const table = state[t.entity];
      let record = table.get(t.entityId);
      if (!record) table.set(t.entityId, (record = {}));
      Object.assign(record, t.data);
      record.status = t.to;
      if (++count % every === 0) options.onProgress?.(t.seq);
    }
  });
  return state;
}

function fsyncFile(path: string): void {
  const fd = openSync(path, "r+");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

type ReplayedState = Record<keyof typeof ENTITY_TABLES, Map<string, Record<string, unknown>>>;

/** Writes replayed state as rows; liveness the log does not hold is given from `now`. */
function writeState(db: Database.Database, state: ReplayedState, now: number, leaseMs: number) {
  const insertRow = (kind: keyof typeof ENTITY_TABLES) => {
    const { table, columns } = ENTITY_TABLES[kind];
    const fields = Object.keys(columns);
    const stmt = db.prepare(
      `INSERT INTO ${table} (${fields.map((f) => columns[f]![0]).join(", ")}) VALUES (${fields.map(() => "?").join(", ")})`,
    );
    const kinds: ColumnKind[] = fields.map((f) => columns[f]![1]);
    return (record: Record<string, unknown>) =>
      stmt.run(fields.map((f, i) => encodeField(kinds[i]!, record[f])));
  };
  const workstream = insertRow("workstream");
  for (const w of state.workstream.values()) workstream(w);
  const task = insertRow("task");
  const dep = db.prepare("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)");
  for (const record of state.task.values()) {
    const t = record as unknown as TaskRecord;
    record.leaseExpiresAt = t.status === "running" ? now + leaseMs : null;
    task(record);
    for (const d of t.deps) dep.run(t.id, makeTaskId(t.workstreamId, d));
  }
  const worker = insertRow("worker");
  for (const w of state.worker.values()) worker({ ...w, heartbeatAt: now });
}
