/**
 * Backups of the SQLite store, restoring one, and the database's own integrity check. Naming,
 * manifests and retention are `state/backups.ts`'s; this module holds what needs the driver.
 *
 * A backup is taken with SQLite's online backup API, so it is a consistent copy however busy the
 * workers are. A restore into a sound database happens in place, in one write transaction, so
 * processes that have the file open see the restored state at their next transaction and never a
 * mix; a database that is missing or damaged is replaced by a copy of the backup instead.
 */
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import type { Clock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import { newId } from "../../model/ids.js";
import {
  type BackupInfo,
  type BackupOptions,
  backupDirFor,
  backupFiles,
  DEFAULT_RETENTION,
  findBackup,
  listBackupsOf,
  newBackupId,
  pruneBackups,
  type RestoreRecord,
  writeManifest,
} from "../../state/backups.js";
import { fsyncPath } from "../../state/fsync.js";
import {
  type JournalLimit,
  type JournalPosition,
  journalDirFor,
  listSegments,
  writeCutMarker,
} from "../../state/journal.js";
import { GENESIS_HASH } from "../chain.js";
import type { Actor } from "../store.js";
import { SELECT_JOURNAL_POSITION } from "./journal-position.js";
import { type BackupCopyReply, type BackupCopyRequest, lastTransition } from "./backup-copy.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";
import { type RebuildResult, rebuildFromJournal } from "./rebuild.js";
import { SqliteStore } from "./SqliteStore.js";
import { startThread, unwrap } from "./threads.js";

/** SQLite result codes that mean the file is not a sound database. */
const DAMAGE_CODES = /^SQLITE_(CORRUPT|NOTADB|IOERR_SHORT_READ)/;

/** A task running under a lease that has not expired. */
export interface LiveLease {
  taskId: string;
  workerId: string | null;
  expiresAt: number;
}

/** What a restore found and did. */
export interface RestoreResult {
  backup: BackupInfo;
  /** `in place` into the sound database, or `replaced` its damaged or missing files. */
  mode: RestoreRecord["mode"];
  /** Why the files were replaced; null for an in-place restore. */
  damage: string | null;
  /** Last seq of the store before the restore, when it could be read. */
  previousSeq: number | null;
  /** The backup of the store as it was, taken first when it was sound. */
  safetyBackup: BackupInfo | null;
  /** Leases that were live when `force` overrode the refusal: their workers are fenced out. */
  fencedLeases: LiveLease[];
  /**
   * The journal had to start afresh (the backup predates it, or the journal did not reach the
   * backup's position): processes that had the store open must be restarted, as their journal
   * writer still holds the old segment open.
   */
  journalRestarted: boolean;
}

/** Options of {@link restoreFromBackup}. */
export interface RestoreOptions {
  /** Who asked, for the interventions log. */
  who: Actor;
  /** Restore although workers hold live leases; fencing refuses their heartbeats and outcomes. */
  force?: boolean;
  clock: Clock;
}

/** What a look at the store before a restore finds. */
export interface StoreCondition {
  /** Why the store cannot be restored in place; null when it opens and passes its quick check. */
  damage: string | null;
  /** Last seq of its log, when it can be read. */
  lastSeq: number | null;
  /** Live leases (empty when damaged: they cannot be read reliably). */
  leases: LiveLease[];
}

/**
 * Takes a backup of `store` into its backups directory, then applies the retention policy
 * (never deleting an id in `keep`). The copy is written under a temporary name and published by
 * renaming it and then its manifest into place.
 */
export async function takeBackup(
  store: SqliteStore,
  options: BackupOptions,
  keep: ReadonlySet<string> = new Set(),
): Promise<BackupInfo> {
  if (store.path === ":memory:") {
    throw new MendError("invalid_argument", "an in-memory store has no file to back up");
  }
  const createdAt = store.clock.now();
  const dir = backupDirFor(store.path);
  const id = newBackupId(createdAt);
  const files = backupFiles(dir, id);
  mkdirSync(dir, { recursive: true });
  let info: BackupInfo;
  try {
    const last = unwrap(
      await startThread<BackupCopyReply>("backup-copy", {
        mendBackupCopy: true,
        source: store.path,
        target: files.tmpDb,
        busyTimeoutMs: store.busyTimeoutMs,
      } satisfies BackupCopyRequest).done,
    );
    renameSync(files.tmpDb, files.db);
    fsyncPath(dir);
    info = {
      id,
      path: files.db,
      createdAt,
      lastSeq: last.seq,
      lastHash: last.hash,
      sizeBytes: statSync(files.db).size,
      reason: options.reason,
    };
    writeManifest(store.path, info, options.actor ?? null);
  } catch (err) {
    rmSync(files.tmpDb, { force: true });
    throw err;
  }
  if (options.actor !== undefined) {
    const who = {
      actor: options.actor,
      reason: options.reason,
      command: options.command ?? "backup",
    };
    await store.write((tx) =>
      tx.intervention(who, id, null, { backup: id, lastSeq: info.lastSeq }),
    );
  }
  const policy = { ...DEFAULT_RETENTION, ...options.retention };
  pruneBackups(store.path, policy, store.clock.now(), keep);
  return info;
}

/**
 * Problems SQLite's own checks find in the database: `PRAGMA integrity_check` (pages, indexes,
 * constraints) and `PRAGMA foreign_key_check`. Empty when it is sound. A database too damaged to
 * run the check is reported as one problem rather than thrown.
 */
export function integrityProblems(db: Database.Database): string[] {
  try {
    const rows = db.pragma("integrity_check") as { integrity_check: string }[];
    const problems = rows.map((r) => r.integrity_check).filter((m) => m !== "ok");
    const orphans = db.pragma("foreign_key_check") as {
      table: string;
      rowid: number;
      parent: string;
    }[];
    for (const o of orphans) {
      problems.push(`${o.table} row ${o.rowid} refers to a ${o.parent} row that does not exist`);
    }
    return problems;
  } catch (err) {
    return [`the integrity check could not run: ${(err as Error).message}`];
  }
}

/**
 * A typed error for a store that cannot be opened because its file is damaged, saying what to do;
 * null for any other error.
 */
export function damagedStoreError(err: unknown, path: string): MendError | null {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !DAMAGE_CODES.test(code)) return null;
  return new MendError(
    "store_corrupt",
    `store ${path} is damaged (${(err as Error).message}): rebuild it with \`mend state restore --from-transitions\` (every committed transition, from the journal) or restore \`--from-backup latest\` (see \`mend state backups\`)`,
    { path, code },
    { cause: err },
  );
}

/** The database file of a SQLite store URL (`sqlite:PATH` or a bare path), made absolute. */
export function sqlitePathOf(url: string): string {
  const path = url.startsWith("sqlite:") ? url.slice("sqlite:".length) : url;
  if (path === "" || /^[a-z]+:\/\//i.test(path)) {
    throw new MendError(
      "invalid_argument",
      `backups and restore work on a SQLite store (sqlite:PATH), not "${url}"`,
      { url },
    );
  }
  return resolve(path);
}

/**
 * Looks at the store at `path` without changing it: whether it can be restored in place, the
 * last seq of its log, and which leases are live at `now`.
 *
 * @throws MendError `store_incompatible` when it was written by a newer Mend.
 */
export function inspectStore(path: string, now: number): StoreCondition {
  if (!existsSync(path)) return { damage: `${path} does not exist`, lastSeq: null, leases: [] };
  let db: Database.Database | null = null;
  try {
    db = new Database(path, { fileMustExist: true, timeout: 10_000 });
    const version = schemaVersion(db, path);
    if (version === 0) return { damage: `${path} holds no Mend store`, lastSeq: null, leases: [] };
    const problems = (db.pragma("quick_check") as { quick_check: string }[])
      .map((r) => r.quick_check)
      .filter((m) => m !== "ok");
    if (problems.length > 0) {
      return { damage: `quick_check: ${problems[0]}`, lastSeq: readableSeq(db), leases: [] };
    }
    return { damage: null, lastSeq: lastTransition(db).seq, leases: liveLeases(db, now) };
  } catch (err) {
    if (err instanceof MendError) throw err;
    return {
      damage: (err as Error).message,
      lastSeq: db ? readableSeq(db) : null,
      leases: [],
    };
  } finally {
    db?.close();
  }
}

function readableSeq(db: Database.Database): number | null {
  try {
    return lastTransition(db).seq;
  } catch {
    return null;
  }
}

function schemaVersion(db: Database.Database, path: string): number {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > SQLITE_MIGRATIONS.length) {
    throw new MendError(
      "store_incompatible",
      `${path} has schema version ${version}, newer than this Mend understands (${SQLITE_MIGRATIONS.length}); upgrade Mend`,
      { path, version, supported: SQLITE_MIGRATIONS.length },
    );
  }
  return version;
}

function liveLeases(db: Database.Database, now: number): LiveLease[] {
  return db
    .prepare(
      `SELECT id AS taskId, lease_worker AS workerId, lease_expires_at AS expiresAt FROM main.tasks
       WHERE status = 'running' AND lease_expires_at >= ? ORDER BY id`,
    )
    .all(now) as LiveLease[];
}

/** The refusal to restore under live leases: how many, whose, and how to override it. */
function leasesRefusal(leases: readonly LiveLease[]): MendError {
  const workers = [...new Set(leases.map((l) => l.workerId ?? "?"))];
  return new MendError(
    "refused",
    `${leases.length} task(s) are running under live leases held by worker(s) ${workers.join(", ")}; stop the workers first, or pass --force to restore anyway (their leases are fenced: they are told they lost them and their results are refused)`,
    { tasks: leases.map((l) => l.taskId), workers },
  );
}

/** A restore about to happen: the backup it will use and the store it will change. */
export interface RestorePlan {
  backup: BackupInfo;
  condition: StoreCondition;
}

/**
 * Decides what restoring the store at `path` from the backup `ref` (`latest`, an id or a unique
 * id prefix) would do, without changing anything, so a person can be asked first.
 *
 * @throws MendError `not_found` (no such backup, or none at all), `refused` (live leases without
 * `force`), `store_incompatible`.
 */
export function planRestore(
  path: string,
  ref: string,
  options: { force?: boolean; now: number },
): RestorePlan {
  const backup = findBackup(listBackupsOf(path), ref);
  const condition = inspectStore(path, options.now);
  if (!condition.damage && condition.leases.length > 0 && !options.force) {
    throw leasesRefusal(condition.leases);
  }
  return { backup, condition };
}

/**
 * Restores the store at `path` from the backup `ref`, as {@link planRestore} describes.
 *
 * A sound store is first backed up itself (reason `before restore`), then restored in place in
 * one write transaction; a missing or damaged one is replaced by a copy of the backup. Either
 * way the restore is logged as an intervention. Liveness that is not state carries over: a lease
 * the backup holds and the store still holds under the same token keeps its expiry, and workers
 * keep their last heartbeat, so the monitor does not take work away from live workers.
 *
 * @throws MendError as {@link planRestore}, and `store_corrupt` when the backup itself is damaged.
 */
export async function restoreFromBackup(
  path: string,
  ref: string,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const { backup, condition } = planRestore(path, ref, {
    force: options.force,
    now: options.clock.now(),
  });
  const source = prepareSource(backup);
  try {
    return condition.damage
      ? await replaceFiles(path, source.file, backup, condition, options)
      : await restoreInPlace(path, source.file, backup, condition, options);
  } finally {
    source.discard();
  }
}

/** Options of {@link restoreFromJournal}. */
export interface JournalRestoreOptions extends RestoreOptions {
  /** Point in time: stop after the transaction holding this seq, or before the first after this time. */
  limit?: JournalLimit;
  /** Called as the replay goes, with the last seq applied. */
  onProgress?: (seq: number) => void;
}

/**
 * What a restore from the journal did: the restore itself, what the rebuild read, and the newest
 * backup when it holds more of the log than the journal did (the journal lost history).
 */
export type JournalRestoreResult = RestoreResult & {
  rebuilt: RebuildResult;
  newerBackup: BackupInfo | null;
};

/**
 * Rebuilds the store at `path` from its transition journal (`journal/<name>/` beside it), up to
 * `limit` when given, and installs the result the way a backup is restored: in place into a sound
 * database (backed up first), or replacing a damaged or missing one. Whatever the journal holds
 * after the point restored to is moved aside, not deleted.
 *
 * @throws MendError `not_found` (no journal), `refused` (live leases without `force`),
 * `store_corrupt` (the journal's chain breaks before the point asked for).
 */
export async function restoreFromJournal(
  path: string,
  options: JournalRestoreOptions,
): Promise<JournalRestoreResult> {
  const now = options.clock.now();
  const journal = journalDirFor(path);
  if (listSegments(journal).length === 0) {
    throw new MendError(
      "not_found",
      `no transition journal at ${journal}: there is nothing to rebuild ${path} from; restore a backup instead (\`mend state backups\`)`,
      { journal },
    );
  }
  const condition = inspectStore(path, now);
  if (!condition.damage && condition.leases.length > 0 && !options.force) {
    throw leasesRefusal(condition.leases);
  }
  const file = `${path}.rebuild.tmp`;
  rmSync(file, { force: true });
  try {
    const rebuilt = await rebuildFromJournal(journal, file, {
      now,
      limit: options.limit,
      onProgress: options.onProgress,
    });
    const toSeq = options.limit?.toSeq;
    if (toSeq !== undefined && rebuilt.lastSeq < toSeq) {
      throw new MendError(
        "invalid_argument",
        `the journal ends at seq ${rebuilt.lastSeq}; --to-seq ${toSeq} is past it (nothing was changed)`,
        { lastSeq: rebuilt.lastSeq, toSeq },
      );
    }
    const source: BackupInfo = {
      id: `journal@${rebuilt.lastSeq}`,
      path: file,
      createdAt: now,
      lastSeq: rebuilt.lastSeq,
      lastHash: rebuilt.lastHash ?? GENESIS_HASH,
      sizeBytes: statSync(file).size,
      reason: "rebuilt from the transition journal",
    };
    const newest = listBackupsOf(path)[0];
    const newerBackup =
      options.limit === undefined && newest && newest.lastSeq > rebuilt.lastSeq ? newest : null;
    const result = condition.damage
      ? await replaceFiles(path, file, source, condition, options)
      : await restoreInPlace(path, file, source, condition, options);
    return { ...result, rebuilt, newerBackup };
  } finally {
    rmSync(file, { force: true });
  }
}

/**
 * Checks that the backup is sound and holds what its manifest says, and brings a copy of an
 * older schema version up to date. Returns the file to restore from.
 */
function prepareSource(backup: BackupInfo): { file: string; discard: () => void } {
  let version: number;
  const db = openBackup(backup);
  try {
    version = schemaVersion(db, backup.path);
    const problems = (db.pragma("quick_check") as { quick_check: string }[]).filter(
      (r) => r.quick_check !== "ok",
    );
    const last = problems.length === 0 ? lastTransition(db) : null;
    if (!last || last.seq !== backup.lastSeq || last.hash !== backup.lastHash) {
      throw new MendError(
        "store_corrupt",
        `backup ${backup.id} is damaged or does not hold what its manifest says; choose another (\`mend state backups\`)`,
        { backup: backup.id, problems: problems.map((p) => p.quick_check) },
      );
    }
  } finally {
    db.close();
  }
  if (version === SQLITE_MIGRATIONS.length) return { file: backup.path, discard: () => {} };
  const copy = backupFiles(dirname(backup.path), backup.id).tmpDb;
  copyFileSync(backup.path, copy);
  const upgraded = new Database(copy);
  try {
    upgraded
      .transaction(() => {
        for (let v = version; v < SQLITE_MIGRATIONS.length; v++)
          upgraded.exec(SQLITE_MIGRATIONS[v]!);
        upgraded.pragma(`user_version = ${SQLITE_MIGRATIONS.length}`);
      })
      .immediate();
  } finally {
    upgraded.close();
  }
  return { file: copy, discard: () => rmSync(copy, { force: true }) };
}

function openBackup(backup: BackupInfo): Database.Database {
  try {
    return new Database(backup.path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new MendError(
      "store_corrupt",
      `backup ${backup.id} cannot be opened (${(err as Error).message}); choose another (\`mend state backups\`)`,
      { backup: backup.id },
      { cause: err },
    );
  }
}

async function restoreInPlace(
  path: string,
  source: string,
  backup: BackupInfo,
  condition: StoreCondition,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const store = new SqliteStore(path, { clock: options.clock });
  try {
    const safetyBackup = await takeBackup(
      store,
      { reason: "before restore" },
      new Set([backup.id]),
    );
    planJournalCut(store, source);
    const fencedLeases = await copyInPlace(store, source, (leases) => {
      if (leases.length > 0 && !options.force) throw leasesRefusal(leases);
    });
    const journalRestarted = store.completeJournalCut();
    await store.write((tx) =>
      tx.intervention(
        options.who,
        backup.id,
        { lastSeq: condition.lastSeq },
        restoreRecord(backup, "in place", safetyBackup.id),
      ),
    );
    return {
      backup,
      mode: "in place",
      damage: null,
      previousSeq: condition.lastSeq,
      safetyBackup,
      fencedLeases,
      journalRestarted,
    };
  } finally {
    await store.close();
  }
}

/**
 * Replaces every table's rows with the backup's in one write transaction. `record` runs inside
 * it, after the copy, with the leases that were live just before (checked under the write lock,
 * so none can be granted between the check and the copy). Returns those leases.
 */
async function copyInPlace(
  store: SqliteStore,
  source: string,
  record: (liveBefore: LiveLease[]) => void,
): Promise<LiveLease[]> {
  const db = store.db;
  // Off for the copy: rows arrive table by table, and the backup was consistent as a whole. It
  // also lets SQLite copy each table page by page instead of row by row.
  db.pragma("foreign_keys = OFF");
  db.prepare("ATTACH DATABASE ? AS bak").run(source);
  try {
    return await store.write(async () => {
      const live = liveLeases(db, store.clock.now());
      const tables = sameTables(db);
      db.exec(`
        CREATE TEMP TABLE restore_leases AS
          SELECT id, lease_token, lease_worker, lease_expires_at FROM main.tasks WHERE status = 'running';
        CREATE TEMP TABLE restore_heartbeats AS SELECT id, heartbeat_at FROM main.workers;
      `);
      for (const t of tables)
        db.exec(`DELETE FROM main."${t}"; INSERT INTO main."${t}" SELECT * FROM bak."${t}";`);
      db.exec(`
        UPDATE main.tasks SET lease_expires_at = max(tasks.lease_expires_at, l.lease_expires_at)
          FROM temp.restore_leases l
          WHERE l.id = tasks.id AND tasks.status = 'running' AND l.lease_token = tasks.lease_token
            AND l.lease_worker IS tasks.lease_worker;
        UPDATE main.workers SET heartbeat_at = max(workers.heartbeat_at, h.heartbeat_at)
          FROM temp.restore_heartbeats h WHERE h.id = workers.id;
        DROP TABLE temp.restore_leases;
        DROP TABLE temp.restore_heartbeats;
      `);
      record(live);
      return live;
    });
  } finally {
    db.exec("DETACH DATABASE bak");
    db.pragma("foreign_keys = ON");
  }
}

/** The tables to copy; the backup (at the same schema version) must have exactly the same ones. */
function sameTables(db: Database.Database): string[] {
  const schema = (name: string) =>
    db
      .prepare(
        `SELECT name, sql FROM ${name}.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`,
      )
      .all() as { name: string; sql: string }[];
  const main = schema("main");
  const bak = schema("bak");
  if (JSON.stringify(main) !== JSON.stringify(bak)) {
    throw new MendError(
      "store_incompatible",
      "the backup's tables differ from the store's although their schema versions match; it cannot be restored in place",
      { store: main.map((t) => t.name), backup: bak.map((t) => t.name) },
    );
  }
  return main.map((t) => t.name);
}

/**
 * Puts a copy of the backup where the damaged or missing database was. The stale `-wal` and
 * `-shm` go first: SQLite would otherwise replay the old log onto the new file. The copy is
 * complete and durable before it is renamed over the old file, so a crash leaves either file.
 */
async function replaceFiles(
  path: string,
  source: string,
  backup: BackupInfo,
  condition: StoreCondition,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const tmp = `${path}.restore.tmp`;
  copyFileSync(source, tmp);
  fsyncPath(tmp);
  writeCutMarker(journalDirFor(path), {
    position: journalPositionOf(tmp),
    archive: abandonedDir(path, options.clock.now()),
  });
  rmSync(`${path}-wal`, { force: true });
  rmSync(`${path}-shm`, { force: true });
  renameSync(tmp, path);
  fsyncPath(dirname(path));
  // Opening the store carries out the journal cut recorded above.
  const store = new SqliteStore(path, { clock: options.clock });
  const journalRestarted = store.journalRestartedOnOpen;
  try {
    await store.write((tx) =>
      tx.intervention(
        options.who,
        backup.id,
        { lastSeq: condition.lastSeq, damage: condition.damage },
        restoreRecord(backup, "replaced", null),
      ),
    );
  } finally {
    await store.close();
  }
  return {
    backup,
    mode: "replaced",
    damage: condition.damage,
    previousSeq: condition.lastSeq,
    safetyBackup: null,
    fencedLeases: [],
    journalRestarted,
  };
}

/**
 * Records, before the restore commits, how the transition journal must be cut once it has: the
 * journal's records after the restored database's position are the history the restore abandons.
 * They are moved to `<journal>.abandoned-<restore id>/` beside it, never deleted; see
 * {@link SqliteStore.completeJournalCut}.
 */
function planJournalCut(store: SqliteStore, source: string): void {
  writeCutMarker(journalDirFor(store.path), {
    position: journalPositionOf(source),
    archive: abandonedDir(store.path, store.clock.now()),
  });
}

function abandonedDir(path: string, now: number): string {
  return `${journalDirFor(path)}.abandoned-${newId("restore", now)}`;
}

/** The journal position a database file records, or null when it has none. */
function journalPositionOf(file: string): JournalPosition | null {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare(SELECT_JOURNAL_POSITION).get() as JournalPosition | undefined;
    return row ?? null;
  } finally {
    db.close();
  }
}

function restoreRecord(
  backup: BackupInfo,
  mode: RestoreRecord["mode"],
  safetyBackup: string | null,
): RestoreRecord {
  return { restoredFrom: backup.id, lastSeq: backup.lastSeq, mode, safetyBackup };
}
