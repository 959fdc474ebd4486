/**
 * One write transaction of a SQL store and its write path (DESIGN.md invariant 1): every state
 * change goes through {@link Tx.transition}, which writes the row guarded by its expected current
 * state and adds one record to the hash-chained log. Records are chained and written together
 * when the transaction ends ({@link Tx.flush}), so the log's head is locked only for that last
 * step: on PostgreSQL, transactions run side by side until they append.
 */
import { MendError } from "../../errors.js";
import { newId } from "../../model/ids.js";
import type { InterventionRecord, TaskRecord, WorkstreamRecord } from "../../model/records.js";
import { assertTransition, type EntityKind, type WorkerStatus } from "../../model/states.js";
import { EVENTS, type EventName } from "../../observe/events.js";
import type { JournalTransition } from "../../state/journal.js";
import { transitionHash } from "../chain.js";
import type { Actor } from "../store.js";
import {
  ENTITY_TABLES,
  encodeField,
  INSERT_INTERVENTION,
  interventionRow,
  rowToTask,
  rowToWorkstream,
  type ColumnKind,
} from "./codec.js";
import type { Queryable, Row } from "./queryable.js";
import { LIVENESS } from "../replay.js";
import type { SqlStore } from "./SqlStore.js";

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

/** A transition's row write and record data, computed without the database. */
export interface PreparedChange {
  change: Change;
  shape: WriteShape;
  values: unknown[];
  dataJson: string;
  at: number;
}

/** The INSERT or guarded UPDATE for one entity and field list, with how each field is encoded. */
export interface WriteShape {
  sql: string;
  table: string;
  /** The columns written, in the order of a prepared change's values. */
  columns: string[];
  /** An INSERT (a creation); else an UPDATE guarded by id and status (two more values). */
  insert: boolean;
  kinds: ColumnKind[];
  /** Fields left out of the log (heartbeat-maintained). */
  liveness: boolean[];
}

/** The log's last record, as the next record chains from it. */
export interface ChainHead {
  seq: number;
  hash: string;
}

/** Terminal statuses that let dependents run. Non-critical failures count, with a warning. */
export const SATISFIED_SQL = `(t.status IN ('completed','skipped') OR (t.status = 'failed' AND t.critical = 0))`;

/** An open write transaction. Created by {@link SqlStore.write}; never outlives it. */
export class Tx implements Queryable {
  /** Records of this transaction, in order, not yet in the log. */
  readonly records: JournalTransition[] = [];
  /** Interventions written in this transaction (already inserted). */
  readonly interventions: InterventionRecord[] = [];
  /** Whether idle workers should look for work once this transaction commits. */
  wakeRequested = false;
  private head: ChainHead | null = null;

  constructor(
    readonly store: SqlStore,
    /** The transaction's connection. @internal */
    readonly q: Queryable,
    /** The rows of the statement the transaction opened with (see {@link SqlStore.write}). */
    readonly opened: Row[] = [],
  ) {}

  get<T = Row>(sql: string, params?: readonly unknown[]): Promise<T | undefined> {
    return this.q.get<T>(sql, params);
  }

  all<T = Row>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.q.all<T>(sql, params);
  }

  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.q.run(sql, params);
  }

  /** The store's time now. */
  now(): number {
    return this.store.clock.now();
  }

  /** Asks waiting workers to look for work once this transaction commits. */
  wake(): void {
    this.wakeRequested = true;
  }

  /**
   * The one write path: checks the transition against the state machine, writes the new state
   * guarded by the expected current state, and queues its record. Zero rows changed is a typed
   * refusal, never silence.
   */
  async transition(c: Change): Promise<void> {
    await this.apply(this.store.prepare(c));
  }

  /** Writes a transition prepared ahead (a submission prepares before taking any lock). */
  async apply(p: PreparedChange): Promise<void> {
    const c = p.change;
    if ((await this.q.run(p.shape.sql, p.values)) !== 1 && c.from !== null) {
      throw new MendError("refused", `${c.kind} ${c.id} is no longer ${c.from}`, {
        kind: c.kind,
        id: c.id,
        expected: c.from,
      });
    }
    this.record(p);
  }

  /**
   * Writes many prepared transitions, each shape's in one batch where the dialect can; refused
   * whole when any row was no longer in its expected state. Records keep the given order.
   */
  async applyMany(prepared: PreparedChange[]): Promise<void> {
    for (const batch of groupByShape(prepared)) {
      const changed = await this.store.applyBatch(this.q, batch[0]!.shape, batch);
      if (changed !== batch.length && batch[0]!.change.from !== null) {
        throw new MendError(
          "refused",
          `${batch.length - changed} of ${batch.length} ${batch[0]!.change.kind}s were no longer ${batch.map((p) => p.change.from).join("/")}`,
          { ids: batch.map((p) => p.change.id) },
        );
      }
    }
    for (const p of prepared) this.record(p);
  }

  /**
   * Queues the record of a transition whose row the caller wrote itself, in a set-based
   * statement that applied exactly this change (the PostgreSQL hot path).
   */
  record(p: PreparedChange): void {
    const c = p.change;
    this.records.push({
      seq: 0,
      at: p.at,
      entity: c.kind,
      entityId: c.id,
      workstreamId: c.workstreamId,
      from: c.from,
      to: c.to,
      event: c.event,
      severity: EVENTS[c.event],
      actor: c.actor,
      dataJson: p.dataJson,
      detailJson: c.detail ? JSON.stringify(c.detail) : null,
      hash: "",
    });
  }

  /** The seq the next record of this transaction will get; locks the log's head. */
  async nextSeq(): Promise<number> {
    return (await this.chainHead()).seq + this.records.length + 1;
  }

  private async chainHead(): Promise<ChainHead> {
    this.head ??= await this.store.lockChainHead(this.q);
    return this.head;
  }

  /**
   * Chains this transaction's records to the log's head and writes them; called once, as the
   * transaction ends. Numbers and hashes them here, unless the store chains them on its server
   * as the transaction commits ({@link SqlStore.chainOnServer}), which it may do only while this
   * transaction has not read the head.
   */
  async flush(): Promise<void> {
    if (this.records.length === 0) return;
    if (this.head === null && this.store.chainOnServer(this.q, this.records)) return;
    const head = await this.chainHead();
    let prev = head;
    for (const r of this.records) {
      r.seq = prev.seq + 1;
      r.hash = transitionHash(prev.hash, r);
      prev = r;
    }
    await this.store.appendRecords(this.q, this.records, { seq: prev.seq, hash: prev.hash });
  }

  /** Logs what a person did, with the state before and after. */
  async intervention(who: Actor, target: string, before: unknown, after: unknown): Promise<void> {
    const at = this.now();
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
    await this.q.run(INSERT_INTERVENTION, interventionRow(record));
    this.interventions.push(record);
  }

  // ---------------------------------------------------------------- reads in the transaction

  async getTaskRow(id: string): Promise<TaskRecord | null> {
    const row = await this.q.get("SELECT * FROM tasks WHERE id = ?", [id]);
    return row ? rowToTask(row) : null;
  }

  async requireTask(id: string): Promise<TaskRecord> {
    const t = await this.getTaskRow(id);
    if (!t) throw new MendError("not_found", `task ${id} not found`, { taskId: id });
    return t;
  }

  async getWorkstreamRow(id: string): Promise<WorkstreamRecord | null> {
    const row = await this.q.get("SELECT * FROM workstreams WHERE id = ?", [id]);
    return row ? rowToWorkstream(row) : null;
  }

  async workerStatus(id: string): Promise<WorkerStatus | null> {
    const row = await this.q.get<{ status: WorkerStatus }>(
      "SELECT status FROM workers WHERE id = ?",
      [id],
    );
    return row?.status ?? null;
  }

  /** Whether every dependency of the task is satisfied. */
  async depsSatisfied(taskId: string): Promise<boolean> {
    const open = await this.q.get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = ? AND NOT ${SATISFIED_SQL}`,
      [taskId],
    );
    return open!.n === 0;
  }
}

/** Prepared changes grouped by write shape (one statement text each), in first-seen order. */
export function groupByShape(prepared: readonly PreparedChange[]): PreparedChange[][] {
  const groups = new Map<WriteShape, PreparedChange[]>();
  for (const p of prepared) {
    const group = groups.get(p.shape);
    if (group) group.push(p);
    else groups.set(p.shape, [p]);
  }
  return [...groups.values()];
}

/** The INSERT or guarded UPDATE for an entity and a set of fields. */
export function writeShape(kind: EntityKind, insert: boolean, fields: string[]): WriteShape {
  const { table, columns } = ENTITY_TABLES[kind];
  const cols = fields.map((f) => {
    const col = columns[f];
    if (!col) throw new MendError("internal", `${kind} has no field ${f}`, { kind, field: f });
    return col;
  });
  // Quoted: `window` is a reserved word in PostgreSQL.
  const names = cols.map((c) => `"${c[0]}"`);
  const sql = insert
    ? `INSERT INTO ${table} (${names.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`
    : `UPDATE ${table} SET ${names.map((n) => `${n} = ?`).join(", ")} WHERE id = ? AND status = ?`;
  const live: readonly string[] = LIVENESS[kind];
  return {
    sql,
    table,
    columns: cols.map((c) => c[0]),
    insert,
    kinds: cols.map((c) => c[1]),
    liveness: fields.map((f) => live.includes(f)),
  };
}

/**
 * Everything about a transition that needs no database: the state machine's check, the row's
 * column values and the record's data (the patch as JSON, built from the encoded columns so each
 * JSON value, inputs can be large, is serialized once).
 */
export function prepareChange(c: Change, at: number, shape: (fields: string[]) => WriteShape) {
  assertTransition(c.kind, c.id, c.from, c.to);
  const patch: Record<string, unknown> = { ...c.patch, status: c.to };
  if (c.kind !== "worker") patch.updatedAt = at;
  const fields = Object.keys(patch);
  const s = shape(fields);
  const values = new Array<unknown>(fields.length);
  let dataJson = "{";
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i]!;
    const kind = s.kinds[i]!;
    const encoded = encodeField(kind, patch[field]);
    values[i] = encoded;
    if (s.liveness[i]) continue;
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
  return { change: c, shape: s, values, dataJson, at } satisfies PreparedChange;
}
