import { closeSync, type FSWatcher, mkdirSync, openSync, watch, writeSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { Clock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import {
  discardJournalAfter,
  encodeIntervention,
  encodeTransition,
  endTransaction,
  type JournalPosition,
  type JournalTransition,
  JournalWriter,
  journalDirFor,
  journalIntactAt,
  journalReaches,
  lastIntactEnd,
  listSegments,
  readCutMarker,
  removeCutMarker,
  samePosition,
  segmentName,
  setJournalAside,
} from "../../state/journal.js";
import { type BackupInfo, type BackupOptions, listBackupsOf } from "../../state/backups.js";
import { GENESIS_HASH } from "../chain.js";
import {
  rowToIntervention,
  rowToRawTransition,
  TRANSITION_COLUMNS,
  transitionRow,
} from "../sql/codec.js";
import type { Queryable, Row, SqlDialect } from "../sql/queryable.js";
import { SqlStore } from "../sql/SqlStore.js";
import type { ChainHead, Tx } from "../sql/tx.js";
import { integrityProblems, takeBackup } from "./backup.js";
import { SAVE_JOURNAL_POSITION, SELECT_JOURNAL_POSITION } from "./journal-position.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";

/** Options for opening a SQLite store. */
export interface SqliteStoreOptions {
  clock: Clock;
  /**
   * `FULL` (default) makes every commit durable before it is acknowledged; `NORMAL` may lose the
   * last commits on power loss (never on a process crash).
   */
  synchronous?: "FULL" | "NORMAL";
  /** How long a writer waits for another process's write lock, in ms (default 10 s). */
  busyTimeoutMs?: number;
  /** Largest transition-journal segment file before a new one starts (default 64 MiB). */
  journalSegmentBytes?: number;
}

/** SQLite's spelling of what the dialects spell differently. */
const SQLITE_DIALECT: SqlDialect = {
  jsonText: (column, path) => `json_extract(${column}, '$.${path.join(".")}')`,
  jsonNumber: (column, path) => `json_extract(${column}, '$.${path.join(".")}')`,
  jsonFlag: (column, path) => `json_extract(${column}, '$.${path.join(".")}')`,
  inArray: (column) => `${column} IN (SELECT value FROM json_each(?))`,
  jsonSubsetOf: (column) =>
    `NOT EXISTS (SELECT 1 FROM json_each(${column}) AS e WHERE e.value NOT IN (SELECT value FROM json_each(?)))`,
  needsMet: (column) =>
    `NOT EXISTS (SELECT 1 FROM json_each(${column}) AS need WHERE NOT EXISTS (SELECT 1 FROM json_each(need.value) AS r WHERE r.value NOT IN (SELECT value FROM json_each(?))))`,
  lockRows: "",
  arrayParam: (values) => JSON.stringify(values),
  jsonRows: (alias, columns) =>
    `(SELECT ${columns.map(([c]) => `json_extract(value, '$.${c}') AS ${c}`).join(", ")} FROM json_each(?)) AS ${alias}`,
};

/**
 * The embedded store: one SQLite file in WAL mode, shared safely by several processes on one
 * machine. SQLite has one writer at a time: a write transaction takes the file's write lock at
 * once (`BEGIN IMMEDIATE`), and in this process every statement and transaction runs one after
 * another on the one connection, so a transaction never sees another's uncommitted rows. Each
 * transaction's records also go to the transition journal beside the file, durable before the
 * commit is acknowledged.
 */
export class SqliteStore extends SqlStore {
  readonly url: string;
  readonly dialect = SQLITE_DIALECT;
  readonly backupsSupported = true;
  /** @internal */
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly insertTransition: Database.Statement;
  private readonly begin: { write: Database.Statement; read: Database.Statement };
  /** Where the connection is free: each operation chains onto the one before. */
  private tail: Promise<unknown> = Promise.resolve();
  private readonly wakePath: string;
  private wakeFd: number | null = null;
  private watcher: FSWatcher | null = null;
  private readonly wakeListeners = new Set<() => void>();
  /** Appends each transaction's records to segment files; null for an in-memory database. */
  private readonly journal: JournalWriter | null;
  /** Whether opening finished a restore's journal cut by starting the journal afresh. @internal */
  readonly journalRestartedOnOpen: boolean = false;
  /** How long a statement waits for another connection's write lock before failing. @internal */
  readonly busyTimeoutMs: number;

  /** Statements run on the connection directly: inside a transaction that holds it. */
  private readonly direct: Queryable = {
    get: async <T>(sql: string, params: readonly unknown[] = []) =>
      this.stmt(sql).get(...params) as T | undefined,
    all: async <T>(sql: string, params: readonly unknown[] = []) =>
      this.stmt(sql).all(...params) as T[],
    run: async (sql: string, params: readonly unknown[] = []) =>
      this.stmt(sql).run(...params).changes,
  };

  /** @internal */
  readonly q: Queryable = {
    get: <T>(sql: string, params?: readonly unknown[]) =>
      this.serial(() => this.direct.get<T>(sql, params)),
    all: <T>(sql: string, params?: readonly unknown[]) =>
      this.serial(() => this.direct.all<T>(sql, params)),
    run: (sql: string, params?: readonly unknown[]) =>
      this.serial(() => this.direct.run(sql, params)),
  };

  constructor(
    readonly path: string,
    options: SqliteStoreOptions,
  ) {
    super(options.clock);
    this.url = `sqlite:${path}`;
    mkdirSync(dirname(path), { recursive: true });
    this.busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    this.db = new Database(path, { timeout: this.busyTimeoutMs });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma(`synchronous = ${options.synchronous ?? "FULL"}`);
    this.db.pragma("foreign_keys = ON");
    this.migrate();
    this.insertTransition = this.db.prepare(
      `INSERT INTO transitions (${TRANSITION_COLUMNS}) VALUES (${"?, ".repeat(12)}?)`,
    );
    this.begin = {
      write: this.db.prepare("BEGIN IMMEDIATE"),
      read: this.db.prepare("BEGIN DEFERRED"),
    };
    this.wakePath = `${path}-wake`;
    this.journal =
      path === ":memory:"
        ? null
        : new JournalWriter(journalDirFor(path), options.journalSegmentBytes);
    if (this.journal) {
      this.journalRestartedOnOpen = this.completeJournalCut();
      this.repairJournalTail(this.journal);
      if (!this.readJournalPosition()) this.startJournal(this.journal);
    }
  }

  private migrate(): void {
    // The version is read under the write lock: processes opening a new store at once would
    // otherwise all see version 0 and apply the same migrations twice.
    this.db
      .transaction(() => {
        const version = this.db.pragma("user_version", { simple: true }) as number;
        if (version > SQLITE_MIGRATIONS.length) {
          throw new MendError(
            "store_incompatible",
            `store ${this.path} has schema version ${version}, newer than this Mend understands (${SQLITE_MIGRATIONS.length}); upgrade Mend or point --store at another file`,
            { path: this.path, version, supported: SQLITE_MIGRATIONS.length },
          );
        }
        for (let v = version; v < SQLITE_MIGRATIONS.length; v++) {
          this.db.exec(SQLITE_MIGRATIONS[v]!);
        }
        this.db.pragma(`user_version = ${SQLITE_MIGRATIONS.length}`);
      })
      .immediate();
  }

  /** @internal */
  stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /**
   * Runs `fn` with the connection to itself: once every operation queued before it has finished,
   * and before any queued after it starts. @internal
   */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------- transactions

  protected transaction<T>(
    mode: "write" | "shared" | "read",
    fn: (q: Queryable, opened: Row[]) => Promise<T>,
    opening?: string,
  ): Promise<T> {
    return this.serial(async () => {
      // One writer at a time whatever the mode: SQLite has no other kind.
      this.begin[mode === "read" ? "read" : "write"].run();
      try {
        const opened = opening === undefined ? [] : await this.direct.all(opening);
        const result = await fn(this.direct, opened);
        this.db.exec("COMMIT");
        return result;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        throw err;
      }
    });
  }

  /** @internal */
  async lockChainHead(q: Queryable): Promise<ChainHead> {
    // The write transaction holds the file's write lock: the last record is the head.
    const last = await q.get<ChainHead>(
      "SELECT seq, hash FROM transitions ORDER BY seq DESC LIMIT 1",
    );
    return last ?? { seq: 0, hash: GENESIS_HASH };
  }

  /** @internal */
  async appendRecords(_q: Queryable, records: JournalTransition[]): Promise<void> {
    for (const r of records) this.insertTransition.run(transitionRow(r));
  }

  /** The seqs the claims' records will get: a token is the seq of the record that granted it. */
  /** @internal */
  async leaseTokens(tx: Tx, n: number): Promise<number[]> {
    const first = await tx.nextSeq();
    return Array.from({ length: n }, (_, i) => first + i);
  }

  /**
   * Writes the transaction's records and interventions to the journal, before it commits, and
   * starts making them durable beside the commit ({@link SqliteStore.afterTransaction} waits for
   * both); records where the committed journal now ends, in the same transaction.
   */
  protected override async beforeCommit(tx: Tx): Promise<void> {
    if (!this.journal || tx.records.length + tx.interventions.length === 0) return;
    const pos = this.readJournalPosition();
    if (!pos) {
      throw new MendError("refused", this.missingHistory(this.journal), { path: this.path });
    }
    const lines = [
      ...tx.records.map(encodeTransition),
      ...tx.interventions.map(encodeIntervention),
    ];
    const next = this.journal.append(
      pos,
      endTransaction(lines),
      pos.lastSeq + 1,
      tx.records.at(-1)?.seq ?? pos.lastSeq,
      "overlapped",
    );
    this.saveJournalPosition(next);
  }

  protected override afterTransaction(tx: Tx | null): void {
    // Committed: acknowledged only once the journal's lines are durable too.
    this.journal?.finishSync(tx === null);
    if (tx?.wakeRequested) this.signalWake();
  }

  protected async backupBeforeRollback(workstreamId: string): Promise<void> {
    if (this.path === ":memory:") return;
    await this.backup({ reason: `before rollback of ${workstreamId}` });
  }

  // ---------------------------------------------------------------- journal

  private missingHistory(journal: JournalWriter): string {
    return `the journal ${journal.dir} holds transitions this database (${this.path}) does not: it looks new or replaced; rebuild it with \`mend state restore --from-transitions\` (writing is refused until then), or move the journal away to start afresh`;
  }

  /**
   * Why this database cannot be trusted as it is, for people: a journal holding history it lacks
   * (the database file was deleted or replaced by a new one). Null when there is nothing to say.
   * @internal
   */
  journalWarning(): string | null {
    if (!this.journal || this.readJournalPosition()) return null;
    if (listSegments(this.journal.dir).length === 0) return null;
    return this.missingHistory(this.journal);
  }

  private readJournalPosition(): JournalPosition | null {
    return (this.stmt(SELECT_JOURNAL_POSITION).get() as JournalPosition | undefined) ?? null;
  }

  private saveJournalPosition(pos: JournalPosition): void {
    this.stmt(SAVE_JOURNAL_POSITION).run(pos.segment, pos.offset, pos.lastSeq);
  }

  /**
   * Writes the log's records after `afterSeq` (and `interventions`) to the journal at `at`, as one
   * transaction made durable at once, and records the new end.
   */
  private journalFromLog(
    journal: JournalWriter,
    at: JournalPosition,
    afterSeq: number,
    interventions: Row[] = [],
  ): void {
    const rows = this.stmt("SELECT * FROM transitions WHERE seq > ? ORDER BY seq").all(
      afterSeq,
    ) as Row[];
    if (rows.length + interventions.length === 0) return this.saveJournalPosition(at);
    const lines = [
      ...interventions.map((r) => encodeIntervention(rowToIntervention(r))),
      ...rows.map((r) => encodeTransition(rowToRawTransition(r))),
    ];
    const lastSeq = (rows.at(-1)?.seq as number | undefined) ?? afterSeq;
    this.saveJournalPosition(journal.append(at, endTransaction(lines), afterSeq + 1, lastSeq));
  }

  /**
   * After the machine crashed, the journal may lack the last transactions the database committed
   * (a transaction is acknowledged once both are synced, but the two syncs run side by side, and
   * the database's may finish first): they are written again from the log, at the end of what the
   * disk kept. Interventions lost with them are not (they are in the database, not in the chain).
   */
  private repairJournalTail(journal: JournalWriter): void {
    const pos = this.readJournalPosition();
    if (!pos || pos.offset === 0 || journalIntactAt(journal.dir, pos)) return;
    this.db
      .transaction(() => {
        const now = this.readJournalPosition();
        if (!now || journalIntactAt(journal.dir, now)) return;
        const kept = lastIntactEnd(journal.dir, now);
        this.journalFromLog(journal, kept, kept.lastSeq);
      })
      .immediate();
  }

  /**
   * Starts the journal of a store that has none yet (new, or made by a version without it) with
   * everything already in its log. Where journal files exist without a position, they are history
   * this database lacks: left alone, and writing is refused until the database is restored.
   */
  private startJournal(journal: JournalWriter): void {
    this.db
      .transaction(() => {
        if (this.readJournalPosition() || listSegments(journal.dir).length > 0) return;
        const interventions = this.stmt(
          "SELECT * FROM interventions ORDER BY at, id",
        ).all() as Row[];
        this.journalFromLog(
          journal,
          { segment: segmentName(1), offset: 0, lastSeq: 0 },
          0,
          interventions,
        );
      })
      .immediate();
  }

  /**
   * Carries out the journal cut a restore recorded (see `writeCutMarker`), if its restore
   * committed: the journal's records after the restored position are moved aside, or, when the
   * journal does not reach that position (the backup predates the journal, or the journal was
   * damaged), all of it is set aside and it starts afresh from the restored log. A cut whose
   * restore never committed is dropped. Returns whether the journal started afresh. @internal
   */
  completeJournalCut(): boolean {
    if (!this.journal) return false;
    const dir = this.journal.dir;
    const cut = readCutMarker(dir);
    if (!cut) return false;
    const pos = this.readJournalPosition();
    let restarted = false;
    if (samePosition(pos, cut.position)) {
      if (pos && journalReaches(dir, pos)) {
        discardJournalAfter(dir, pos, cut.archive);
      } else {
        this.journal.close();
        setJournalAside(dir, cut.archive);
        this.db.prepare("DELETE FROM journal_position").run();
        this.startJournal(this.journal);
        restarted = true;
      }
    }
    removeCutMarker(dir);
    return restarted;
  }

  // ---------------------------------------------------------------- cross-process wake-ups

  onWake(fn: () => void): () => void {
    if (!this.watcher) {
      this.ensureWakeFile();
      this.watcher = watch(this.wakePath, { persistent: false }, () => {
        for (const l of this.wakeListeners) l();
      });
    }
    this.wakeListeners.add(fn);
    return () => {
      this.wakeListeners.delete(fn);
    };
  }

  private ensureWakeFile(): number {
    if (this.wakeFd === null) this.wakeFd = openSync(this.wakePath, "a+");
    return this.wakeFd;
  }

  /** Touches the wake file so idle workers in other processes look for work at once. */
  private signalWake(): void {
    writeSync(this.ensureWakeFile(), WAKE_BYTE, 0, 1, 0);
  }

  async close(): Promise<void> {
    await this.serial(async () => undefined);
    this.journal?.close();
    this.watcher?.close();
    this.watcher = null;
    if (this.wakeFd !== null) closeSync(this.wakeFd);
    this.wakeFd = null;
    if (this.db.open) this.db.close();
  }

  // ---------------------------------------------------------------- backups and validation

  async backup(options: BackupOptions): Promise<BackupInfo> {
    return takeBackup(this, options);
  }

  async listBackups(): Promise<BackupInfo[]> {
    return listBackupsOf(this.path);
  }

  async integrityCheck(): Promise<string[]> {
    return this.serial(async () => integrityProblems(this.db));
  }
}

const WAKE_BYTE = Buffer.from("1");
