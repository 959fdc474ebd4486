/**
 * A backup's copy, run in a worker thread with a connection of its own: copying a large store
 * takes seconds (a 112 MB file: 0.5–0.8 s here), and on the main thread it would stop a worker's
 * heartbeats, handlers and monitor for as long. The thread's connection sees committed
 * transactions only, and the online backup reads one consistent snapshot of them.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { fsyncPath } from "../../state/fsync.js";
import { GENESIS_HASH } from "../chain.js";
import { threadFailure, type ThreadFailure } from "./threads.js";

/** What the main thread asks for. */
export interface BackupCopyRequest {
  /** Marks a backup's thread (other workers, e.g. a test runner's, carry other data). */
  mendBackupCopy: true;
  source: string;
  target: string;
  busyTimeoutMs: number;
}

/** The last transition the copy holds, or the error that stopped it. */
export type BackupCopyReply = { seq: number; hash: string } | ThreadFailure;

/**
 * Pages per step of the online backup after its first: all of them. Another process's commit
 * between two steps restarts the copy, so a copy in small steps might never finish while workers
 * are busy; one step reads one consistent snapshot, without blocking writers (WAL).
 */
const ALL_PAGES = 0x7fffffff;

/**
 * The page cache while copying, in KiB (negative: a size rather than a page count). The copy
 * reads every page once; a cache that held them would stay in the process's memory after, since
 * the allocator keeps what SQLite frees (an idle worker beside 100,000 queued tasks kept 13 MiB
 * more after its monitor's first backup through the usual 16 MiB cache).
 */
const COPY_CACHE_SIZE = -1024;

/** Copies `source` to `target` and seals the copy. */
async function copy(request: BackupCopyRequest): Promise<BackupCopyReply> {
  try {
    const db = new Database(request.source, {
      fileMustExist: true,
      timeout: request.busyTimeoutMs,
    });
    try {
      db.pragma(`cache_size = ${COPY_CACHE_SIZE}`);
      await db.backup(request.target, { progress: () => ALL_PAGES });
    } finally {
      db.close();
    }
    return sealCopy(request.target);
  } catch (err) {
    return threadFailure(err);
  }
}

/**
 * Makes a finished copy a single self-contained file (rollback journal rather than WAL, so
 * reading it later leaves no `-wal`/`-shm` files beside it), durable on disk, and reads the last
 * transition it holds: what the manifest records is exactly what the file contains.
 */
function sealCopy(path: string): { seq: number; hash: string } {
  const db = new Database(path, { fileMustExist: true });
  try {
    db.pragma("journal_mode = DELETE");
    return lastTransition(db);
  } finally {
    db.close();
    fsyncPath(path);
  }
}

/** The last transition in a database's log (the genesis when it has none). */
export function lastTransition(db: Database.Database): { seq: number; hash: string } {
  const row = db.prepare("SELECT seq, hash FROM transitions ORDER BY seq DESC LIMIT 1").get() as
    { seq: number; hash: string } | undefined;
  return row ?? { seq: 0, hash: GENESIS_HASH };
}

if (parentPort && (workerData as Partial<BackupCopyRequest> | null)?.mendBackupCopy === true) {
  parentPort.postMessage(await copy(workerData as BackupCopyRequest));
}
