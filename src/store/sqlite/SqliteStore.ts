import { closeSync, type FSWatcher, mkdirSync, openSync, watch, writeSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { Clock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import type { Failure } from "../../model/failure.js";
import {
  dependencyRows,
  taskId as makeTaskId,
  newId,
  workstreamOf,
  WORKSTREAM_ID_PREFIX,
} from "../../model/ids.js";
import type {
  BreakerRecord,
  DegradationRecord,
  InterventionRecord,
  PatternRecord,
  TaskRecord,
  TransitionRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../../model/records.js";
import { formatDuration } from "../../model/duration.js";
import { failure } from "../../model/failure.js";
import type { FallbackOption, FallbackPlan, WorkstreamSpec } from "../../model/spec.js";
import { countsForBreaker, probeSlots } from "../../recovery/breaker.js";
import { chooseFallback, qualityFactor } from "../../recovery/fallback.js";
import { restartedDeadline } from "../../recovery/revive.js";
import {
  assertTransition,
  ENTITY_KINDS,
  type EntityKind,
  type TaskStatus,
  type WorkerStatus,
} from "../../model/states.js";
import { EVENTS, type EventName, severitiesFrom } from "../../observe/events.js";
import { COMPLETION_EVENTS, FAILED_ATTEMPT_EVENTS } from "../../observe/metrics.js";
import type { FailureDecision } from "../../recovery/retry.js";
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
import type { Checkpoint, CheckpointRef } from "../../state/checkpoints.js";
import type { CompensationPlan } from "../../recovery/compensate.js";
import type { RecoveryPlan } from "../../state/recovery-plan.js";
import { ChainVerifier, GENESIS_HASH, transitionHash } from "../chain.js";
import {
  applyTransition,
  emptySnapshot,
  LIVENESS,
  normalizeReplayed,
  type StateSnapshot,
  withoutLiveness,
} from "../replay.js";
import type {
  Actor,
  ClaimedTask,
  CompensateOptions,
  DependencyRemoval,
  ExchangeRequest,
  ExchangeResult,
  FailurePlanner,
  HeldLease,
  Outcome,
  RecoveryOptions,
  RepairOptions,
  RepairOutcome,
  RetryOverrides,
  Settlement,
  Store,
  SweptTask,
  TransitionQuery,
  WorkerInfo,
  DegradationView,
  Revival,
  RevivalOptions,
  WorkstreamCancellation,
  TaskOutcome,
} from "../store.js";
import { integrityProblems, takeBackup } from "./backup.js";
import { readCheckpoints } from "./checkpoints.js";
import {
  type ColumnKind,
  ENTITY_TABLES,
  encodeField,
  INSERT_INTERVENTION,
  interventionRow,
  SAVE_JOURNAL_POSITION,
  SELECT_JOURNAL_POSITION,
  TRANSITION_COLUMNS,
  transitionRow,
  rowToEntity,
  rowToIntervention,
  rowToRawTransition,
  rowToTask,
  rowToTransition,
  rowToWorker,
  rowToWorkstream,
} from "./codec.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";
import { repairState } from "./repair.js";
import {
  anyDueForProbe,
  type BreakerAction,
  controlBreaker,
  ensureBreakers,
  listBreakerRows,
  openDueProbes,
  halfOpenBreakers,
  recordBreakerOutcome,
  runningProbes,
  tripBreaker,
} from "./breakers.js";
import { escalateStale, escalationOf } from "./escalation.js";
import { reviveTasks } from "./revival.js";
import {
  judgePattern,
  listPatterns,
  readDegradation,
  recordPatterns,
  setDegradation,
} from "./signals.js";
import { compensateWorkstream, onWorkstreamEnded } from "./compensation.js";
import {
  cancelWorkstream,
  closeWorkstream,
  removeDependency,
  resumeWorkstream,
  retryWorkstream,
  rollbackWorkstream,
} from "./workstream-ops.js";

type Row = Record<string, unknown>;

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

/** What one transition changes, and the event it produces. */
export interface Change {
  kind: EntityKind;
  id: string;
  from: string | null;
  to: string;
  patch: Record<string, unknown>;
  event: EventName;
  actor: string;
  workstreamId: string | null;
  detail?: Record<string, unknown> | null;
}

/** A transition ready to write: its row's values and its record's data, computed ahead. */
interface PreparedChange {
  change: Change;
  shape: WriteShape;
  values: unknown[];
  dataJson: string;
  at: number;
}

/** A prepared write for one entity and field list, with how each field is encoded. */
interface WriteShape {
  stmt: Database.Statement;
  kinds: ColumnKind[];
  /** Fields left out of the log (heartbeat-maintained). */
  liveness: boolean[];
}

/** Terminal statuses that let dependents run. Non-critical failures count, with a warning. */
const SATISFIED_SQL = `(t.status IN ('completed','skipped') OR (t.status = 'failed' AND t.critical = 0))`;

/**
 * The embedded store: one SQLite file in WAL mode, shared safely by several processes on one
 * machine. Every state change goes through {@link SqliteStore.transition}, which updates the row
 * and appends one hash-chained record to `transitions` in the same transaction.
 *
 * Members marked `@internal` are for the operation modules beside this file (`sqlite/*.ts`), which
 * implement groups of Store methods on top of the write path; they are not part of {@link Store}.
 */
export class SqliteStore implements Store {
  readonly url: string;
  /** @internal */
  readonly db: Database.Database;
  /** @internal */
  readonly clock: Clock;
  private readonly statements = new Map<string, Database.Statement>();
  /** Write statements by entity and fields, so the hot path builds no SQL text. */
  private readonly shapes = new Map<string, WriteShape>();
  private readonly insertTransition: Database.Statement;
  private readonly wakePath: string;
  private wakeFd: number | null = null;
  private watcher: FSWatcher | null = null;
  private readonly wakeListeners = new Set<() => void>();
  /** Chain cursor of the open write transaction; read from the log at its first append. */
  private cursor: { seq: number; hash: string } | null = null;
  private wakePending = false;
  /** Appends each transaction's records to segment files; null for an in-memory database. */
  private readonly journal: JournalWriter | null;
  /** Records and interventions of the open write transaction, for the journal. */
  private journalPending: string[] = [];
  /** Whether opening finished a restore's journal cut by starting the journal afresh. @internal */
  readonly journalRestartedOnOpen: boolean = false;

  constructor(
    readonly path: string,
    options: SqliteStoreOptions,
  ) {
    this.url = `sqlite:${path}`;
    this.clock = options.clock;
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: options.busyTimeoutMs ?? 10_000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma(`synchronous = ${options.synchronous ?? "FULL"}`);
    this.db.pragma("foreign_keys = ON");
    this.migrate();
    this.insertTransition = this.db.prepare(
      `INSERT INTO transitions (${TRANSITION_COLUMNS}) VALUES (${"?, ".repeat(12)}?)`,
    );
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

  /** Asks waiting workers to look for work once the current write transaction ends. @internal */
  wake(): void {
    this.wakePending = true;
  }

  /** Runs `fn` in one write transaction (taking the write lock at once). @internal */
  write<T>(fn: () => T): T {
    let result: T;
    try {
      result = this.db
        .transaction(() => {
          const r = fn();
          this.flushJournal();
          return r;
        })
        .immediate();
    } catch (err) {
      this.journal?.finishSync(true);
      throw err;
    } finally {
      this.cursor = null;
      this.journalPending = [];
      if (this.wakePending) {
        this.wakePending = false;
        this.signalWake();
      }
    }
    // Committed: acknowledged only once the journal's lines are durable too.
    this.journal?.finishSync();
    return result;
  }

  // ---------------------------------------------------------------- the write path

  /** Appends one record to the hash-chained log; returns its seq. */
  private append(c: Change, dataJson: string, at: number): number {
    const prev = this.chainCursor();
    const seq = prev.seq + 1;
    const detailJson = c.detail ? JSON.stringify(c.detail) : null;
    const severity = EVENTS[c.event];
    const record: JournalTransition = {
      seq,
      at,
      entity: c.kind,
      entityId: c.id,
      workstreamId: c.workstreamId,
      from: c.from,
      to: c.to,
      event: c.event,
      severity,
      actor: c.actor,
      dataJson,
      detailJson,
      hash: "",
    };
    const hash = transitionHash(prev.hash, record);
    record.hash = hash;
    if (this.journal) this.journalPending.push(encodeTransition(record));
    this.insertTransition.run(transitionRow(record));
    this.cursor = { seq, hash };
    return seq;
  }

  /** The seq the next appended record will get (used as a lease's fencing token). */
  private nextSeq(): number {
    return this.chainCursor().seq + 1;
  }

  /** The last record's seq and hash, read once per write transaction. */
  private chainCursor(): { seq: number; hash: string } {
    if (!this.cursor) {
      const last = this.stmt(
        "SELECT seq, hash FROM transitions ORDER BY seq DESC LIMIT 1",
      ).get() as { seq: number; hash: string } | undefined;
      this.cursor = last ?? { seq: 0, hash: GENESIS_HASH };
    }
    return this.cursor;
  }

  /**
   * The one write path (DESIGN.md invariant 1): checks the transition against the state machine,
   * writes the new state guarded by the expected current state, and appends its record. Zero rows
   * changed is a typed refusal, never silence.
   *
   * @internal
   */
  transition(c: Change): number {
    return this.apply(this.prepare(c));
  }

  /**
   * Everything about a transition that needs no database: the state machine's check, the row's
   * column values and the record's data. Submissions prepare their records before taking the
   * write lock, so the lock is held for the writes alone.
   */
  private prepare(c: Change): PreparedChange {
    assertTransition(c.kind, c.id, c.from, c.to);
    const at = this.clock.now();
    const patch: Record<string, unknown> = { ...c.patch, status: c.to };
    if (c.kind !== "worker") patch.updatedAt = at;
    const fields = Object.keys(patch);
    const shape = this.shape(c.kind, c.from === null, fields);
    const values = new Array<unknown>(fields.length);
    // The record's data is the patch as JSON, built from the encoded columns so each JSON
    // value (inputs can be large) is serialized once.
    let dataJson = "{";
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i]!;
      const kind = shape.kinds[i]!;
      const encoded = encodeField(kind, patch[field]);
      values[i] = encoded;
      if (shape.liveness[i]) continue;
      const json =
        encoded === null
          ? "null"
          : kind === "json"
            ? (encoded as string)
            : JSON.stringify(patch[field]);
      dataJson += `${dataJson.length > 1 ? "," : ""}"${field}":${json}`;
    }
    dataJson += "}";
    if (c.from !== null) values.push(c.id, c.from);
    return { change: c, shape, values, dataJson, at };
  }

  /** Writes a prepared transition: the guarded row write and its record, in the open transaction. */
  private apply(p: PreparedChange): number {
    const c = p.change;
    if (p.shape.stmt.run(p.values).changes !== 1 && c.from !== null) {
      throw new MendError("refused", `${c.kind} ${c.id} is no longer ${c.from}`, {
        kind: c.kind,
        id: c.id,
        expected: c.from,
      });
    }
    return this.append(c, p.dataJson, p.at);
  }

  /** The prepared INSERT or guarded UPDATE for an entity and a set of fields, built once. */
  private shape(kind: EntityKind, insert: boolean, fields: string[]): WriteShape {
    const signature = `${insert ? "i" : "u"}:${kind}:${fields.join(",")}`;
    let shape = this.shapes.get(signature);
    if (!shape) {
      const { table, columns } = ENTITY_TABLES[kind];
      const cols = fields.map((f) => {
        const col = columns[f];
        if (!col) throw new MendError("internal", `${kind} has no field ${f}`, { kind, field: f });
        return col;
      });
      const sql = insert
        ? `INSERT INTO ${table} (${cols.map((c) => c[0]).join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`
        : `UPDATE ${table} SET ${cols.map((c) => `${c[0]} = ?`).join(", ")} WHERE id = ? AND status = ?`;
      const live: readonly string[] = LIVENESS[kind];
      shape = {
        stmt: this.db.prepare(sql),
        kinds: cols.map((c) => c[1]),
        liveness: fields.map((f) => live.includes(f)),
      };
      this.shapes.set(signature, shape);
    }
    return shape;
  }

  /** @internal */
  intervention(who: Actor, target: string, before: unknown, after: unknown): void {
    const at = this.clock.now();
    const record: InterventionRecord = {
      id: newId("iv", at),
      at,
      actor: who.actor,
      command: who.command,
      target,
      reason: who.reason ?? null,
      before: before ?? null,
      after: after ?? null,
    };
    this.insertIntervention(record);
    if (this.journal) this.journalPending.push(encodeIntervention(record));
  }

  private insertIntervention(i: InterventionRecord): void {
    this.stmt(INSERT_INTERVENTION).run(interventionRow(i));
  }

  // ---------------------------------------------------------------- journal

  /**
   * Writes the open transaction's records to the journal, before it commits, and starts making
   * them durable beside the commit ({@link SqliteStore.write} waits for both); records where the
   * committed journal now ends, in the same transaction. The journal's last seq is the log's, so
   * the transaction's first record is the one after it.
   */
  private flushJournal(): void {
    if (!this.journal || this.journalPending.length === 0) return;
    const pos = this.readJournalPosition();
    if (!pos)
      throw new MendError("refused", this.missingHistory(this.journal), { path: this.path });
    const next = this.journal.append(
      pos,
      endTransaction(this.journalPending),
      pos.lastSeq + 1,
      this.cursor?.seq ?? pos.lastSeq,
      "overlapped",
    );
    this.saveJournalPosition(next);
  }

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

  // ---------------------------------------------------------------- submit

  async submit(
    spec: WorkstreamSpec,
    actor = "engine",
  ): Promise<{ workstreamId: string; taskIds: string[] }> {
    const created = creationOf(spec, this.clock.now(), actor, SUBMITTED);
    const records = created.changes.map((c) => this.prepare(c));
    this.write(() => this.insertCreated(spec, created, records, actor));
    return { workstreamId: created.workstreamId, taskIds: created.taskIds };
  }

  /**
   * Creates a workstream inside the open write transaction, as part of another change (a
   * compensation scheduled as a workstream fails); returns its id. @internal
   */
  createWorkstream(spec: WorkstreamSpec, actor: string, origin: WorkstreamOrigin): string {
    const created = creationOf(spec, this.clock.now(), actor, origin);
    const records = created.changes.map((c) => this.prepare(c));
    this.insertCreated(spec, created, records, actor);
    return created.workstreamId;
  }

  private insertCreated(
    spec: WorkstreamSpec,
    created: Creation,
    records: PreparedChange[],
    actor: string,
  ): void {
    ensureBreakers(this, spec.breakers, actor);
    for (const r of records) this.apply(r);
    const depInsert = this.stmt("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)");
    for (const [task, dep] of created.deps) depInsert.run(task, dep);
    this.wakePending = true;
  }

  // ---------------------------------------------------------------- worker round trip

  async exchange(req: ExchangeRequest): Promise<ExchangeResult> {
    return this.write(() => {
      const touched = new Set<string>();
      const settled = req.outcomes.map((o) => this.settle(o, req, touched));
      for (const ws of touched) this.reconcileWorkstream(ws, `worker:${req.workerId}`);
      const claimed = req.claim > 0 ? this.claim(req) : [];
      const { level, name, quality, capabilities } = readDegradation(this);
      return { settled, claimed, degradation: { level, name, quality, capabilities } };
    });
  }

  private settle(o: Outcome, req: ExchangeRequest, touched: Set<string>): Settlement {
    // Only what fencing and the hot path need; the whole row is read for failures alone.
    const held = this.stmt(
      "SELECT id, workstream_id AS workstreamId, status, lease_token AS leaseToken, lease_worker AS leaseWorker, attempts, breaker, handler, quality_threshold AS qualityThreshold, fallbacks, revivals FROM tasks WHERE id = ?",
    ).get(o.taskId) as
      | (Pick<
          TaskRecord,
          | "id"
          | "workstreamId"
          | "status"
          | "leaseToken"
          | "leaseWorker"
          | "attempts"
          | "breaker"
          | "handler"
          | "qualityThreshold"
          | "revivals"
        > & { fallbacks: string | null })
      | undefined;
    // Token and holder both: a restore rewinds seqs, so a token alone could be granted again to
    // another worker while a stale one still holds it.
    if (
      held?.status !== "running" ||
      held.leaseToken !== o.token ||
      held.leaseWorker !== req.workerId
    ) {
      return {
        taskId: o.taskId,
        applied: false,
        reason: held
          ? `lease ${o.token} is no longer held: task is ${held.status}${held.leaseToken ? ` under lease ${held.leaseToken}` : ""}`
          : "task not found",
      };
    }
    const row = held;
    const actor = `worker:${req.workerId}`;
    const plan = row.fallbacks === null ? null : (JSON.parse(row.fallbacks) as FallbackPlan);
    let outcome = o;
    if (o.kind === "complete" && o.quality !== undefined) {
      const quality = o.quality * qualityFactor(plan, row.handler);
      if (row.qualityThreshold !== null && quality < row.qualityThreshold) {
        outcome = {
          kind: "fail",
          taskId: o.taskId,
          token: o.token,
          failure: failure(
            "quality",
            true,
            `result quality ${quality.toFixed(2)} is below the task's threshold ${row.qualityThreshold}`,
            { quality },
          ),
        };
      } else {
        outcome = { ...o, quality };
      }
    }
    if (outcome.kind === "complete") {
      if (row.breaker !== null) recordBreakerOutcome(this, row.breaker, true, actor, row.id);
      // Failed attempts in this run, or an earlier run it was revived or switched from.
      const recovered = row.attempts > 1 || row.revivals > 0 || (plan?.tried.length ?? 0) > 0;
      this.transition({
        kind: "task",
        id: row.id,
        from: "running",
        to: "completed",
        patch: {
          output: outcome.output ?? null,
          ...(outcome.quality === undefined ? {} : { quality: outcome.quality }),
          ...RELEASED_LEASE,
          workerLostStreak: 0,
        },
        event: recovered ? "task_recovered" : "task_completed",
        actor,
        workstreamId: row.workstreamId,
        // The handler is in the record's row; the log says it too when a fallback produced it.
        detail: plan?.tried.length
          ? { attempt: row.attempts, handler: row.handler }
          : { attempt: row.attempts },
      });
      this.promoteDependents(row.id, actor);
      touched.add(row.workstreamId);
      return { taskId: row.id, applied: true, status: "completed" };
    }
    if (outcome.kind === "release") {
      this.transition({
        kind: "task",
        id: row.id,
        from: "running",
        to: "queued",
        patch: { attempts: row.attempts - 1, runAt: this.clock.now(), ...RELEASED_LEASE },
        event: "task_released",
        actor,
        workstreamId: row.workstreamId,
        detail: { reason: outcome.reason },
      });
      this.wakePending = true;
      return { taskId: row.id, applied: true, status: "queued" };
    }
    const decision = this.applyFailure(
      this.requireTask(row.id),
      outcome.failure,
      req.planner,
      actor,
    );
    touched.add(row.workstreamId);
    return {
      taskId: row.id,
      applied: true,
      status: decision.action === "retry" || decision.action === "fallback" ? "queued" : "failed",
      decision,
    };
  }

  /** Records a running task's failure and what the planner decided about it. @internal */
  applyFailure(
    row: TaskRecord,
    failure: Failure,
    planner: FailurePlanner,
    actor: string,
  ): FailureDecision {
    const now = this.clock.now();
    if (row.breaker !== null && countsForBreaker(failure)) {
      recordBreakerOutcome(this, row.breaker, false, actor, row.id);
    }
    const planned = planner(row, failure, now);
    const fallback = planned.action === "fail" ? this.fallbackFor(row, failure, now) : null;
    const decision: FailureDecision = fallback
      ? {
          action: "fallback",
          handler: fallback.handler,
          runAt: now,
          reason: `${planned.reason}; switching from ${row.handler} to fallback ${fallback.handler}`,
        }
      : planned;
    const streak = failure.category === "worker_lost" ? row.workerLostStreak + 1 : 0;
    const detail = { attempt: row.attempts, failure, decision, worker: row.leaseWorker };
    if (fallback) {
      this.transition({
        kind: "task",
        id: row.id,
        from: "running",
        to: "queued",
        patch: {
          handler: fallback.handler,
          // The fallback's own breaker, if any: the primary's may be open for its outage.
          breaker: fallback.breaker ?? null,
          fallbacks: { ...row.fallbacks!, tried: [...row.fallbacks!.tried, row.handler] },
          attempts: 0,
          runAt: now,
          lastDelayMs: null,
          lastError: failure,
          workerLostStreak: streak,
          ...RELEASED_LEASE,
        },
        event: "task_fallback",
        actor,
        workstreamId: row.workstreamId,
        detail: { ...detail, from: row.handler, to: fallback.handler },
      });
      this.wakePending = true;
      return decision;
    }
    if (decision.action === "retry") {
      this.transition({
        kind: "task",
        id: row.id,
        from: "running",
        to: "queued",
        patch: {
          runAt: decision.runAt,
          lastDelayMs: decision.delayMs,
          lastError: failure,
          workerLostStreak: streak,
          ...RELEASED_LEASE,
        },
        event:
          failure.category === "worker_lost"
            ? "worker_lost"
            : failure.category === "timeout"
              ? "task_timeout"
              : "task_retry_scheduled",
        actor,
        workstreamId: row.workstreamId,
        detail,
      });
      this.wakePending = true;
      return decision;
    }
    this.failTask(row, "running", { lastError: failure, workerLostStreak: streak }, actor, {
      event: decision.action === "quarantine" ? "task_quarantined" : undefined,
      detail,
    });
    return decision;
  }

  /**
   * Records a task's permanent failure and what follows from it: a non-critical task lets its
   * dependents run; a critical one in a `stop` workstream cancels the work still waiting.
   */
  private failTask(
    row: TaskRecord,
    from: "running" | "queued",
    patch: Record<string, unknown>,
    actor: string,
    record: { event?: EventName; detail: Record<string, unknown> },
  ): void {
    const failed: TaskRecord = { ...row, ...patch, ...RELEASED_LEASE, status: "failed" };
    this.transition({
      kind: "task",
      id: row.id,
      from,
      to: "failed",
      patch: { ...patch, ...RELEASED_LEASE, escalation: escalationOf(this, failed) },
      event: record.event ?? (row.critical ? "task_failed" : "task_failed_noncritical"),
      actor,
      workstreamId: row.workstreamId,
      detail: record.detail,
    });
    if (!row.critical) {
      this.promoteDependents(row.id, actor);
    } else if (this.getWorkstreamRow(row.workstreamId)?.onFailure === "stop") {
      this.cancelOpenTasks(row.workstreamId, actor, stopReason(row.key));
    }
  }

  /**
   * Fails the queued tasks whose overall deadline passed while they waited (behind an open
   * breaker, a backoff, or busy workers): the deadline bounds everything inside it.
   */
  async expireDeadlines(): Promise<string[]> {
    const now = this.clock.now();
    const expired = this.stmt(
      "SELECT id FROM tasks WHERE status = 'queued' AND deadline_ms IS NOT NULL AND created_at + deadline_ms <= ? LIMIT 1000",
    ).all(now) as { id: string }[];
    if (expired.length === 0) return [];
    return this.write(() => {
      const touched = new Set<string>();
      const failed: string[] = [];
      for (const { id } of expired) {
        const row = this.getTaskRow(id);
        if (row?.status !== "queued") continue;
        const lastError = failure(
          "timeout",
          false,
          `overall deadline of ${formatDuration(row.deadlineMs!)} passed before the task could run again`,
        );
        this.failTask(row, "queued", { lastError }, "monitor", {
          detail: { failure: lastError, decision: { action: "fail", reason: "deadline passed" } },
        });
        touched.add(row.workstreamId);
        failed.push(id);
      }
      for (const ws of touched) this.reconcileWorkstream(ws, "monitor");
      return failed;
    });
  }

  /** The fallback handler a task that failed for good switches to, if it has one left. */
  private fallbackFor(row: TaskRecord, failure: Failure, now: number): FallbackOption | null {
    if (row.fallbacks === null) return null;
    return chooseFallback({
      plan: row.fallbacks,
      current: row.handler,
      failure,
      elapsedMs: now - row.createdAt,
      random: Math.random,
      load: (handler) =>
        (
          this.stmt("SELECT COUNT(*) AS n FROM tasks WHERE status = 'running' AND handler = ?").get(
            handler,
          ) as { n: number }
        ).n,
    });
  }

  /** Queues every pending dependent of `taskId` whose dependencies are now all satisfied. @internal */
  promoteDependents(taskId: string, actor: string): void {
    const candidates = this.stmt(
      `SELECT t.id, t.workstream_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.status = 'pending'`,
    ).all(taskId) as { id: string; workstream_id: string }[];
    for (const c of candidates) {
      if (!this.depsSatisfied(c.id)) continue;
      this.transition({
        kind: "task",
        id: c.id,
        from: "pending",
        to: "queued",
        patch: { runAt: this.clock.now() },
        event: "task_ready",
        actor,
        workstreamId: c.workstream_id,
      });
      this.wakePending = true;
    }
  }

  /** A reopened dependency no longer satisfies its dependents: queued ones wait again. @internal */
  holdDependents(taskId: string, actor: string): void {
    const queued = this.stmt(
      `SELECT t.id, t.workstream_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.status = 'queued'`,
    ).all(taskId) as { id: string; workstream_id: string }[];
    for (const t of queued) {
      this.transition({
        kind: "task",
        id: t.id,
        from: "queued",
        to: "pending",
        patch: {},
        event: "task_waiting",
        actor,
        workstreamId: t.workstream_id,
        detail: { reason: `dependency ${taskId} was reopened` },
      });
    }
  }

  /** @internal */
  cancelOpenTasks(workstreamId: string, actor: string, reason: string): void {
    const open = this.stmt(
      `SELECT id, status FROM tasks WHERE workstream_id = ? AND status IN ('pending','queued')`,
    ).all(workstreamId) as { id: string; status: string }[];
    for (const t of open) {
      this.transition({
        kind: "task",
        id: t.id,
        from: t.status,
        to: "cancelled",
        patch: {},
        event: "task_cancelled",
        actor,
        workstreamId,
        detail: { reason },
      });
    }
  }

  /**
   * Brings a workstream's status in line with its tasks: an active one with nothing queued or
   * running has settled (completed if every task is satisfied, else failed); a settled one that
   * has work again (an operator retried or skipped a task) is active again.
   *
   * @internal
   */
  reconcileWorkstream(workstreamId: string, actor: string): void {
    const ws = this.getWorkstreamRow(workstreamId);
    if (!ws) return;
    const live = this.stmt(
      `SELECT COUNT(*) AS n FROM (SELECT 1 FROM tasks WHERE workstream_id = ? AND status IN ('queued','running') LIMIT 1)`,
    ).get(workstreamId) as { n: number };
    if (live.n > 0) {
      if (ws.status !== "active") {
        this.transition({
          kind: "workstream",
          id: ws.id,
          from: ws.status,
          to: "active",
          patch: {},
          event: "workstream_reopened",
          actor,
          workstreamId: ws.id,
        });
      }
      return;
    }
    if (ws.status !== "active" && ws.status !== "failed") return;
    const unsatisfied = this.stmt(
      `SELECT COUNT(*) AS n FROM tasks t WHERE t.workstream_id = ? AND NOT ${SATISFIED_SQL}`,
    ).get(workstreamId) as { n: number };
    const to = unsatisfied.n === 0 ? "completed" : "failed";
    if (to === ws.status) return;
    this.transition({
      kind: "workstream",
      id: ws.id,
      from: ws.status,
      to,
      patch: {},
      event: to === "completed" ? "workstream_completed" : "workstream_failed",
      actor,
      workstreamId: ws.id,
      detail: to === "failed" ? { unsatisfiedTasks: unsatisfied.n } : null,
    });
    // In the same transaction: a failure its policy compensates, or a compensation that is done.
    onWorkstreamEnded(this, { ...ws, status: to }, actor);
  }

  private claim(req: ExchangeRequest): ClaimedTask[] {
    const now = this.clock.now();
    const actor = `worker:${req.workerId}`;
    openDueProbes(this, actor);
    const handlers = JSON.stringify(req.handlers);
    const rows = this.stmt(claimSql("closed")).all({
      now,
      handlers,
      limit: req.claim,
    }) as ClaimRow[];
    // Half-open breakers let a few probes through: at most their limit running at once.
    if (rows.length < req.claim) {
      for (const b of halfOpenBreakers(this)) {
        const want = req.claim - rows.length;
        if (want === 0) break;
        const slots = probeSlots(b.config, runningProbes(this, b));
        if (slots === 0) continue;
        rows.push(
          ...(this.stmt(claimSql("probe")).all({
            now,
            handlers,
            breaker: b.id,
            limit: Math.min(slots, want),
          }) as ClaimRow[]),
        );
      }
    }
    const claimed: ClaimedTask[] = [];
    for (const r of rows) {
      const leaseToken = this.nextSeq();
      const attempts = r.attempts + 1;
      this.transition({
        kind: "task",
        id: r.id,
        from: "queued",
        to: "running",
        patch: {
          attempts,
          leaseToken,
          leaseWorker: req.workerId,
          leaseExpiresAt: now + req.leaseMs,
        },
        event: "task_started",
        actor,
        workstreamId: r.workstreamId,
      });
      const { deadlineAt, ...task } = r;
      claimed.push({
        ...task,
        input: r.input === null ? null : JSON.parse(r.input),
        attempts,
        leaseToken,
        // The overall deadline bounds each attempt's own timeout.
        timeoutMs: deadlineAt === null ? r.timeoutMs : Math.min(r.timeoutMs, deadlineAt - now),
      });
    }
    return claimed;
  }

  // ---------------------------------------------------------------- liveness

  async heartbeat(
    workerId: string,
    status: WorkerStatus,
    leases: HeldLease[],
    leaseMs: number,
  ): Promise<{ lost: string[] }> {
    return this.write(() => {
      const now = this.clock.now();
      const current = this.workerStatus(workerId);
      if (!current) {
        throw new MendError("not_found", `worker ${workerId} is not registered`, { workerId });
      }
      this.stmt("UPDATE workers SET heartbeat_at = ? WHERE id = ?").run(now, workerId);
      if (current !== status) {
        this.transition({
          kind: "worker",
          id: workerId,
          from: current,
          to: status,
          patch: {},
          event: status === "busy" ? "worker_busy" : "worker_idle",
          actor: `worker:${workerId}`,
          workstreamId: null,
        });
      }
      const renew = this.stmt(
        "UPDATE tasks SET lease_expires_at = ? WHERE id = ? AND lease_token = ? AND lease_worker = ? AND status = 'running'",
      );
      const lost: string[] = [];
      for (const l of leases) {
        if (renew.run(now + leaseMs, l.taskId, l.token, workerId).changes !== 1)
          lost.push(l.taskId);
      }
      return { lost };
    });
  }

  async registerWorker(info: WorkerInfo): Promise<void> {
    this.write(() => {
      const now = this.clock.now();
      const existing = this.workerStatus(info.id);
      const patch = {
        host: info.host,
        pid: info.pid,
        concurrency: info.concurrency,
        handlers: info.handlers,
        startedAt: now,
        heartbeatAt: now,
      };
      this.transition({
        kind: "worker",
        id: info.id,
        from: existing,
        to: "idle",
        patch: existing ? patch : { id: info.id, ...patch },
        event: "worker_registered",
        actor: `worker:${info.id}`,
        workstreamId: null,
      });
    });
  }

  async stopWorker(workerId: string): Promise<void> {
    this.write(() => {
      const current = this.workerStatus(workerId);
      if (!current || current === "shutdown") return;
      this.transition({
        kind: "worker",
        id: workerId,
        from: current,
        to: "shutdown",
        patch: {},
        event: "worker_shutdown",
        actor: `worker:${workerId}`,
        workstreamId: null,
        detail: { reason: "graceful shutdown" },
      });
    });
  }

  async sweepExpiredLeases(planner: FailurePlanner): Promise<SweptTask[]> {
    const now = this.clock.now();
    const expired = this.stmt(
      "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ? LIMIT 1000",
    ).all(now) as { id: string }[];
    if (expired.length === 0) return [];
    return this.write(() => {
      const swept: SweptTask[] = [];
      const touched = new Set<string>();
      for (const { id } of expired) {
        const row = this.getTaskRow(id);
        // Re-checked under the write lock: a heartbeat may have renewed it meanwhile.
        if (row?.status !== "running" || (row.leaseExpiresAt ?? 0) >= now) continue;
        const failure: Failure = {
          category: "worker_lost",
          recoverable: true,
          message: `lease expired: worker ${row.leaseWorker ?? "?"} stopped heartbeating`,
        };
        const decision = this.applyFailure(row, failure, planner, "monitor");
        touched.add(row.workstreamId);
        swept.push({ taskId: id, workerId: row.leaseWorker, decision });
      }
      for (const ws of touched) this.reconcileWorkstream(ws, "monitor");
      return swept;
    });
  }

  async markSilentWorkers(unresponsiveMs: number, shutdownMs: number): Promise<WorkerRecord[]> {
    const now = this.clock.now();
    const silent = () =>
      this.stmt(
        `SELECT * FROM workers WHERE (status IN ('idle','busy') AND heartbeat_at < ?) OR (status = 'unresponsive' AND heartbeat_at < ?)`,
      ).all(now - unresponsiveMs, now - shutdownMs) as Row[];
    // Read first: the common case changes nothing and needs no write lock.
    if (silent().length === 0) return [];
    return this.write(() => {
      const changed: WorkerRecord[] = [];
      for (const r of silent()) {
        const w = rowToWorker(r);
        const to = w.status === "unresponsive" ? "shutdown" : "unresponsive";
        this.transition({
          kind: "worker",
          id: w.id,
          from: w.status,
          to,
          patch: {},
          event: to === "shutdown" ? "worker_presumed_dead" : "worker_unresponsive",
          actor: "monitor",
          workstreamId: null,
          detail: { silentForMs: now - w.heartbeatAt },
        });
        changed.push({ ...w, status: to });
      }
      return changed;
    });
  }

  async acquireLeadership(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.write(() => {
      const now = this.clock.now();
      const row = this.stmt("SELECT holder, expires_at FROM leaders WHERE name = ?").get(name) as
        { holder: string; expires_at: number } | undefined;
      if (row && row.holder !== holder && row.expires_at >= now) return false;
      this.stmt(
        "INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
      ).run(name, holder, now + ttlMs);
      return true;
    });
  }

  async releaseLeadership(name: string, holder: string): Promise<void> {
    this.stmt("DELETE FROM leaders WHERE name = ? AND holder = ?").run(name, holder);
  }

  // ---------------------------------------------------------------- operator actions

  async retryTask(taskId: string, overrides: RetryOverrides, who: Actor): Promise<TaskRecord> {
    return this.write(() => {
      const row = this.requireTask(taskId);
      if (!["failed", "cancelled", "skipped"].includes(row.status)) {
        throw new MendError(
          "refused",
          `task ${taskId} is ${row.status}; only failed, cancelled or skipped tasks can be retried`,
          { taskId, status: row.status },
        );
      }
      const ready = this.depsSatisfied(row.id);
      const patch = {
        retry: {
          ...row.retry,
          maxAttempts: row.attempts + (overrides.maxAttempts ?? row.retry.maxAttempts),
        },
        timeoutMs: overrides.timeoutMs ?? row.timeoutMs,
        workerLostStreak: 0,
        runAt: this.clock.now(),
        deadlineMs: restartedDeadline(row, this.clock.now()),
        escalation: null,
      };
      this.transition({
        kind: "task",
        id: row.id,
        from: row.status,
        to: ready ? "queued" : "pending",
        patch,
        event: "task_retried",
        actor: who.actor,
        workstreamId: row.workstreamId,
        detail: { reason: who.reason ?? null, overrides },
      });
      if (row.status === "skipped" || (row.status === "failed" && !row.critical)) {
        this.holdDependents(row.id, who.actor);
      }
      const after = this.requireTask(taskId);
      this.intervention(who, taskId, pickState(row), pickState(after));
      this.reconcileWorkstream(row.workstreamId, who.actor);
      this.wakePending = true;
      return after;
    });
  }

  async skipTask(taskId: string, who: Actor): Promise<TaskRecord> {
    return this.write(() => {
      const row = this.requireTask(taskId);
      if (!["pending", "queued", "failed", "cancelled"].includes(row.status)) {
        throw new MendError(
          "refused",
          `task ${taskId} is ${row.status}; ${row.status === "running" ? "cancel it first" : "it cannot be skipped"}`,
          { taskId, status: row.status },
        );
      }
      this.transition({
        kind: "task",
        id: row.id,
        from: row.status,
        to: "skipped",
        patch: {},
        event: "task_skipped",
        actor: who.actor,
        workstreamId: row.workstreamId,
        detail: { reason: who.reason ?? null, warning: "dependents proceed without its result" },
      });
      this.promoteDependents(row.id, who.actor);
      const after = this.requireTask(taskId);
      this.intervention(who, taskId, pickState(row), pickState(after));
      this.reconcileWorkstream(row.workstreamId, who.actor);
      this.wakePending = true;
      return after;
    });
  }

  async cancelTask(taskId: string, who: Actor): Promise<TaskRecord> {
    return this.write(() => {
      const row = this.requireTask(taskId);
      if (!["pending", "queued", "running"].includes(row.status)) {
        throw new MendError("refused", `task ${taskId} is ${row.status}; it cannot be cancelled`, {
          taskId,
          status: row.status,
        });
      }
      this.transition({
        kind: "task",
        id: row.id,
        from: row.status,
        to: "cancelled",
        patch: row.status === "running" ? { ...RELEASED_LEASE } : {},
        event: "task_cancelled",
        actor: who.actor,
        workstreamId: row.workstreamId,
        detail: { reason: who.reason ?? null, worker: row.leaseWorker },
      });
      const after = this.requireTask(taskId);
      this.intervention(who, taskId, pickState(row), pickState(after));
      this.reconcileWorkstream(row.workstreamId, who.actor);
      return after;
    });
  }

  // ---------------------------------------------------------------- reads

  /** @internal */
  getTaskRow(id: string): TaskRecord | null {
    const row = this.stmt("SELECT * FROM tasks WHERE id = ?").get(id) as Row | undefined;
    return row ? rowToTask(row) : null;
  }

  /** @internal */
  requireTask(id: string): TaskRecord {
    const t = this.getTaskRow(id);
    if (!t) throw new MendError("not_found", `task ${id} not found`, { taskId: id });
    return t;
  }

  /** @internal */
  getWorkstreamRow(id: string): WorkstreamRecord | null {
    const row = this.stmt("SELECT * FROM workstreams WHERE id = ?").get(id) as Row | undefined;
    return row ? rowToWorkstream(row) : null;
  }

  private workerStatus(id: string): WorkerStatus | null {
    const row = this.stmt("SELECT status FROM workers WHERE id = ?").get(id) as
      { status: WorkerStatus } | undefined;
    return row?.status ?? null;
  }

  /** @internal */
  depsSatisfied(taskId: string): boolean {
    const open = this.stmt(
      `SELECT COUNT(*) AS n FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = ? AND NOT ${SATISFIED_SQL}`,
    ).get(taskId) as { n: number };
    return open.n === 0;
  }

  async listWorkstreams(): Promise<WorkstreamRecord[]> {
    return (this.stmt("SELECT * FROM workstreams ORDER BY created_at, rowid").all() as Row[]).map(
      rowToWorkstream,
    );
  }

  async getWorkstream(id: string): Promise<WorkstreamRecord | null> {
    return this.getWorkstreamRow(id);
  }

  async listTasks(workstreamId: string): Promise<TaskRecord[]> {
    return (
      this.stmt("SELECT * FROM tasks WHERE workstream_id = ? ORDER BY rowid").all(
        workstreamId,
      ) as Row[]
    ).map(rowToTask);
  }

  async countTasks(): Promise<Map<string, Partial<Record<TaskStatus, number>>>> {
    const rows = this.stmt(
      "SELECT workstream_id, status, COUNT(*) AS n FROM tasks GROUP BY workstream_id, status",
    ).all() as { workstream_id: string; status: TaskStatus; n: number }[];
    const counts = new Map<string, Partial<Record<TaskStatus, number>>>();
    for (const r of rows) {
      const ws = counts.get(r.workstream_id) ?? {};
      ws[r.status] = r.n;
      counts.set(r.workstream_id, ws);
    }
    return counts;
  }

  async getTask(id: string): Promise<TaskRecord | null> {
    return this.getTaskRow(id);
  }

  async findIds(
    prefix: string,
    limit: number,
  ): Promise<{ workstreams: string[]; tasks: string[] }> {
    const range = [prefix, `${prefix}\uffff`];
    const ws = this.stmt("SELECT id FROM workstreams WHERE id >= ? AND id < ? LIMIT ?").all(
      ...range,
      limit,
    ) as { id: string }[];
    const tasks = this.stmt("SELECT id FROM tasks WHERE id >= ? AND id < ? LIMIT ?").all(
      ...range,
      limit,
    ) as { id: string }[];
    return { workstreams: ws.map((r) => r.id), tasks: tasks.map((r) => r.id) };
  }

  async findWorkstreamsByName(name: string): Promise<WorkstreamRecord[]> {
    return (
      this.stmt("SELECT * FROM workstreams WHERE name = ? ORDER BY created_at, rowid").all(
        name,
      ) as Row[]
    ).map(rowToWorkstream);
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (this.stmt("SELECT * FROM workers ORDER BY id").all() as Row[]).map(rowToWorker);
  }

  async listTransitions(query: TransitionQuery = {}): Promise<TransitionRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (query.afterSeq !== undefined) {
      where.push("seq > ?");
      args.push(query.afterSeq);
    }
    if (query.entityId !== undefined) {
      where.push("workstream_id IS ? AND entity_id = ?");
      args.push(workstreamOf(query.entityId), query.entityId);
    }
    if (query.workstreamId !== undefined) {
      where.push("workstream_id = ?");
      args.push(query.workstreamId);
    }
    if (query.minSeverity !== undefined) {
      const sev = severitiesFrom(query.minSeverity);
      where.push(`severity IN (${sev.map(() => "?").join(", ")})`);
      args.push(...sev);
    }
    const sql = `SELECT * FROM transitions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq ${query.newestFirst ? "DESC" : "ASC"} LIMIT ?`;
    args.push(query.limit ?? -1);
    return (this.stmt(sql).all(...args) as Row[]).map(rowToTransition);
  }

  async listOutcomes(afterSeq: number, limit: number, starts: boolean): Promise<TaskOutcome[]> {
    // The handler and breaker are the task's current ones: a fallback switch changes them, and
    // the outcome is then credited to what runs now, which is close enough for patterns.
    return this.stmt(
      `SELECT r.seq, r.at, r.entity_id AS taskId, r.workstream_id AS workstreamId,
         CASE WHEN r.event = 'task_started' THEN 'started'
              WHEN r.event IN (${sqlList(COMPLETION_EVENTS)}) THEN 'ok' ELSE 'failed' END AS kind,
         json_extract(r.detail, '$.failure.category') AS category, t.handler, t.breaker
       FROM transitions r JOIN tasks t ON t.id = r.entity_id
       WHERE r.seq > ? AND r.entity = 'task'
         AND r.event IN (${starts ? "'task_started', " : ""}${sqlList(COMPLETION_EVENTS)}, ${sqlList(FAILED_ATTEMPT_EVENTS)})
       ORDER BY r.seq LIMIT ?`,
    ).all(afterSeq, limit) as TaskOutcome[];
  }

  async lastSeq(): Promise<number> {
    const row = this.stmt("SELECT MAX(seq) AS seq FROM transitions").get() as {
      seq: number | null;
    };
    return row.seq ?? 0;
  }

  async listInterventions(limit = 1000): Promise<InterventionRecord[]> {
    return (
      this.stmt("SELECT * FROM interventions ORDER BY at, rowid LIMIT ?").all(limit) as Row[]
    ).map(rowToIntervention);
  }

  async countEvents(event: string, workstreamId?: string): Promise<Map<string, number>> {
    const rows = (
      workstreamId === undefined
        ? this.stmt(
            "SELECT entity_id, COUNT(*) AS n FROM transitions WHERE event = ? GROUP BY entity_id",
          ).all(event)
        : this.stmt(
            "SELECT entity_id, COUNT(*) AS n FROM transitions WHERE event = ? AND workstream_id = ? GROUP BY entity_id",
          ).all(event, workstreamId)
    ) as { entity_id: string; n: number }[];
    return new Map(rows.map((r) => [r.entity_id, r.n]));
  }

  // ---------------------------------------------------------------- integrity

  async snapshot(): Promise<StateSnapshot> {
    return this.readState();
  }

  async replay(): Promise<StateSnapshot> {
    return this.replayLog();
  }

  /** The state as stored, liveness left out, in one consistent read. @internal */
  readState(): StateSnapshot {
    const snap = emptySnapshot();
    const read = this.db.transaction(() => {
      for (const kind of ENTITY_KINDS) {
        const { table } = ENTITY_TABLES[kind];
        const into = snap[table] as Record<string, unknown>;
        for (const r of this.stmt(`SELECT * FROM ${table}`).iterate() as Iterable<Row>) {
          const record = rowToEntity(kind, r);
          into[record.id as string] = withoutLiveness(kind, record);
        }
      }
    });
    read.deferred();
    return snap;
  }

  /** The state the log describes, rebuilt from its first record. @internal */
  replayLog(): StateSnapshot {
    const snap = emptySnapshot();
    for (const r of this.stmt(
      "SELECT * FROM transitions ORDER BY seq",
    ).iterate() as Iterable<Row>) {
      applyTransition(snap, rowToTransition(r));
    }
    return normalizeReplayed(snap);
  }

  async verifyChain() {
    const v = new ChainVerifier();
    for (const r of this.stmt(
      "SELECT * FROM transitions ORDER BY seq",
    ).iterate() as Iterable<Row>) {
      const ok = v.push(rowToRawTransition(r));
      if (!ok) break;
    }
    return v.report();
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
    return integrityProblems(this.db);
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

  // ---------------------------------------------------------------- repair

  async repair(options: RepairOptions): Promise<RepairOutcome> {
    return repairState(this, options);
  }

  // ---------------------------------------------------------------- workstream recovery

  async listCheckpoints(workstreamId: string, limit?: number): Promise<Checkpoint[]> {
    return readCheckpoints(this, workstreamId, limit);
  }

  async rollbackWorkstream(
    workstreamId: string,
    to: CheckpointRef,
    who: Actor,
    options: RecoveryOptions = {},
  ): Promise<RecoveryPlan> {
    if (!options.dryRun && this.path !== ":memory:") {
      // Planned first: a refused rollback, or one with nothing to change, takes no backup.
      const plan = rollbackWorkstream(this, workstreamId, to, who, { ...options, dryRun: true });
      const changes = plan.changes.length > 0 || plan.workstream.from !== plan.workstream.to;
      if (changes) await this.backup({ reason: `before rollback of ${workstreamId}` });
    }
    return rollbackWorkstream(this, workstreamId, to, who, options);
  }

  async retryWorkstream(
    workstreamId: string,
    scope: "all" | "failed",
    who: Actor,
    options: RecoveryOptions = {},
  ): Promise<RecoveryPlan> {
    return retryWorkstream(this, workstreamId, scope, who, options);
  }

  async resumeWorkstream(
    workstreamId: string,
    fromTask: string,
    who: Actor,
    options: RecoveryOptions = {},
  ): Promise<RecoveryPlan> {
    return resumeWorkstream(this, workstreamId, fromTask, who, options);
  }

  async removeDependency(
    taskId: string,
    depId: string,
    who: Actor,
    options: RecoveryOptions = {},
  ): Promise<DependencyRemoval> {
    return removeDependency(this, taskId, depId, who, options);
  }

  // ---------------------------------------------------------------- recovery strategies

  async listBreakers(): Promise<BreakerRecord[]> {
    return listBreakerRows(this);
  }

  async controlBreaker(name: string, action: BreakerAction, who: Actor): Promise<BreakerRecord> {
    return controlBreaker(this, name, action, who);
  }

  async tripBreaker(name: string, reason: string): Promise<BreakerRecord | null> {
    return tripBreaker(this, name, reason);
  }

  async escalateStale(afterMs: number): Promise<string[]> {
    return escalateStale(this, afterMs);
  }

  async advanceBreakers(): Promise<BreakerRecord[]> {
    if (!anyDueForProbe(this)) return [];
    return this.write(() => openDueProbes(this, "monitor"));
  }

  async reviveTasks(options: RevivalOptions): Promise<Revival[]> {
    return reviveTasks(this, options);
  }

  async getDegradation(): Promise<DegradationRecord> {
    return readDegradation(this);
  }

  async setDegradation(
    view: DegradationView,
    reason: string,
    actor: string,
  ): Promise<DegradationRecord | null> {
    return setDegradation(this, view, reason, actor);
  }

  async recordPatterns(
    patterns: Omit<PatternRecord, "status" | "createdAt" | "updatedAt">[],
  ): Promise<PatternRecord[]> {
    return recordPatterns(this, patterns);
  }

  async listPatterns(status?: PatternRecord["status"]): Promise<PatternRecord[]> {
    return listPatterns(this, status);
  }

  async judgePattern(
    id: string,
    verdict: "confirmed" | "false_positive",
    reason: string,
  ): Promise<void> {
    judgePattern(this, id, verdict, reason);
  }

  async cancelWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamCancellation> {
    return cancelWorkstream(this, workstreamId, who);
  }

  async compensateWorkstream(
    workstreamId: string,
    who: Actor,
    options: CompensateOptions = {},
  ): Promise<CompensationPlan> {
    return compensateWorkstream(this, workstreamId, who, options);
  }

  async archiveWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamRecord> {
    return closeWorkstream(this, workstreamId, "archived", who);
  }

  async mergeWorkstream(workstreamId: string, who: Actor): Promise<WorkstreamRecord> {
    return closeWorkstream(this, workstreamId, "merged", who);
  }
}

/** Why a workstream that stops on failure cancelled its open tasks (revival looks for it). */
export function stopReason(criticalKey: string): string {
  return `critical task ${criticalKey} failed`;
}

type ClaimRow = Omit<ClaimedTask, "leaseToken" | "input"> & {
  input: string | null;
  deadlineAt: number | null;
};

/**
 * The claim query: ready tasks of the worker's handlers whose dependencies are satisfied, either
 * with no breaker or a closed one (`closed`), or of one half-open breaker (`probe`). Only the
 * columns a worker needs: reading and decoding whole rows is most of a claim's cost. The
 * dependency check guards invariant 7 even when an operator reopened a dependency after its
 * dependents were queued.
 */
function claimSql(gate: "closed" | "probe"): string {
  const breaker =
    gate === "closed"
      ? "(breaker IS NULL OR NOT EXISTS (SELECT 1 FROM breakers b WHERE b.id = tasks.breaker AND b.status <> 'closed'))"
      : "breaker = @breaker";
  return `SELECT id, workstream_id AS workstreamId, key, handler, input, attempts, timeout_ms AS timeoutMs, idempotency_key AS idempotencyKey,
         created_at + deadline_ms AS deadlineAt
       FROM tasks WHERE status = 'queued' AND run_at <= @now AND handler IN (SELECT value FROM json_each(@handlers))
         AND (deadline_ms IS NULL OR created_at + deadline_ms > @now)
         AND ${breaker}
         AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = tasks.id AND NOT ${SATISFIED_SQL})
       ORDER BY priority DESC, run_at, rowid LIMIT @limit`;
}

/** Event names as an SQL list of literals (they are fixed identifiers, never user input). */
function sqlList(events: Iterable<string>): string {
  return [...events].map((e) => `'${e}'`).join(", ");
}

const WAKE_BYTE = Buffer.from("1");

/** The patch that ends a task's lease. @internal */
export const RELEASED_LEASE = {
  leaseToken: null,
  leaseWorker: null,
  leaseExpiresAt: null,
} as const;

/** How a workstream came to be: submitted, or scheduled to undo another's completed tasks. */
export interface WorkstreamOrigin {
  event: "workstream_created" | "compensation_scheduled";
  /** The workstream a compensation undoes; null for a submitted one. */
  compensates: string | null;
  detail?: Record<string, unknown>;
}

const SUBMITTED: WorkstreamOrigin = { event: "workstream_created", compensates: null };

/** The records that create a workstream and its tasks, and its `task_deps` rows. */
interface Creation {
  workstreamId: string;
  taskIds: string[];
  changes: Change[];
  deps: [string, string][];
}

function creationOf(
  spec: WorkstreamSpec,
  now: number,
  actor: string,
  origin: WorkstreamOrigin,
): Creation {
  const wsId = newId(WORKSTREAM_ID_PREFIX.slice(0, -1), now);
  const taskIds: string[] = [];
  const deps: [string, string][] = [];
  const changes: Change[] = [
    {
      kind: "workstream",
      id: wsId,
      from: null,
      to: "active",
      patch: {
        id: wsId,
        name: spec.name,
        onFailure: spec.onFailure,
        revive: spec.revive,
        compensation: spec.compensation,
        compensates: origin.compensates,
        createdAt: now,
      },
      event: origin.event,
      actor,
      workstreamId: wsId,
      detail: origin.detail ?? null,
    },
  ];
  for (const t of spec.tasks) {
    const id = makeTaskId(wsId, t.key);
    taskIds.push(id);
    deps.push(...dependencyRows(wsId, id, t.deps));
    changes.push({
      kind: "task",
      id,
      from: null,
      to: t.deps.length === 0 ? "queued" : "pending",
      patch: {
        id,
        workstreamId: wsId,
        key: t.key,
        handler: t.handler,
        input: t.input ?? null,
        priority: t.priority,
        attempts: 0,
        retry: t.retry,
        timeoutMs: t.timeoutMs,
        critical: t.critical,
        deps: t.deps,
        runAt: now,
        workerLostStreak: 0,
        idempotencyKey: id,
        revivals: 0,
        // Recovery settings most tasks lack are left out rather than logged as nulls: records
        // stay small on the hot path, and replay fills them in (normalizeReplayed).
        ...(t.deadlineMs === null ? {} : { deadlineMs: t.deadlineMs }),
        ...(t.breaker === null ? {} : { breaker: t.breaker }),
        ...(t.fallbacks === null ? {} : { fallbacks: { ...t.fallbacks, tried: [] } }),
        ...(t.compensation === null ? {} : { compensation: t.compensation }),
        ...(t.qualityThreshold === null ? {} : { qualityThreshold: t.qualityThreshold }),
        createdAt: now,
      },
      event: "task_created",
      actor,
      workstreamId: wsId,
    });
  }
  return { workstreamId: wsId, taskIds, changes, deps };
}

function pickState(t: TaskRecord) {
  return {
    status: t.status,
    attempts: t.attempts,
    maxAttempts: t.retry.maxAttempts,
    timeoutMs: t.timeoutMs,
  };
}
