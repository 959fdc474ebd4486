import {
  closeSync,
  constants,
  existsSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { Worker } from "node:worker_threads";
import { MendError } from "../errors.js";
import { fsyncPath } from "./fsync.js";
import type { InterventionRecord } from "../model/records.js";
import type { UnhashedTransition } from "../store/chain.js";

/**
 * The transition journal: the hash-chained log appended to segment files outside the database,
 * each transaction's records written and fsynced before the transaction commits. A database file
 * that is destroyed or corrupted can be rebuilt from it with no committed transition lost.
 *
 * A segment is a file of lines named after the seq of its first record. A transition's line is
 * `T`, its header (a JSON array), its data and its detail, separated by tabs — JSON text never
 * holds a raw tab, and the data is kept as the exact text its hash covers. An intervention's line
 * is `I` and its JSON. The last line of each transaction ends with a tab and `E`, so a
 * transaction cut short by a crash mid-write is recognised and left out. Where the committed
 * journal ends is recorded in the database in the same transaction ({@link JournalPosition});
 * bytes beyond it belong to a transaction whose commit never happened and are overwritten by the
 * next writer.
 */

/** A transition as the journal stores it: exactly the fields its hash covers, plus the hash. */
export type JournalTransition = UnhashedTransition & { hash: string };

/** Where the journal ends after the last committed transaction. */
export interface JournalPosition {
  /** File name of the segment being appended to. */
  segment: string;
  /** Its length in bytes after the last commit. */
  offset: number;
  /** Seq of the last record written to the journal. */
  lastSeq: number;
}

/** Default largest segment before a new one is started. */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;

const SEGMENT_SUFFIX = ".journal";

/** The journal directory of a database file: `.mend/mend.db` → `.mend/journal/mend/`. */
export function journalDirFor(dbPath: string): string {
  return join(dirname(dbPath), "journal", basename(dbPath, extname(dbPath)));
}

/** Segment file name for a segment whose first record has `seq`. */
export function segmentName(seq: number): string {
  return `${String(seq).padStart(16, "0")}${SEGMENT_SUFFIX}`;
}

/** Seq of the first record of the segment named `name`. */
function segmentFirstSeq(name: string): number {
  return Number(name.slice(0, 16));
}

/** Segment file names in `dir`, in order. */
export function listSegments(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^\d{16}\.journal$/.test(f))
    .sort();
}

/** Moves the segments named after `after` (all of them for null) to where `to` says. */
function moveSegmentsAfter(
  dir: string,
  after: string | null,
  to: (name: string) => string,
): number {
  let moved = 0;
  for (const name of listSegments(dir)) {
    if (after !== null && name <= after) continue;
    const target = to(name);
    mkdirSync(dirname(target), { recursive: true });
    moved += statSync(join(dir, name)).size;
    renameSync(join(dir, name), target);
  }
  return moved;
}

/** One journal line for a transition. */
export function encodeTransition(t: JournalTransition): string {
  const header = JSON.stringify([
    t.seq,
    t.at,
    t.entity,
    t.entityId,
    t.workstreamId,
    t.from,
    t.to,
    t.event,
    t.severity,
    t.actor,
    t.hash,
  ]);
  return `T\t${header}\t${t.dataJson}\t${t.detailJson ?? "null"}\n`;
}

/** One journal line for an intervention (not part of the hash chain; kept so a rebuild has them). */
export function encodeIntervention(i: InterventionRecord): string {
  return `I\t${JSON.stringify(i)}\n`;
}

const END = "\tE";

/** Marks the last of a transaction's lines as its end; returns them as one string. */
export function endTransaction(lines: string[]): string {
  const last = lines.length - 1;
  lines[last] = `${lines[last]!.slice(0, -1)}${END}\n`;
  return lines.join("");
}

/** Segments grow in steps of this many zero bytes, so a commit's fsync flushes data, not file size. */
const GROWTH_BYTES = 4 * 1024 * 1024;

/**
 * Appends transactions to the journal of one database. One instance per process; several
 * processes append to the same files, each under the database's write lock.
 *
 * Segments are preallocated with zeros and every write ends with a NUL byte that the next write
 * overwrites: readers stop at the first NUL, and a syncing commit does not have to update the
 * file's size (half the cost of an appending one on this kind of disk).
 */
export class JournalWriter {
  private fd: number | null = null;
  private fdSegment: string | null = null;
  /** Inode of the open segment, to notice it was moved aside (by a restore) while open. */
  private fdIno = 0;
  /** Bytes allocated in the open segment, as last seen. */
  private allocated = 0;
  private readonly background = new BackgroundSync();

  constructor(
    readonly dir: string,
    private readonly segmentBytes = DEFAULT_SEGMENT_BYTES,
  ) {}

  /**
   * Writes one transaction's lines at `pos`; returns the new position. Whatever lies at `pos` (a
   * transaction whose commit never happened) is overwritten. Call while holding the database's
   * write lock, before committing. `sync: "now"` makes the lines durable before returning;
   * `"overlapped"` starts making them durable on a helper thread, so that it happens while the
   * database commits: call {@link JournalWriter.finishSync} before acknowledging the transaction.
   */
  append(
    pos: JournalPosition,
    lines: string,
    firstSeq: number,
    lastSeq: number,
    sync: "now" | "overlapped" = "now",
  ): JournalPosition {
    const bytes = Buffer.from(`${lines}\0`);
    let segment = pos.segment;
    let offset = pos.offset;
    if (offset > 0 && offset + bytes.length > this.segmentBytes) {
      // The segment being left may still have another process's overlapped sync running: make it
      // durable before anything goes to the next one, so a lost tail is only ever in the last.
      fdatasyncSync(this.open(segment));
      this.dropSegmentsAfter(segment);
      segment = segmentName(firstSeq);
      offset = 0;
    }
    const fd = this.open(segment);
    if (offset + bytes.length > this.allocated) this.grow(fd, segment, offset, bytes.length);
    this.checkTail(fd, segment, offset);
    let written = 0;
    while (written < bytes.length) {
      written += writeSync(fd, bytes, written, bytes.length - written, offset + written);
    }
    if (sync === "now") fdatasyncSync(fd);
    else this.background.start(fd);
    return { segment, offset: offset + bytes.length - 1, lastSeq };
  }

  /**
   * Waits until the lines written with `sync: "overlapped"` are durable. Throws when the sync
   * failed, unless `quietly` (the transaction failed anyway and its error is the one to report).
   */
  finishSync(quietly = false): void {
    this.background.finish(quietly);
  }

  /** Closes the open segment. */
  close(): void {
    this.background.finish(true);
    this.background.stop();
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.fdSegment = null;
    this.allocated = 0;
  }

  private open(segment: string): number {
    // The cached file must still be the segment: a restore may have set it aside meanwhile.
    if (this.fdSegment === segment && this.fd !== null && this.stillAt(segment)) {
      return this.fd;
    }
    this.close();
    mkdirSync(this.dir, { recursive: true });
    // Segments after this one can only be left over from a transaction that started a segment
    // and never committed; checked whenever a process starts writing to a segment.
    this.dropSegmentsAfter(segment);
    const path = join(this.dir, segment);
    const created = !existsSync(path);
    this.fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    this.fdSegment = segment;
    const stat = fstatSync(this.fd);
    this.allocated = stat.size;
    this.fdIno = stat.ino;
    // A new file's directory entry must be durable too, or a crash could lose the whole segment.
    if (created) fsyncPath(this.dir);
    return this.fd;
  }

  /** One stat per transaction: the path still names the file this process has open. */
  private stillAt(segment: string): boolean {
    return statSync(join(this.dir, segment), { throwIfNoEntry: false })?.ino === this.fdIno;
  }

  /** Extends the segment with zeros (another process may already have done so). */
  private grow(fd: number, segment: string, offset: number, length: number): void {
    const size = fstatSync(fd).size;
    if (size < offset) {
      throw new MendError(
        "store_corrupt",
        `journal segment ${join(this.dir, segment)} is ${size} bytes but ${offset} were committed: the journal was damaged; run \`mend state validate\``,
        { segment, size, offset },
      );
    }
    if (size < offset + length) {
      const target = offset + length + GROWTH_BYTES;
      writeSync(fd, Buffer.alloc(target - size), 0, target - size, size);
      fsyncSync(fd);
      this.allocated = target;
    } else {
      this.allocated = size;
    }
  }

  /**
   * At the committed end there is a NUL, or one transaction whose commit never happened. More
   * than one transaction there means the database is older than its journal (an old copy put in
   * its place): overwriting would destroy committed history, so refuse.
   */
  private checkTail(fd: number, segment: string, offset: number): void {
    const first = Buffer.alloc(1);
    readSync(fd, first, 0, 1, offset);
    if (first[0] === 0) return;
    const tail = Buffer.alloc(Math.min(this.allocated - offset, 16 * 1024 * 1024));
    readSync(fd, tail, 0, tail.length, offset);
    const nul = tail.indexOf(0);
    const text = tail.subarray(0, nul < 0 ? tail.length : nul).toString("utf8");
    const ends = text.split(`${END}\n`).length - 1;
    if (ends > 1) {
      const path = join(this.dir, segment);
      throw new MendError(
        "refused",
        `the journal ${path} holds ${ends} committed transactions more than the database: the database file looks older than its journal (replaced by an old copy?); run \`mend state restore --from-transitions\` to bring it forward, or \`mend state validate\``,
        { path, transactions: ends },
      );
    }
  }

  /** Segments named after `segment` were started by a transaction that never committed. */
  private dropSegmentsAfter(segment: string): void {
    moveSegmentsAfter(this.dir, segment, (name) => join(this.dir, `${name}.uncommitted`));
  }
}

/** The helper thread's loop: wait for a request, fdatasync the file it names, say so. */
const SYNC_LOOP = `
const { workerData } = require("node:worker_threads");
const { fdatasyncSync } = require("node:fs");
const s = new Int32Array(workerData);
let seen = 0;
for (;;) {
  Atomics.wait(s, 0, seen);
  seen = Atomics.load(s, 0);
  try { fdatasyncSync(Atomics.load(s, 2)); } catch { Atomics.store(s, 3, 1); }
  Atomics.store(s, 1, seen);
  Atomics.notify(s, 1);
}`;

/**
 * fdatasync on a helper thread, started inside a transaction and awaited after its commit: the
 * journal's sync and the database's own then run at the same time instead of one after the other.
 * Requests never overlap (one transaction at a time per process), so one slot per field will do:
 * [0] requests made, [1] requests done, [2] the file descriptor, [3] a sync failed.
 */
class BackgroundSync {
  private readonly shared = new SharedArrayBuffer(16);
  private readonly state = new Int32Array(this.shared);
  private requested = 0;
  private thread: Worker | null = null;

  start(fd: number): void {
    if (!this.thread) {
      this.thread = new Worker(SYNC_LOOP, { eval: true, workerData: this.shared });
      // It must not keep a process alive that has nothing else to do.
      this.thread.unref();
    }
    this.requested++;
    Atomics.store(this.state, 2, fd);
    Atomics.store(this.state, 0, this.requested);
    Atomics.notify(this.state, 0);
  }

  finish(quietly: boolean): void {
    for (;;) {
      const done = Atomics.load(this.state, 1);
      if (done >= this.requested) break;
      Atomics.wait(this.state, 1, done);
    }
    if (Atomics.exchange(this.state, 3, 0) !== 0 && !quietly) {
      throw new MendError(
        "internal",
        "the transition journal could not be synced to disk (fdatasync failed); the transaction is committed in the database, and the journal is repaired from it when the store is next opened",
      );
    }
  }

  stop(): void {
    void this.thread?.terminate();
    this.thread = null;
  }
}

/**
 * A transition read back from the journal, with its JSON both as hashed text and decoded (unless
 * the scan was asked not to decode it, when `data` is empty and `detail` null).
 */
export type ReadTransition = JournalTransition & {
  data: Record<string, unknown>;
  detail: Record<string, unknown> | null;
};

/** One committed transaction as read from the journal. */
export interface JournalTransaction {
  transitions: ReadTransition[];
  interventions: InterventionRecord[];
  /** Where the journal ends after this transaction. */
  end: JournalPosition;
}

/** Where to stop reading: after the transaction holding `toSeq`, or before the first one after `toTime`. */
export interface JournalLimit {
  toSeq?: number;
  toTime?: number;
}

/** What a scan of the journal found besides the transactions it visited. */
export interface JournalScan {
  /** Where the journal ends after the last transaction visited. */
  end: JournalPosition;
  /** Records of a last transaction cut short mid-write, left out. */
  tornRecords: number;
}

/**
 * Visits every committed transaction in the journal in `dir`, in order, up to `limit`, without
 * holding the whole journal in memory. A last transaction without its end marker (a crash
 * mid-write) is left out and counted; a line that cannot be read is a typed corruption error
 * naming the segment and byte.
 */
export function scanJournal(
  dir: string,
  limit: JournalLimit,
  visit: (tx: JournalTransaction) => void,
  options: { decodeData?: boolean } = {},
): JournalScan {
  const decodeData = options.decodeData ?? true;
  let end: JournalPosition = { segment: segmentName(1), offset: 0, lastSeq: 0 };
  let transitions: ReadTransition[] = [];
  let interventions: InterventionRecord[] = [];
  let done = false;
  for (const segment of listSegments(dir)) {
    // A segment starting before the expected seq was begun by a transaction that never committed
    // (its writer died while starting it); the committed records went on in the previous one.
    if (end.lastSeq > 0 && segmentFirstSeq(segment) <= end.lastSeq) continue;
    // A transaction never spans segments: one left open at the end of the previous segment was
    // cut short by a crash, and the next writer went on in a new segment.
    transitions = [];
    interventions = [];
    const bytes = readFileSync(join(dir, segment));
    const stop = bytes.indexOf(0);
    const size = stop < 0 ? bytes.length : stop;
    let start = 0;
    while (!done && start < size) {
      const nl = bytes.indexOf(10, start);
      if (nl < 0 || nl >= size) break;
      const text = bytes.toString("utf8", start, nl);
      const offset = start;
      start = nl + 1;
      const closes = text.endsWith(END);
      const parts = (closes ? text.slice(0, -END.length) : text).split("\t");
      try {
        if (parts[0] === "I" && parts.length === 2) {
          interventions.push(JSON.parse(parts[1]!) as InterventionRecord);
        } else if (parts[0] === "T" && parts.length === 4) {
          const t = decodeTransition(parts[1]!, parts[2]!, parts[3]!, decodeData);
          if (limit.toTime !== undefined && t.at > limit.toTime && transitions.length === 0) {
            done = true;
            break;
          }
          transitions.push(t);
        } else {
          throw new Error("unknown line");
        }
      } catch {
        throw new MendError(
          "store_corrupt",
          `journal segment ${join(dir, segment)} has an unreadable line at byte ${offset}`,
          { segment, offset },
        );
      }
      if (!closes) continue;
      end = { segment, offset: start, lastSeq: transitions.at(-1)?.seq ?? end.lastSeq };
      visit({ transitions, interventions, end });
      transitions = [];
      interventions = [];
      if (limit.toSeq !== undefined && end.lastSeq >= limit.toSeq) done = true;
    }
    if (done) break;
  }
  return { end, tornRecords: done ? 0 : transitions.length + interventions.length };
}

/** Everything in a journal, read into memory (for tests and small journals). */
export function readJournal(
  dir: string,
  limit: JournalLimit = {},
): JournalScan & { transitions: ReadTransition[]; interventions: InterventionRecord[] } {
  const transitions: ReadTransition[] = [];
  const interventions: InterventionRecord[] = [];
  const scan = scanJournal(dir, limit, (tx) => {
    transitions.push(...tx.transitions);
    interventions.push(...tx.interventions);
  });
  return { ...scan, transitions, interventions };
}

const NOT_DECODED: Record<string, unknown> = Object.freeze({});

function decodeTransition(
  header: string,
  dataJson: string,
  detailJson: string,
  decodeData: boolean,
): ReadTransition {
  const [seq, at, entity, entityId, workstreamId, from, to, event, severity, actor, hash] =
    JSON.parse(header) as [
      number,
      number,
      JournalTransition["entity"],
      string,
      string | null,
      string | null,
      string,
      string,
      JournalTransition["severity"],
      string,
      string,
    ];
  return {
    seq,
    at,
    entity,
    entityId,
    workstreamId,
    from,
    to,
    event,
    severity,
    actor,
    dataJson,
    detailJson: detailJson === "null" ? null : detailJson,
    data: decodeData ? (JSON.parse(dataJson) as Record<string, unknown>) : NOT_DECODED,
    detail:
      !decodeData || detailJson === "null"
        ? null
        : (JSON.parse(detailJson) as Record<string, unknown>),
    hash,
  };
}

/**
 * Cuts the journal back to `pos` (a restored database's position): whatever was committed after it
 * is moved to `archive`, not deleted, so nothing is destroyed. Returns how many bytes were moved.
 */
export function discardJournalAfter(dir: string, pos: JournalPosition, archive: string): number {
  let moved = 0;
  const current = join(dir, pos.segment);
  if (existsSync(current)) {
    const bytes = readFileSync(current);
    const stop = bytes.indexOf(0, pos.offset);
    const tail = bytes.subarray(pos.offset, stop < 0 ? bytes.length : stop);
    if (tail.length > 0) {
      mkdirSync(archive, { recursive: true });
      writeFileSync(join(archive, `${pos.segment}.after-${pos.offset}`), tail);
      moved += tail.length;
      const fd = openSync(current, "r+");
      try {
        writeSync(fd, Buffer.alloc(1), 0, 1, pos.offset);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  return moved + moveSegmentsAfter(dir, pos.segment, (name) => join(archive, name));
}

/**
 * A cut of the journal that a restore has decided on: where the restored database's journal ends
 * (null: it has no journal position) and where the records after it go. Written durably before
 * the restore commits and carried out after, so that a restore that never commits cuts nothing,
 * and one interrupted after its commit is finished by the next process that opens the store.
 */
export interface JournalCut {
  position: JournalPosition | null;
  archive: string;
}

function cutMarkerPath(dir: string): string {
  return `${dir}.cut.json`;
}

/** Records, durably, the cut a restore is about to commit. */
export function writeCutMarker(dir: string, cut: JournalCut): void {
  const path = cutMarkerPath(dir);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, JSON.stringify(cut));
  fsyncPath(`${path}.tmp`);
  renameSync(`${path}.tmp`, path);
  fsyncPath(dirname(path));
}

/** The cut a restore left to carry out, if any. */
export function readCutMarker(dir: string): JournalCut | null {
  const path = cutMarkerPath(dir);
  return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as JournalCut) : null;
}

export function removeCutMarker(dir: string): void {
  rmSync(cutMarkerPath(dir), { force: true });
}

/** Whether the journal holds everything up to `pos` (its segment is there and long enough). */
export function journalReaches(dir: string, pos: JournalPosition): boolean {
  return (statSync(join(dir, pos.segment), { throwIfNoEntry: false })?.size ?? -1) >= pos.offset;
}

/** Moves every segment into `archive`: the journal starts afresh. */
export function setJournalAside(dir: string, archive: string): void {
  moveSegmentsAfter(dir, null, (name) => join(archive, name));
}

/** Whether two positions are the same point of the journal. */
export function samePosition(a: JournalPosition | null, b: JournalPosition | null): boolean {
  return a === null || b === null
    ? a === b
    : a.segment === b.segment && a.offset === b.offset && a.lastSeq === b.lastSeq;
}

/** How far back from the committed end {@link journalIntactAt} looks for lost bytes. */
const TAIL_CHECK_BYTES = 4 * 1024 * 1024;

/**
 * Whether the journal holds the database's last committed transactions: the bytes before the
 * committed end hold no NUL (what a machine crash leaves where a write never reached the disk,
 * the segment being preallocated with zeros) and end a transaction.
 */
export function journalIntactAt(dir: string, pos: JournalPosition): boolean {
  if (!journalReaches(dir, pos)) return false;
  const path = join(dir, pos.segment);
  const from = Math.max(0, pos.offset - TAIL_CHECK_BYTES);
  const bytes = Buffer.alloc(pos.offset - from);
  const fd = openSync(path, "r");
  try {
    readSync(fd, bytes, 0, bytes.length, from);
  } finally {
    closeSync(fd);
  }
  return (
    bytes.indexOf(0) < 0 && bytes.toString("latin1", bytes.length - END.length - 1) === `${END}\n`
  );
}

/**
 * The end of the last whole transaction in the segment of `pos` that the disk kept, and the seq
 * of the last transition up to there: where to write again what a crash lost.
 */
export function lastIntactEnd(dir: string, pos: JournalPosition): JournalPosition {
  const path = join(dir, pos.segment);
  const bytes = existsSync(path) ? readFileSync(path).subarray(0, pos.offset) : Buffer.alloc(0);
  const zero = bytes.indexOf(0);
  const kept = zero < 0 ? bytes : bytes.subarray(0, zero);
  const end = kept.lastIndexOf(`${END}\n`) < 0 ? 0 : kept.lastIndexOf(`${END}\n`) + END.length + 1;
  const text = kept.toString("utf8", 0, end);
  const lastT = text.lastIndexOf("\nT\t") + 1 || (text.startsWith("T\t") ? 0 : -1);
  const lastSeq =
    lastT < 0
      ? segmentFirstSeq(pos.segment) - 1
      : (JSON.parse(text.slice(lastT + 2, text.indexOf("\t", lastT + 2))) as number[])[0]!;
  return { segment: pos.segment, offset: Buffer.byteLength(text), lastSeq };
}
