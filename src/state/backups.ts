/**
 * Backups on disk: where they live, how they are named, their manifests, and which ones the
 * retention policy lets go. Nothing here talks to a database; the copying itself is the store
 * driver's (`store/sqlite/backup.ts`).
 *
 * A backup is two files in `<directory of the database>/backups/`: `<id>.db`, a complete copy of
 * the store, and `<id>.json`, its manifest. Both are written under a temporary name and renamed
 * when complete, the manifest last, so a backup is listed only once both are whole: a process
 * killed mid-backup leaves at most unlisted leftovers, which a later backup clears away.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import { MendError } from "../errors.js";
import { newId } from "../model/ids.js";
import { fsyncPath } from "./fsync.js";

/** One complete backup of a store. Times are epoch milliseconds. */
export interface BackupInfo {
  /** Sortable by creation time: `bk_…`. */
  id: string;
  /** The backup's database file. */
  path: string;
  createdAt: number;
  /** Seq of the last transition the backup contains (0 for an empty log). */
  lastSeq: number;
  /** Hash of that transition, to tell whether a store still holds the same history. */
  lastHash: string;
  sizeBytes: number;
  /** Why it was taken: `scheduled`, `before restore`, or what the person who asked said. */
  reason: string;
}

/** What a backup is asked for with. */
export interface BackupOptions {
  /** Why it is taken; `mend state backups` shows it. */
  reason: string;
  /** The person who asked, if one did: the backup is then logged as an intervention. */
  actor?: string;
  /** The command that person ran, for the interventions log (default `backup`). */
  command?: string;
  /** Overrides of {@link DEFAULT_RETENTION}, applied after the backup. */
  retention?: Partial<RetentionPolicy>;
}

/**
 * What a restore records as the `after` of its intervention; `mend state validate` finds the last
 * restore by it (backups taken before it belong to a history the restore abandoned).
 */
export interface RestoreRecord {
  restoredFrom: string;
  /** Seq of the last transition the restored store holds. */
  lastSeq: number;
  mode: "in place" | "replaced";
  /** The backup of the store taken just before, when it was sound. */
  safetyBackup: string | null;
}

/** True when an intervention's `after` records a restore. */
export function isRestoreRecord(value: unknown): value is RestoreRecord {
  return typeof (value as Partial<RestoreRecord> | null)?.restoredFrom === "string";
}

/** How many backups to keep, and for how long. */
export interface RetentionPolicy {
  /** Most backups kept (default 100). */
  maxCount: number;
  /** Backups older than this are deleted, in ms (default 24 h). */
  maxAgeMs: number;
}

export const DEFAULT_RETENTION: RetentionPolicy = { maxCount: 100, maxAgeMs: 86_400_000 };

/** Prefix of backup ids. */
export const BACKUP_ID_PREFIX = "bk";

/**
 * Leftovers of a backup that never completed are removed once they are this old, so a backup
 * still being written by another process is never touched.
 */
export const ORPHAN_GRACE_MS = 3_600_000;

const ID = `${BACKUP_ID_PREFIX}_[0-9a-z]{18}`;
const ID_PATTERN = new RegExp(`^${ID}$`);
/** A backup's files and the temporary ones they are written under (SQLite adds `-journal`…). */
const FILE_PATTERN = new RegExp(`^(${ID})\\.(?:db|json)(\\.tmp(?:-journal|-wal|-shm)?)?$`);
/** Length of an id's prefix and time part: ids compare by time on it. */
const ID_TIME_LENGTH = BACKUP_ID_PREFIX.length + 1 + 10;

/** A manifest as written to `<id>.json`. `store` names the database file it was taken of. */
const manifestSchema = z.strictObject({
  format: z.literal(1),
  id: z.string().regex(ID_PATTERN),
  store: z.string(),
  createdAt: z.number().int(),
  lastSeq: z.number().int().nonnegative(),
  lastHash: z.string(),
  sizeBytes: z.number().int().nonnegative(),
  reason: z.string(),
  actor: z.string().nullable(),
});
type Manifest = z.infer<typeof manifestSchema>;

/** The backups directory of a database file: `.mend/mend.db` → `.mend/backups/`. */
export function backupDirFor(dbPath: string): string {
  return join(dirname(dbPath), "backups");
}

/** A new backup id; later ids sort after earlier ones. */
export function newBackupId(now: number): string {
  return newId(BACKUP_ID_PREFIX, now);
}

/** The files of one backup: final names, and the temporary names they are written under. */
export function backupFiles(dir: string, id: string) {
  return {
    db: join(dir, `${id}.db`),
    manifest: join(dir, `${id}.json`),
    tmpDb: join(dir, `${id}.db.tmp`),
    tmpManifest: join(dir, `${id}.json.tmp`),
  };
}

/**
 * Publishes a backup whose database file is complete at its final name: writes the manifest to a
 * temporary file, makes it durable, and renames it into place.
 */
export function writeManifest(dbPath: string, info: BackupInfo, actor: string | null): void {
  const dir = dirname(info.path);
  const files = backupFiles(dir, info.id);
  const manifest: Manifest = {
    format: 1,
    id: info.id,
    store: basename(dbPath),
    createdAt: info.createdAt,
    lastSeq: info.lastSeq,
    lastHash: info.lastHash,
    sizeBytes: info.sizeBytes,
    reason: info.reason,
    actor,
  };
  writeFileSync(files.tmpManifest, `${JSON.stringify(manifest, null, 2)}\n`);
  fsyncPath(files.tmpManifest);
  renameSync(files.tmpManifest, files.manifest);
  fsyncPath(dir);
}

/**
 * The complete backups of the database at `dbPath`, newest first. A manifest that does not parse,
 * belongs to another database file in the same directory, or whose database file is missing is
 * not a backup.
 */
export function listBackupsOf(dbPath: string): BackupInfo[] {
  const dir = backupDirFor(dbPath);
  if (!existsSync(dir)) return [];
  const store = basename(dbPath);
  const found: BackupInfo[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(".json")) continue;
    const manifest = readManifest(join(dir, name));
    if (!manifest || manifest.store !== store || name !== `${manifest.id}.json`) continue;
    const path = backupFiles(dir, manifest.id).db;
    if (!existsSync(path)) continue;
    found.push({
      id: manifest.id,
      path,
      createdAt: manifest.createdAt,
      lastSeq: manifest.lastSeq,
      lastHash: manifest.lastHash,
      sizeBytes: manifest.sizeBytes,
      reason: manifest.reason,
    });
  }
  return found.sort(newestFirst);
}

/** Orders backups newest first; ids break ties, as they sort by time too. */
function newestFirst(a: Pick<BackupInfo, "id" | "createdAt">, b: typeof a): number {
  return b.createdAt - a.createdAt || (b.id < a.id ? -1 : 1);
}

function readManifest(path: string): Manifest | null {
  try {
    const parsed = manifestSchema.safeParse(JSON.parse(readFileSync(path, "utf8")));
    return parsed.success ? parsed.data : null;
  } catch {
    // Unreadable or not JSON: not a backup, but left for a person to look at.
    return null;
  }
}

/**
 * Finds a backup by what a person typed: `latest`, an id, or a unique id prefix.
 *
 * @throws MendError `not_found` when there are no backups or none matches (listing the newest
 * ids), `ambiguous_id` when a prefix matches several.
 */
export function findBackup(backups: readonly BackupInfo[], ref: string): BackupInfo {
  if (backups.length === 0) {
    throw new MendError(
      "not_found",
      "there are no backups of this store yet: take one with `mend state backup`",
      { ref },
    );
  }
  if (ref === "latest") return backups[0]!;
  const exact = backups.find((b) => b.id === ref);
  if (exact) return exact;
  const matches = backups.filter((b) => b.id.startsWith(ref));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) {
    throw new MendError(
      "ambiguous_id",
      `"${ref}" matches several backups: ${matches.map((b) => b.id).join(", ")}`,
      { ref, matches: matches.map((b) => b.id) },
    );
  }
  const known = backups.slice(0, 5).map((b) => b.id);
  throw new MendError(
    "not_found",
    `no backup "${ref}"; the newest are ${known.join(", ")}${backups.length > known.length ? ", …" : ""} (see \`mend state backups\`, or use latest)`,
    { ref, known },
  );
}

/**
 * The backups the retention policy lets go: all but the newest `maxCount`, and every one older
 * than `maxAgeMs` — but never the newest, nor any in `keep`. Pure, so it is tested on a fake clock.
 */
export function expiredBackups(
  backups: readonly Pick<BackupInfo, "id" | "createdAt">[],
  policy: RetentionPolicy,
  now: number,
  keep: ReadonlySet<string> = new Set(),
): string[] {
  return [...backups]
    .sort(newestFirst)
    .filter(
      (b, i) =>
        i > 0 && !keep.has(b.id) && (i >= policy.maxCount || now - b.createdAt > policy.maxAgeMs),
    )
    .map((b) => b.id);
}

/**
 * Applies the retention policy to the backups of `dbPath`, and removes leftovers of backups that
 * never completed once they are older than {@link ORPHAN_GRACE_MS}. Returns the deleted ids.
 */
export function pruneBackups(
  dbPath: string,
  policy: RetentionPolicy,
  now: number,
  keep: ReadonlySet<string> = new Set(),
): string[] {
  const dir = backupDirFor(dbPath);
  const listed = listBackupsOf(dbPath);
  const expired = expiredBackups(listed, policy, now, keep);
  for (const id of expired) {
    const files = backupFiles(dir, id);
    // The manifest first: a backup whose deletion is cut short is unlisted, never half-listed.
    rmSync(files.manifest, { force: true });
    rmSync(files.db, { force: true });
  }
  removeOrphans(dir, now);
  return expired;
}

/**
 * Deletes what a backup that never completed left behind — temporary files, and a database file
 * whose manifest was never published — once its id says it was started long enough ago. Complete
 * files are kept even when their manifest does not parse: that is for a person to look at.
 */
function removeOrphans(dir: string, now: number): void {
  // Ids sort by time on their first characters, so an id started at `now - grace` bounds them.
  const cutoff = newBackupId(now - ORPHAN_GRACE_MS).slice(0, ID_TIME_LENGTH);
  for (const name of readdirSync(dir)) {
    const match = FILE_PATTERN.exec(name);
    if (!match || match[1]!.slice(0, ID_TIME_LENGTH) >= cutoff) continue;
    const unpublished = name.endsWith(".db") && !existsSync(backupFiles(dir, match[1]!).manifest);
    if (match[2] || unpublished) rmSync(join(dir, name), { force: true });
  }
}
