import type { Clock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import { failure } from "../../model/failure.js";
import { formatDuration } from "../../model/duration.js";
import { workstreamOf } from "../../model/ids.js";
import type {
  BreakerRecord,
  DegradationRecord,
  InterventionRecord,
  PatternRecord,
  ResourceRecord,
  TaskRecord,
  TransitionRecord,
  WorkerControl,
  WorkerRecord,
  WorkstreamRecord,
} from "../../model/records.js";
import type { FallbackPlan, WorkstreamSpec } from "../../model/spec.js";
import {
  ENTITY_KINDS,
  type EntityKind,
  type TaskStatus,
  type WorkerStatus,
} from "../../model/states.js";
import { severitiesFrom } from "../../observe/events.js";
import { COMPLETION_EVENTS, FAILED_ATTEMPT_EVENTS } from "../../observe/metrics.js";
import { probeSlots } from "../../recovery/breaker.js";
import type { CompensationPlan } from "../../recovery/compensate.js";
import { restartedDeadline } from "../../recovery/revive.js";
import type { BackupInfo, BackupOptions } from "../../state/backups.js";
import type { Checkpoint, CheckpointRef } from "../../state/checkpoints.js";
import type { JournalTransition } from "../../state/journal.js";
import type { RecoveryPlan } from "../../state/recovery-plan.js";
import { ChainVerifier, type ChainReport } from "../chain.js";
import {
  applyTransition,
  emptySnapshot,
  normalizeReplayed,
  type StateSnapshot,
  withoutLiveness,
} from "../replay.js";
import type {
  Actor,
  ClaimedTask,
  CompensateOptions,
  DegradationView,
  DependencyRemoval,
  ExchangeRequest,
  ExchangeResult,
  FailurePlanner,
  HeartbeatResult,
  HeldLease,
  LeaseView,
  Outcome,
  RecoveryOptions,
  RepairOptions,
  RepairOutcome,
  ResourceView,
  RetryOverrides,
  Revival,
  RevivalOptions,
  Settlement,
  StallReport,
  Store,
  SweptTask,
  TaskOutcome,
  TransitionQuery,
  WorkerInfo,
  WorkerShutdown,
  WorkerShutdownOptions,
  WorkstreamCancellation,
} from "../store.js";
import {
  anyDueForProbe,
  type BreakerAction,
  controlBreaker,
  halfOpenBreakers,
  listBreakerRows,
  openDueProbes,
  recordBreakerOutcome,
  runningProbes,
  tripBreaker,
} from "./breakers.js";
import {
  ENTITY_TABLES,
  rowToEntity,
  rowToIntervention,
  rowToRawTransition,
  rowToTask,
  rowToTransition,
  rowToWorker,
  rowToWorkstream,
} from "./codec.js";
import { readCheckpoints } from "./checkpoints.js";
import { compensateWorkstream } from "./compensation.js";
import { insertCreation, prepareCreation, SUBMITTED } from "./creation.js";
import { escalateStale } from "./escalation.js";
import {
  applyFailure,
  failTask,
  holdDependents,
  promoteDependents,
  reconcileWorkstream,
  RELEASED_LEASE,
} from "./lifecycle.js";
import type { Queryable, Row, SqlDialect } from "./queryable.js";
import {
  type ClaimRow,
  claimChange,
  claimedTask,
  completionChange,
  fencingRefusal,
  HELD_COLUMNS,
  type HeldRow,
  judgeQuality,
} from "./outcomes.js";
import { repairState } from "./repair.js";
import {
  allocateClaims,
  claimBlocked,
  listResources,
  markResource,
  refreshResources,
  setResourceLimit,
} from "./resources.js";
import { detectStalls } from "./stalls.js";
import { reviveTasks } from "./revival.js";
import {
  judgePattern,
  listPatterns,
  readDegradation,
  recordPatterns,
  setDegradation,
} from "./signals.js";
import {
  type Change,
  type ChainHead,
  type PreparedChange,
  prepareChange,
  SATISFIED_SQL,
  Tx,
  type WriteShape,
  writeShape,
} from "./tx.js";
import {
  getWorker,
  listLeases,
  requestWorkerRestart,
  requestWorkerShutdown,
  capabilitiesParam,
} from "./workers.js";
import {
  cancelWorkstream,
  closeWorkstream,
  removeDependency,
  resumeWorkstream,
  retryWorkstream,
  rollbackWorkstream,
} from "./workstream-ops.js";

/** Rows read per query when walking the whole log. */
const LOG_PAGE = 5_000;

/** Thrown out of a dry run's transaction so that it rolls back. */
class RolledBack<T> {
  constructor(readonly value: T) {}
}

/** Queued tasks whose overall deadline passed (the monitor's sweep; index tasks_deadline). @internal */
export const EXPIRED_SQL =
  "SELECT id FROM tasks WHERE status = 'queued' AND deadline_ms IS NOT NULL AND created_at + deadline_ms <= ? LIMIT 1000";

/**
 * What both SQL stores share: every {@link Store} operation, written once over {@link Queryable}
 * and the write path of {@link Tx}. A subclass supplies the connection (transactions, the log's
 * head, appending records, lease tokens), the SQL its dialect spells differently, and what only
 * it can do (backups, waking workers in other processes).
 *
 * Members marked `@internal` are for the operation modules beside this file; they are not part
 * of {@link Store}.
 */
export abstract class SqlStore implements Store {
  abstract readonly url: string;
  abstract readonly backupsSupported: boolean;
  /** Single statements outside any transaction. @internal */
  abstract readonly q: Queryable;
  /** @internal */
  abstract readonly dialect: SqlDialect;
  /** Write statements by entity and fields, so the hot path builds no SQL text. */
  private readonly shapes = new Map<string, WriteShape>();

  protected constructor(
    /** @internal */
    readonly clock: Clock,
  ) {}

  // ---------------------------------------------------------------- what a dialect supplies

  /**
   * Runs `fn` in one transaction, rolled back when `fn` throws: a write transaction that excludes
   * every other writer (`write`); one that excludes `write` transactions but may run beside other
   * `shared` ones, for code that locks the rows it decides on (`shared`; where the dialect has a
   * single writer anyway, the same as `write`); or a read-only one that sees one consistent state
   * (`read`). `opening`, a statement without parameters, runs first, in the same round trip as
   * the transaction's start where the dialect can; `fn` gets its rows.
   */
  protected abstract transaction<T>(
    mode: "write" | "shared" | "read",
    fn: (q: Queryable, opened: Row[]) => Promise<T>,
    opening?: string,
  ): Promise<T>;

  /** The log's last record, locked against other appenders until the transaction ends. @internal */
  abstract lockChainHead(q: Queryable): Promise<ChainHead>;

  /** Writes a transaction's chained records; `head` is its last, the log's new head. @internal */
  abstract appendRecords(
    q: Queryable,
    records: JournalTransition[],
    head: ChainHead,
  ): Promise<void>;

  /**
   * Hands a transaction's records to the database server to number, chain and write as the
   * transaction commits, where the store can and they are few: the transaction then reads the
   * log's head in no round trip of its own, and holds it only while it commits. False leaves them
   * to the caller ({@link appendRecords}). @internal
   */
  chainOnServer(_q: Queryable, _records: readonly JournalTransition[]): boolean {
    return false;
  }

  /** `n` fencing tokens for the leases the open transaction is about to grant. */
  /** @internal */
  abstract leaseTokens(tx: Tx, n: number): Promise<number[]>;

  /** Called with the flushed records just before the transaction commits. */
  protected async beforeCommit(_tx: Tx): Promise<void> {}

  /** Called once the transaction committed (`tx`), or after it rolled back (null). */
  protected afterTransaction(_tx: Tx | null): void {}

  abstract onWake(fn: () => void): () => void;
  abstract close(): Promise<void>;
  abstract backup(options: BackupOptions): Promise<BackupInfo>;
  abstract listBackups(): Promise<BackupInfo[]>;
  abstract integrityCheck(): Promise<string[]>;

  /** Takes the backup a rollback promises before it changes anything. */
  protected abstract backupBeforeRollback(workstreamId: string): Promise<void>;

  // ---------------------------------------------------------------- transactions

  /**
   * Runs `fn` in one write transaction (see {@link SqlStore.transaction} for `mode` and
   * `opening`, whose rows are `tx.opened`); its records are chained and written as it ends.
   * @internal
   */
  async write<T>(
    fn: (tx: Tx) => Promise<T>,
    mode: "write" | "shared" = "write",
    opening?: string,
  ): Promise<T> {
    let done: Tx | null = null;
    try {
      const result = await this.transaction(
        mode,
        async (q, opened) => {
          const tx = new Tx(this, q, opened);
          const r = await fn(tx);
          await tx.flush();
          await this.beforeCommit(tx);
          done = tx;
          return r;
        },
        opening,
      );
      return result;
    } finally {
      this.afterTransaction(done);
    }
  }

  /**
   * Runs `fn` as a write transaction that always rolls back: a dry run computes exactly what the
   * real one would, with the same reads and checks, and writes nothing. @internal
   */
  async dryRun<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    try {
      await this.transaction("write", async (q) => {
        throw new RolledBack(await fn(new Tx(this, q)));
      });
    } catch (err) {
      if (err instanceof RolledBack) return err.value as T;
      throw err;
    } finally {
      this.afterTransaction(null);
    }
    throw new MendError("internal", "dry run did not roll back");
  }

  /** Runs `fn` in one read-only transaction that sees one consistent state. @internal */
  read<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    return this.transaction("read", fn);
  }

  /**
   * Prepares a transition (no database needed), with the write statement for its fields; `at`
   * is its time, now unless a caller that wrote the row itself gives the time it wrote. @internal
   */
  prepare(c: Change, at = this.clock.now()): PreparedChange {
    return prepareChange(c, at, (fields) => {
      const insert = c.from === null;
      const signature = `${insert ? "i" : "u"}:${c.kind}:${fields.join(",")}`;
      let shape = this.shapes.get(signature);
      if (!shape) {
        shape = writeShape(c.kind, insert, fields);
        this.shapes.set(signature, shape);
      }
      return shape;
    });
  }

  /**
   * Writes prepared transitions of one shape (one statement text); returns the rows changed.
   * A dialect may write them with one statement. @internal
   */
  async applyBatch(q: Queryable, shape: WriteShape, batch: PreparedChange[]): Promise<number> {
    let changed = 0;
    for (const p of batch) changed += await q.run(shape.sql, p.values);
    return changed;
  }

  /**
   * Queues a creation's rows and records to be written with the transaction's COMMIT, where the
   * store can and they are few, so that a small submission is one round trip; false leaves them
   * to the caller. Only for rows nothing else in the transaction reads. @internal
   */
  insertWithCommit(_tx: Tx, _records: PreparedChange[], _deps: [string, string][]): boolean {
    return false;
  }

  /** Inserts a new workstream's dependency rows. @internal */
  async insertDependencies(q: Queryable, deps: [string, string][]): Promise<void> {
    for (const [task, dep] of deps) {
      await q.run("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)", [task, dep]);
    }
  }

  // ---------------------------------------------------------------- submit

  async submit(
    spec: WorkstreamSpec,
    actor = "engine",
  ): Promise<{ workstreamId: string; taskIds: string[] }> {
    const created = prepareCreation(this, spec, actor, SUBMITTED);
    // New rows only, beside workers' exchanges; a breaker or resource it names may be created or
    // changed, which other writers must not see half done.
    const named = Object.keys(spec.breakers).length + Object.keys(spec.resources).length;
    const mode = named === 0 ? "shared" : "write";
    await this.write((tx) => insertCreation(tx, created, true), mode);
    return { workstreamId: created.workstreamId, taskIds: created.taskIds };
  }

  // ---------------------------------------------------------------- worker round trip

  async exchange(req: ExchangeRequest): Promise<ExchangeResult> {
    return this.write(async (tx) => {
      const touched = new Set<string>();
      const settled: Settlement[] = [];
      for (const o of req.outcomes) settled.push(await this.settle(tx, o, req, touched));
      for (const ws of touched) await reconcileWorkstream(tx, ws, `worker:${req.workerId}`);
      const claimed = req.claim > 0 ? await this.claim(tx, req) : [];
      const { level, name, quality, capabilities } = await readDegradation(tx);
      return { settled, claimed, degradation: { level, name, quality, capabilities } };
    });
  }

  private async settle(
    tx: Tx,
    o: Outcome,
    req: ExchangeRequest,
    touched: Set<string>,
  ): Promise<Settlement> {
    // Only what fencing and the hot path need; the whole row is read for failures alone.
    const held = await tx.get<HeldRow>(`SELECT ${HELD_COLUMNS} FROM tasks WHERE id = ?`, [
      o.taskId,
    ]);
    const refusal = fencingRefusal(o, held, req.workerId);
    if (refusal) return refusal;
    const row = held!;
    const actor = `worker:${req.workerId}`;
    const plan = row.fallbacks === null ? null : (JSON.parse(row.fallbacks) as FallbackPlan);
    const outcome = judgeQuality(o, row, plan);
    if (outcome.kind === "complete") {
      if (row.breaker !== null) await recordBreakerOutcome(tx, row.breaker, true, actor, row.id);
      await tx.transition(completionChange(row, outcome, plan, actor));
      await promoteDependents(tx, row.id, actor);
      touched.add(row.workstreamId);
      return { taskId: row.id, applied: true, status: "completed" };
    }
    if (outcome.kind === "release") {
      await tx.transition({
        kind: "task",
        id: row.id,
        from: "running",
        to: "queued",
        patch: { attempts: row.attempts - 1, runAt: tx.now(), ...RELEASED_LEASE },
        event: "task_released",
        actor,
        workstreamId: row.workstreamId,
        detail: { reason: outcome.reason },
      });
      tx.wake();
      return { taskId: row.id, applied: true, status: "queued" };
    }
    const decision = await applyFailure(
      tx,
      await tx.requireTask(row.id),
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

  /**
   * The claim query: up to `limit` ready tasks of the worker's handlers whose dependencies are
   * satisfied, with no breaker or a closed one (`gate` null), or of one half-open breaker (`gate`
   * its name), best first. Only the columns a worker needs: reading and decoding whole rows is
   * most of a claim's cost. The dependency check guards invariant 7 even when an operator
   * reopened a dependency after its dependents were queued. Tasks needing resources are left out
   * when every choice of one of their needs is `blocked` (see {@link claimBlocked}). `extra` adds
   * select-list columns; `lock` (PostgreSQL's `FOR UPDATE SKIP LOCKED`) locks the rows read.
   *
   * One ordered walk of the ready index per handler, merged: a single walk over all queued tasks
   * would step over every task of handlers this worker lacks, and a backlog of those (100,000
   * tasks for other workers) made each claim, an idle worker's too, read all of them. With
   * `lock`, each walk locks what it reads, up to `limit` rows (PostgreSQL cannot merge locking
   * walks lazily), so a worker whose several handlers all have tasks ready holds a few more rows
   * than it takes until its claim commits; other workers skip them meanwhile. @internal
   */
  claimQuery(
    req: ExchangeRequest,
    now: number,
    gate: string | null,
    limit: number,
    blocked: readonly string[],
    extra = "",
    lock = "",
  ): { sql: string; params: unknown[] } {
    const breaker =
      gate === null
        ? "(breaker IS NULL OR NOT EXISTS (SELECT 1 FROM breakers b WHERE b.id = tasks.breaker AND b.status <> 'closed'))"
        : "breaker = ?";
    const arm = `SELECT * FROM (SELECT id, workstream_id AS "workstreamId", key, handler, input, attempts, timeout_ms AS "timeoutMs",
           idempotency_key AS "idempotencyKey", created_at + deadline_ms AS "deadlineAt", resources,
           priority, run_at AS "runAt", rowid AS "rowOrder"
         FROM tasks WHERE status = 'queued' AND handler = ? AND run_at <= ?
           AND (tasks.requires IS NULL OR ${this.dialect.jsonSubsetOf("tasks.requires")})
           AND (tasks.resources IS NULL OR ${this.dialect.needsMet("tasks.resources")})
           AND (deadline_ms IS NULL OR created_at + deadline_ms > ?)
           AND ${breaker}
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = tasks.id AND NOT ${SATISFIED_SQL})
         ORDER BY priority DESC, run_at, rowid LIMIT ?${lock}) AS h`;
    // No handler matches a null name: a worker with no handlers claims nothing.
    const handlers = req.handlers.length > 0 ? req.handlers : [null];
    const params: unknown[] = [];
    for (const handler of handlers) {
      params.push(handler, now, capabilitiesParam(req.capabilities), JSON.stringify(blocked), now);
      if (gate !== null) params.push(gate);
      params.push(limit);
    }
    params.push(limit);
    const sql = `SELECT id, "workstreamId", key, handler, input, attempts, "timeoutMs", "idempotencyKey", "deadlineAt", resources${extra}
       FROM (${handlers.map(() => arm).join(" UNION ALL ")}) AS ready
       ORDER BY priority DESC, "runAt", "rowOrder" LIMIT ?`;
    return { sql, params };
  }

  private async claim(tx: Tx, req: ExchangeRequest): Promise<ClaimedTask[]> {
    const now = tx.now();
    await openDueProbes(tx, `worker:${req.workerId}`);
    const blocked = await claimBlocked(tx);
    const closed = this.claimQuery(req, now, null, req.claim, blocked);
    const rows = await tx.all<ClaimRow>(closed.sql, closed.params);
    // Half-open breakers let a few probes through: at most their limit running at once.
    if (rows.length < req.claim) {
      for (const b of await halfOpenBreakers(tx)) {
        const want = req.claim - rows.length;
        if (want === 0) break;
        const slots = probeSlots(b.config, await runningProbes(tx, b));
        if (slots === 0) continue;
        const probe = this.claimQuery(req, now, b.id, Math.min(slots, want), blocked);
        rows.push(...(await tx.all<ClaimRow>(probe.sql, probe.params)));
      }
    }
    if (rows.length === 0) return [];
    const { claimed } = await allocateClaims(tx, rows, req.claim);
    const tokens = await this.leaseTokens(tx, claimed.length);
    const out: ClaimedTask[] = [];
    for (let i = 0; i < claimed.length; i++) {
      const c = claimed[i]!;
      await tx.transition(claimChange(c.task, tokens[i]!, req, now, c));
      out.push(claimedTask(c.task, tokens[i]!, now));
    }
    return out;
  }

  /**
   * Fails the queued tasks whose overall deadline passed while they waited (behind an open
   * breaker, a backoff, or busy workers): the deadline bounds everything inside it.
   */
  async expireDeadlines(): Promise<string[]> {
    const expired = await this.q.all<{ id: string }>(EXPIRED_SQL, [this.clock.now()]);
    if (expired.length === 0) return [];
    return this.write(async (tx) => {
      const touched = new Set<string>();
      const failed: string[] = [];
      for (const { id } of expired) {
        const row = await tx.getTaskRow(id);
        if (row?.status !== "queued") continue;
        const lastError = failure(
          "timeout",
          false,
          `overall deadline of ${formatDuration(row.deadlineMs!)} passed before the task could run again`,
        );
        await failTask(tx, row, "queued", { lastError }, "monitor", {
          detail: { failure: lastError, decision: { action: "fail", reason: "deadline passed" } },
        });
        touched.add(row.workstreamId);
        failed.push(id);
      }
      for (const ws of touched) await reconcileWorkstream(tx, ws, "monitor");
      return failed;
    });
  }

  // ---------------------------------------------------------------- liveness

  async heartbeat(
    workerId: string,
    status: WorkerStatus,
    leases: HeldLease[],
    leaseMs: number,
  ): Promise<HeartbeatResult> {
    return this.write(async (tx) => {
      const now = tx.now();
      const worker = await tx.get<{ status: WorkerStatus; control: string | null }>(
        "SELECT status, control FROM workers WHERE id = ?",
        [workerId],
      );
      if (!worker) {
        throw new MendError("not_found", `worker ${workerId} is not registered`, { workerId });
      }
      const current = worker.status;
      await tx.run("UPDATE workers SET heartbeat_at = ? WHERE id = ?", [now, workerId]);
      if (current !== status) {
        await tx.transition({
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
      // One statement for all the leases. Progress is stamped on the store's clock, like the
      // lease: worker clocks may drift.
      const renewed = new Set<string>();
      if (leases.length > 0) {
        const rows = await tx.all<{ id: string }>(
          `UPDATE tasks SET lease_expires_at = ?,
             progress_at = CASE WHEN l.progressed = 1 THEN ? ELSE tasks.progress_at END
           FROM ${this.dialect.jsonRows("l", [
             ["id", "text"],
             ["token", "bigint"],
             ["progressed", "bigint"],
           ])}
           WHERE tasks.id = l.id AND tasks.lease_token = l.token AND tasks.lease_worker = ? AND tasks.status = 'running'
           RETURNING tasks.id`,
          [
            now + leaseMs,
            now,
            JSON.stringify(
              leases.map((l) => ({
                id: l.taskId,
                token: l.token,
                progressed: l.progressed ? 1 : 0,
              })),
            ),
            workerId,
          ],
        );
        for (const r of rows) renewed.add(r.id);
      }
      const lost = leases.filter((l) => !renewed.has(l.taskId)).map((l) => l.taskId);
      const control =
        worker.control === null ? null : (JSON.parse(worker.control) as WorkerControl);
      return { lost, control };
    });
  }

  async registerWorker(info: WorkerInfo): Promise<void> {
    await this.write(async (tx) => {
      const now = tx.now();
      const existing = await tx.workerStatus(info.id);
      const patch = {
        host: info.host,
        pid: info.pid,
        concurrency: info.concurrency,
        handlers: info.handlers,
        capabilities: info.capabilities ?? [],
        supervised: info.supervised ?? false,
        // A request to an earlier process under this id was answered by its exit.
        control: null,
        startedAt: now,
        heartbeatAt: now,
      };
      await tx.transition({
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
    await this.write(async (tx) => {
      const current = await tx.workerStatus(workerId);
      if (!current || current === "shutdown") return;
      await tx.transition({
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
    const expired = await this.q.all<{ id: string }>(
      "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ? LIMIT 1000",
      [now],
    );
    if (expired.length === 0) return [];
    return this.write(async (tx) => {
      const swept: SweptTask[] = [];
      const touched = new Set<string>();
      for (const { id } of expired) {
        const row = await tx.getTaskRow(id);
        // Re-checked in the transaction: a heartbeat may have renewed it meanwhile.
        if (row?.status !== "running" || (row.leaseExpiresAt ?? 0) >= now) continue;
        const lost = failure(
          "worker_lost",
          true,
          `lease expired: worker ${row.leaseWorker ?? "?"} stopped heartbeating`,
        );
        const decision = await applyFailure(tx, row, lost, planner, "monitor");
        touched.add(row.workstreamId);
        swept.push({ taskId: id, workerId: row.leaseWorker, decision });
      }
      for (const ws of touched) await reconcileWorkstream(tx, ws, "monitor");
      return swept;
    });
  }

  async markSilentWorkers(unresponsiveMs: number, shutdownMs: number): Promise<WorkerRecord[]> {
    const now = this.clock.now();
    const silent = (q: Queryable) =>
      q.all(
        `SELECT * FROM workers WHERE (status IN ('idle','busy') AND heartbeat_at < ?) OR (status = 'unresponsive' AND heartbeat_at < ?)`,
        [now - unresponsiveMs, now - shutdownMs],
      );
    // Read first: the common case changes nothing and needs no write transaction.
    if ((await silent(this.q)).length === 0) return [];
    return this.write(async (tx) => {
      const changed: WorkerRecord[] = [];
      for (const r of await silent(tx)) {
        const w = rowToWorker(r);
        const to = w.status === "unresponsive" ? "shutdown" : "unresponsive";
        await tx.transition({
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
    return this.write(async (tx) => {
      const now = tx.now();
      const row = await tx.get<{ holder: string; expires_at: number }>(
        "SELECT holder, expires_at FROM leaders WHERE name = ?",
        [name],
      );
      if (row && row.holder !== holder && row.expires_at >= now) return false;
      await tx.run(
        "INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
        [name, holder, now + ttlMs],
      );
      return true;
    });
  }

  async releaseLeadership(name: string, holder: string): Promise<void> {
    await this.q.run("DELETE FROM leaders WHERE name = ? AND holder = ?", [name, holder]);
  }

  // ---------------------------------------------------------------- operator actions

  async retryTask(taskId: string, overrides: RetryOverrides, who: Actor): Promise<TaskRecord> {
    return this.write(async (tx) => {
      const row = await tx.requireTask(taskId);
      if (!["failed", "cancelled", "skipped"].includes(row.status)) {
        throw new MendError(
          "refused",
          `task ${taskId} is ${row.status}; only failed, cancelled or skipped tasks can be retried`,
          { taskId, status: row.status },
        );
      }
      const ready = await tx.depsSatisfied(row.id);
      const now = tx.now();
      await tx.transition({
        kind: "task",
        id: row.id,
        from: row.status,
        to: ready ? "queued" : "pending",
        patch: {
          retry: {
            ...row.retry,
            maxAttempts: row.attempts + (overrides.maxAttempts ?? row.retry.maxAttempts),
          },
          timeoutMs: overrides.timeoutMs ?? row.timeoutMs,
          workerLostStreak: 0,
          runAt: now,
          deadlineMs: restartedDeadline(row, now),
          escalation: null,
        },
        event: "task_retried",
        actor: who.actor,
        workstreamId: row.workstreamId,
        detail: { reason: who.reason ?? null, overrides },
      });
      if (row.status === "skipped" || (row.status === "failed" && !row.critical)) {
        await holdDependents(tx, row.id, who.actor);
      }
      tx.wake();
      return this.afterOperatorAction(tx, row, who);
    });
  }

  async skipTask(taskId: string, who: Actor): Promise<TaskRecord> {
    return this.write(async (tx) => {
      const row = await tx.requireTask(taskId);
      if (!["pending", "queued", "failed", "cancelled"].includes(row.status)) {
        throw new MendError(
          "refused",
          `task ${taskId} is ${row.status}; ${row.status === "running" ? "cancel it first" : "it cannot be skipped"}`,
          { taskId, status: row.status },
        );
      }
      await tx.transition({
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
      await promoteDependents(tx, row.id, who.actor);
      tx.wake();
      return this.afterOperatorAction(tx, row, who);
    });
  }

  async cancelTask(taskId: string, who: Actor): Promise<TaskRecord> {
    return this.write(async (tx) => {
      const row = await tx.requireTask(taskId);
      if (!["pending", "queued", "running"].includes(row.status)) {
        throw new MendError("refused", `task ${taskId} is ${row.status}; it cannot be cancelled`, {
          taskId,
          status: row.status,
        });
      }
      await tx.transition({
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
      return this.afterOperatorAction(tx, row, who);
    });
  }

  /** Logs an operator's change to a task and settles its workstream; returns the task after. */
  private async afterOperatorAction(tx: Tx, before: TaskRecord, who: Actor): Promise<TaskRecord> {
    const after = await tx.requireTask(before.id);
    await tx.intervention(who, before.id, pickState(before), pickState(after));
    await reconcileWorkstream(tx, before.workstreamId, who.actor);
    return after;
  }

  // ---------------------------------------------------------------- reads

  async listWorkstreams(): Promise<WorkstreamRecord[]> {
    return (await this.q.all("SELECT * FROM workstreams ORDER BY created_at, rowid")).map(
      rowToWorkstream,
    );
  }

  async getWorkstream(id: string): Promise<WorkstreamRecord | null> {
    const row = await this.q.get("SELECT * FROM workstreams WHERE id = ?", [id]);
    return row ? rowToWorkstream(row) : null;
  }

  async listTasks(workstreamId: string): Promise<TaskRecord[]> {
    return (
      await this.q.all("SELECT * FROM tasks WHERE workstream_id = ? ORDER BY rowid", [workstreamId])
    ).map(rowToTask);
  }

  async countTasks(): Promise<Map<string, Partial<Record<TaskStatus, number>>>> {
    const rows = await this.q.all<{ workstream_id: string; status: TaskStatus; n: number }>(
      "SELECT workstream_id, status, COUNT(*) AS n FROM tasks GROUP BY workstream_id, status",
    );
    const counts = new Map<string, Partial<Record<TaskStatus, number>>>();
    for (const r of rows) {
      const ws = counts.get(r.workstream_id) ?? {};
      ws[r.status] = r.n;
      counts.set(r.workstream_id, ws);
    }
    return counts;
  }

  async getTask(id: string): Promise<TaskRecord | null> {
    const row = await this.q.get("SELECT * FROM tasks WHERE id = ?", [id]);
    return row ? rowToTask(row) : null;
  }

  async findIds(
    prefix: string,
    limit: number,
  ): Promise<{ workstreams: string[]; tasks: string[] }> {
    const range = [prefix, `${prefix}\uffff`, limit];
    const ws = await this.q.all<{ id: string }>(
      "SELECT id FROM workstreams WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
      range,
    );
    const tasks = await this.q.all<{ id: string }>(
      "SELECT id FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
      range,
    );
    return { workstreams: ws.map((r) => r.id), tasks: tasks.map((r) => r.id) };
  }

  async findWorkstreamsByName(name: string): Promise<WorkstreamRecord[]> {
    return (
      await this.q.all("SELECT * FROM workstreams WHERE name = ? ORDER BY created_at, rowid", [
        name,
      ])
    ).map(rowToWorkstream);
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (await this.q.all("SELECT * FROM workers ORDER BY id")).map(rowToWorker);
  }

  async listTransitions(query: TransitionQuery = {}): Promise<TransitionRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (query.afterSeq !== undefined) {
      where.push("seq > ?");
      args.push(query.afterSeq);
    }
    if (query.entityId !== undefined) {
      where.push("workstream_id IS NOT DISTINCT FROM ? AND entity_id = ?");
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
    let sql = `SELECT * FROM transitions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq ${query.newestFirst ? "DESC" : "ASC"}`;
    if (query.limit !== undefined) {
      sql += " LIMIT ?";
      args.push(query.limit);
    }
    return (await this.q.all(sql, args)).map(rowToTransition);
  }

  async listOutcomes(afterSeq: number, limit: number, starts: boolean): Promise<TaskOutcome[]> {
    // The handler and breaker are the task's current ones: a fallback switch changes them, and
    // the outcome is then credited to what runs now, which is close enough for patterns.
    return this.q.all<TaskOutcome>(
      `SELECT r.seq, r.at, r.entity_id AS "taskId", r.workstream_id AS "workstreamId",
         CASE WHEN r.event = 'task_started' THEN 'started'
              WHEN r.event IN (${sqlList(COMPLETION_EVENTS)}) THEN 'ok' ELSE 'failed' END AS kind,
         ${this.dialect.jsonText("r.detail", ["failure", "category"])} AS category, t.handler, t.breaker, t.resources
       FROM transitions r JOIN tasks t ON t.id = r.entity_id
       WHERE r.seq > ? AND r.entity = 'task'
         AND r.event IN (${starts ? "'task_started', " : ""}${sqlList(COMPLETION_EVENTS)}, ${sqlList(FAILED_ATTEMPT_EVENTS)})
       ORDER BY r.seq LIMIT ?`,
      [afterSeq, limit],
    );
  }

  async lastSeq(): Promise<number> {
    const row = await this.q.get<{ seq: number | null }>("SELECT MAX(seq) AS seq FROM transitions");
    return row?.seq ?? 0;
  }

  async listInterventions(limit = 1000): Promise<InterventionRecord[]> {
    return (
      await this.q.all("SELECT * FROM interventions ORDER BY at, rowid LIMIT ?", [limit])
    ).map(rowToIntervention);
  }

  async countEvents(event: string, workstreamId?: string): Promise<Map<string, number>> {
    const rows =
      workstreamId === undefined
        ? await this.q.all<{ entity_id: string; n: number }>(
            "SELECT entity_id, COUNT(*) AS n FROM transitions WHERE event = ? GROUP BY entity_id",
            [event],
          )
        : await this.q.all<{ entity_id: string; n: number }>(
            "SELECT entity_id, COUNT(*) AS n FROM transitions WHERE event = ? AND workstream_id = ? GROUP BY entity_id",
            [event, workstreamId],
          );
    return new Map(rows.map((r) => [r.entity_id, r.n]));
  }

  // ---------------------------------------------------------------- integrity

  async snapshot(): Promise<StateSnapshot> {
    return this.readState();
  }

  async replay(): Promise<StateSnapshot> {
    return this.replayLog();
  }

  /**
   * The state as stored, liveness left out: in one consistent read, or in the open transaction
   * `q`. @internal
   */
  async readState(q?: Queryable): Promise<StateSnapshot> {
    const read = async (db: Queryable) => {
      const snap = emptySnapshot();
      for (const kind of ENTITY_KINDS) {
        const { table } = ENTITY_TABLES[kind];
        const into = snap[table] as Record<string, unknown>;
        for (const r of await db.all(`SELECT * FROM ${table}`)) {
          const record = rowToEntity(kind, r);
          into[record.id as string] = withoutLiveness(kind as EntityKind, record);
        }
      }
      return snap;
    };
    return q ? read(q) : this.transaction("read", read);
  }

  /** The state the log describes, rebuilt from its first record. @internal */
  async replayLog(q: Queryable = this.q): Promise<StateSnapshot> {
    const snap = emptySnapshot();
    await this.walkLog(q, (r) => {
      applyTransition(snap, rowToTransition(r));
      return true;
    });
    return normalizeReplayed(snap);
  }

  async verifyChain(): Promise<ChainReport> {
    const v = new ChainVerifier();
    await this.walkLog(this.q, (r) => v.push(rowToRawTransition(r)));
    return v.report();
  }

  /** Feeds every log row to `visit` in seq order, a page at a time, until it returns false. */
  private async walkLog(q: Queryable, visit: (row: Row) => boolean): Promise<void> {
    let after = 0;
    for (;;) {
      const page = await q.all("SELECT * FROM transitions WHERE seq > ? ORDER BY seq LIMIT ?", [
        after,
        LOG_PAGE,
      ]);
      for (const r of page) if (!visit(r)) return;
      if (page.length < LOG_PAGE) return;
      after = page.at(-1)!.seq as number;
    }
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
    if (!options.dryRun) {
      // Planned first: a refused rollback, or one with nothing to change, takes no backup.
      const plan = await rollbackWorkstream(this, workstreamId, to, who, {
        ...options,
        dryRun: true,
      });
      const changes = plan.changes.length > 0 || plan.workstream.from !== plan.workstream.to;
      if (changes) await this.backupBeforeRollback(workstreamId);
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

  // ---------------------------------------------------------------- recovery strategies

  async listBreakers(): Promise<BreakerRecord[]> {
    return listBreakerRows(this.q);
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
    if (!(await anyDueForProbe(this))) return [];
    return this.write((tx) => openDueProbes(tx, "monitor"));
  }

  async reviveTasks(options: RevivalOptions): Promise<Revival[]> {
    return reviveTasks(this, options);
  }

  async getDegradation(): Promise<DegradationRecord> {
    return readDegradation(this.q);
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
    return listPatterns(this.q, status);
  }

  async judgePattern(
    id: string,
    verdict: "confirmed" | "false_positive",
    reason: string,
  ): Promise<void> {
    await judgePattern(this, id, verdict, reason);
  }

  // ---------------------------------------------------------------- workers (operator surface)

  async getWorker(id: string): Promise<WorkerRecord | null> {
    return getWorker(this.q, id);
  }

  async listLeases(workerId?: string): Promise<LeaseView[]> {
    return listLeases(this.q, workerId);
  }

  async requestWorkerShutdown(
    workerId: string,
    options: WorkerShutdownOptions,
    who: Actor,
  ): Promise<WorkerShutdown> {
    return requestWorkerShutdown(this, workerId, options, who);
  }

  async requestWorkerRestart(workerId: string, who: Actor): Promise<WorkerRecord> {
    return requestWorkerRestart(this, workerId, who);
  }

  // ---------------------------------------------------------------- stalls

  async detectStalls(defaultStallAfterMs: number): Promise<StallReport[]> {
    return detectStalls(this, defaultStallAfterMs);
  }

  // ---------------------------------------------------------------- resources

  async listResources(): Promise<ResourceView[]> {
    return listResources(this);
  }

  async setResourceLimit(id: string, maxHolders: number, who: Actor): Promise<ResourceRecord> {
    return setResourceLimit(this, id, maxHolders, who);
  }

  async markResource(
    id: string,
    available: boolean,
    reason: string,
    who: Actor | { actor: string },
  ): Promise<ResourceRecord | null> {
    return markResource(this, id, available, reason, who);
  }

  async refreshResources(): Promise<ResourceRecord[]> {
    return refreshResources(this);
  }
}

/** Event names as an SQL list of literals (they are fixed identifiers, never user input). */
function sqlList(events: Iterable<string>): string {
  return [...events].map((e) => `'${e}'`).join(", ");
}

function pickState(t: TaskRecord) {
  return {
    status: t.status,
    attempts: t.attempts,
    maxAttempts: t.retry.maxAttempts,
    timeoutMs: t.timeoutMs,
  };
}
