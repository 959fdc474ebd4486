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
  writeSync,
} from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { MendError } from "../errors.js";
import type { InterventionRecord } from "../model/records.js";
import type { UnhashedTransition } from "../store/chain.js";

/**
 * The transition journal: the hash-chained log appended to segment files outside the database,
 * each transaction's records written and fsynced before the transaction commits. A database file
 * that is destroyed or corrupted can be rebuilt from it with no committed transition lost.
 *
 * A segment is a file of JSON lines named after the seq of its first record. The last line of
 * each transaction carries `"end":true`, so a transaction cut short by a crash mid-write is
 * recognised and left out. Where the committed journal ends is recorded in the database in the
 * same transaction ({@link JournalPosition}); bytes beyond it belong to a transaction whose commit
 * never happened and are cut off by the next writer.
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

const SEGMENT_SUFFIX = ".jsonl";

/** The journal directory of a database file: `.mend/mend.db` → `.mend/journal/mend/`. */
export function journalDirFor(dbPath: string): string {
  return join(dirname(dbPath), "journal", basename(dbPath, extname(dbPath)));
}

/** Segment file name for a segment whose first record has `seq`. */
export function segmentName(seq: number): string {
  return `${String(seq).padStart(16, "0")}${SEGMENT_SUFFIX}`;
}

/** Segment file names in `dir`, in order. */
export function listSegments(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^\d{16}\.jsonl$/.test(f))
    .sort();
}

/** One journal line for a transition; `end` marks the last record of its transaction. */
export function encodeTransition(t: JournalTransition, end: boolean): string {
  return `{"seq":${t.seq},"at":${t.at},"entity":"${t.entity}","entityId":${JSON.stringify(t.entityId)},"workstreamId":${t.workstreamId === null ? "null" : JSON.stringify(t.workstreamId)},"from":${t.from === null ? "null" : JSON.stringify(t.from)},"to":${JSON.stringify(t.to)},"event":"${t.event}","severity":"${t.severity}","actor":${JSON.stringify(t.actor)},"data":${t.dataJson},"detail":${t.detailJson ?? "null"},"hash":"${t.hash}"${end ? ',"end":true' : ""}}\n`;
}

/** One journal line for an intervention (not part of the hash chain; kept so a rebuild has them). */
export function encodeIntervention(i: InterventionRecord, end: boolean): string {
  return `${JSON.stringify({ intervention: i, ...(end ? { end: true } : {}) })}\n`;
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
  /** Bytes allocated in the open segment, as last seen. */
  private allocated = 0;

  constructor(
    readonly dir: string,
    private readonly segmentBytes = DEFAULT_SEGMENT_BYTES,
  ) {}

  /**
   * Writes one transaction's lines at `pos` and makes them durable; returns the new position.
   * Whatever lies at `pos` (a transaction whose commit never happened) is overwritten. Call while
   * holding the database's write lock, before committing.
   */
  append(pos: JournalPosition, lines: string, firstSeq: number, lastSeq: number): JournalPosition {
    const bytes = Buffer.from(`${lines}\0`);
    let segment = pos.segment;
    let offset = pos.offset;
    if (offset > 0 && offset + bytes.length > this.segmentBytes) {
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
    fdatasyncSync(fd);
    return { segment, offset: offset + bytes.length - 1, lastSeq };
  }

  /** Closes the open segment. */
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.fdSegment = null;
    this.allocated = 0;
  }

  private open(segment: string): number {
    if (this.fdSegment === segment && this.fd !== null) return this.fd;
    this.close();
    mkdirSync(this.dir, { recursive: true });
    // Segments after this one can only be left over from a transaction that started a segment
    // and never committed; checked whenever a process starts writing to a segment.
    this.dropSegmentsAfter(segment);
    const path = join(this.dir, segment);
    const created = !existsSync(path);
    this.fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    this.fdSegment = segment;
    this.allocated = fstatSync(this.fd).size;
    // A new file's directory entry must be durable too, or a crash could lose the whole segment.
    if (created) syncDirectory(this.dir);
    return this.fd;
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
    const ends = text.split('"end":true}\n').length - 1;
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
    for (const name of listSegments(this.dir)) {
      if (name > segment) {
        renameSync(join(this.dir, name), join(this.dir, `${name}.uncommitted`));
      }
    }
  }
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** What reading a journal found. */
export interface JournalContents {
  transitions: JournalTransition[];
  interventions: InterventionRecord[];
  /** Records of a last transaction that was cut short mid-write (left out). */
  tornRecords: number;
}

/** Where to stop reading: at the transaction containing `toSeq`, or before the first record after `toTime`. */
export interface JournalLimit {
  toSeq?: number;
  toTime?: number;
}

type Line = Record<string, unknown> & { end?: boolean };

/**
 * Reads every committed transaction from the journal in `dir`, in order, stopping at a
 * transaction boundary at or after `limit`. A last transaction without its end marker (a crash
 * mid-write) is left out and counted.
 */
export function readJournal(dir: string, limit: JournalLimit = {}): JournalContents {
  const transitions: JournalTransition[] = [];
  const interventions: InterventionRecord[] = [];
  let txTransitions: JournalTransition[] = [];
  let txInterventions: InterventionRecord[] = [];
  let done = false;
  for (const segment of listSegments(dir)) {
    const expected = (transitions.at(-1)?.seq ?? 0) + 1;
    // A segment starting before the expected seq was begun by a transaction that never committed
    // (its writer died while starting it); the committed records went on in the previous one.
    if (transitions.length > 0 && Number(segment.slice(0, 16)) < expected) continue;
    const bytes = readFileSync(join(dir, segment));
    const nul = bytes.indexOf(0);
    const text = bytes.subarray(0, nul < 0 ? bytes.length : nul).toString("utf8");
    let start = 0;
    while (!done) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      const raw = text.slice(start, nl);
      start = nl + 1;
      if (raw === "") continue;
      let line: Line;
      try {
        line = JSON.parse(raw) as Line;
      } catch {
        throw new MendError(
          "store_corrupt",
          `journal ${join(dir, segment)} has an unreadable line at byte ${start - raw.length - 1}`,
          { segment, offset: start - raw.length - 1 },
        );
      }
      if (line.intervention) {
        txInterventions.push(line.intervention as InterventionRecord);
      } else {
        const t = decodeLine(line);
        if (limit.toTime !== undefined && t.at > limit.toTime && txTransitions.length === 0) {
          done = true;
          break;
        }
        txTransitions.push(t);
      }
      if (line.end) {
        transitions.push(...txTransitions);
        interventions.push(...txInterventions);
        const last = txTransitions.at(-1);
        txTransitions = [];
        txInterventions = [];
        if (limit.toSeq !== undefined && last && last.seq >= limit.toSeq) done = true;
      }
    }
    if (done) break;
  }
  return {
    transitions,
    interventions,
    tornRecords: done ? 0 : txTransitions.length + txInterventions.length,
  };
}

function decodeLine(line: Line): JournalTransition {
  return {
    seq: line.seq as number,
    at: line.at as number,
    entity: line.entity as JournalTransition["entity"],
    entityId: line.entityId as string,
    workstreamId: (line.workstreamId as string | null) ?? null,
    from: (line.from as string | null) ?? null,
    to: line.to as string,
    event: line.event as string,
    severity: line.severity as JournalTransition["severity"],
    actor: line.actor as string,
    dataJson: JSON.stringify(line.data),
    detailJson: line.detail === null || line.detail === undefined ? null : JSON.stringify(line.detail),
    hash: line.hash as string,
  };
}
