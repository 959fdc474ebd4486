import pg from "pg";
import type { Clock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import type { BackupInfo } from "../../state/backups.js";
import type { JournalTransition } from "../../state/journal.js";
import type { Queryable, Row, SqlDialect } from "../sql/queryable.js";
import type { ExchangeRequest, ExchangeResult } from "../store.js";
import { SqlStore } from "../sql/SqlStore.js";
import {
  type ChainHead,
  groupByShape,
  type PreparedChange,
  type Tx,
  type WriteShape,
} from "../sql/tx.js";
import { clientConfig, lockKey, type PgLocation, parsePgUrl, queryable } from "./connection.js";
import { redact } from "../url.js";
import { DbClock } from "./db-clock.js";
import { type CompletedRow, exchange as setBasedExchange } from "./exchange.js";
import { PG_MIGRATIONS } from "./migrations.js";
import { Notifications } from "./notifications.js";

/** Options for opening a PostgreSQL store. */
export interface PgStoreOptions {
  /** Time for tests; by default the database server's clock ({@link DbClock}). */
  clock?: Clock;
  /** Most connections this process opens (default 10). */
  poolSize?: number;
}

/** PostgreSQL's spelling of what the dialects spell differently. */
const PG_DIALECT: SqlDialect = {
  jsonText: (column, path) => `(${column}::jsonb #>> '{${path.join(",")}}')`,
  jsonNumber: (column, path) => `(${column}::jsonb #>> '{${path.join(",")}}')::double precision`,
  jsonFlag: (column, path) =>
    `(CASE (${column}::jsonb #> '{${path.join(",")}}') WHEN 'true'::jsonb THEN 1 WHEN 'false'::jsonb THEN 0 END)`,
  inArray: (column) => `${column} = ANY(?::text[])`,
  jsonSubsetOf: (column) => `${column}::jsonb <@ ?::jsonb`,
  needsMet: (column) =>
    `NOT EXISTS (SELECT 1 FROM jsonb_array_elements(${column}::jsonb) AS need WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(need) AS r WHERE r.value <> ALL (ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))))`,
  lockRows: " FOR UPDATE",
  arrayParam: (values) => values,
  jsonRows: (alias, columns) =>
    `json_to_recordset(?::json) AS ${alias}(${columns.map(([c, t]) => `${c} ${t}`).join(", ")})`,
};

/** Advisory lock classes (the first key of the two-key form), so Mend's never collide. */
const WRITE_LOCK = 0x4d454e44;
const MIGRATION_LOCK = 0x4d454d47;
const LEADER_LOCK = 0x4d454c44;

/** How long a contender waits for a terminated leader's session to end and free the lock. */
const TAKEOVER_WAIT_MS = 2_000;

/** The result of a simple-protocol query's last statement. */
function lastResult(r: pg.QueryResult | pg.QueryResult[]): pg.QueryResult {
  return Array.isArray(r) ? r[r.length - 1]! : r;
}

/** Whether a connection still answers. */
async function alive(client: pg.Client): Promise<boolean> {
  try {
    await client.query("SELECT 1");
    return true;
  } catch {
    await client.end().catch(() => undefined);
    return false;
  }
}

/** Largest record batch, as JSON, sent as a literal with the COMMIT (see appendRecords). */
const INLINE_RECORDS_BYTES = 8_192;

/** About a record's JSON beyond its data and detail: its keys, ids, states, event and actor. */
const RECORD_FRAME_BYTES = 300;

/** `(v1, v2, …)` with each value as an SQL literal; null when one has no literal form here. */
function literalRow(values: readonly unknown[]): string | null {
  const out: string[] = [];
  for (const v of values) {
    if (v === null) out.push("NULL");
    else if (typeof v === "string") out.push(pg.escapeLiteral(v));
    else if (typeof v === "number" && Number.isFinite(v)) out.push(String(v));
    else return null;
  }
  return `(${out.join(", ")})`;
}

/**
 * Records as one JSON array of `transitions` rows, each with its place in the transaction (`i`):
 * APPEND_SQL takes their seq and hash, `append_chained` numbers and hashes them by `i`.
 */
function recordRows(records: readonly JournalTransition[]): string {
  return JSON.stringify(
    records.map((r, i) => ({
      i,
      seq: r.seq,
      at: r.at,
      entity: r.entity,
      entity_id: r.entityId,
      workstream_id: r.workstreamId,
      from_state: r.from,
      to_state: r.to,
      event: r.event,
      severity: r.severity,
      actor: r.actor,
      data: r.dataJson,
      detail: r.detailJson,
      hash: r.hash,
    })),
  );
}

/**
 * A transaction's records in one statement whatever their number (one JSON array of rows, see
 * appendRecords), and the log's new head with them.
 */
const APPEND_SQL = `WITH appended AS (
    INSERT INTO transitions (seq, at, entity, entity_id, workstream_id, from_state, to_state, event, severity, actor, data, detail, hash)
    SELECT * FROM json_to_recordset(?::json) AS r(seq bigint, at bigint, entity text, entity_id text,
      workstream_id text, from_state text, to_state text, event text, severity text, actor text,
      data text, detail text, hash text)
  )
  UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1`;

/**
 * The store for several machines: tables in one schema of a PostgreSQL database, shared by every
 * worker and monitor that points at it. Writers exclude each other with a transaction-scoped
 * advisory lock, so each transaction sees what the ones before it committed, as on SQLite; idle
 * workers are woken with LISTEN/NOTIFY; one monitor leads, holding a session advisory lock that
 * the server releases when its connection ends. Time is the server's ({@link DbClock}).
 */
export class PgStore extends SqlStore {
  readonly url: string;
  readonly dialect = PG_DIALECT;
  readonly backupsSupported = false;
  readonly q: Queryable;
  private readonly pool: pg.Pool;
  private readonly notifications: Notifications;
  /** Leaderships this process holds: each a connection holding its session advisory lock. */
  private readonly leaderships = new Map<string, pg.Client>();
  private readonly dbClock: DbClock | null;
  /** How each kind of transaction starts: writers exclude each other through an advisory lock. */
  private readonly begin: Record<"write" | "shared" | "read", string>;
  /** Each table's columns' types, for the casts of set-based writes. @internal */
  readonly columnTypes: Map<string, Map<string, string>>;

  private constructor(
    url: string,
    private readonly location: PgLocation,
    pool: pg.Pool,
    clock: Clock,
    dbClock: DbClock | null,
    columnTypes: Map<string, Map<string, string>>,
  ) {
    super(clock);
    this.url = redact(url);
    this.pool = pool;
    this.q = queryable(pool);
    this.dbClock = dbClock;
    this.columnTypes = columnTypes;
    const lock = `${WRITE_LOCK}, ${lockKey(location.schema)}`;
    this.begin = {
      write: `BEGIN; SELECT pg_advisory_xact_lock(${lock})`,
      // Workers' round trips touch a few rows by key, and must whatever the statistics say: a
      // queue that just filled up looks empty to the planner, and its plans (cached per
      // connection) would then fetch and sort every queued task to claim a few (8 ms rather than
      // 0.1 ms for 5,000 queued), or scan the table for each batch update. Index walks only.
      shared: `BEGIN; SELECT pg_advisory_xact_lock_shared(${lock}); SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off`,
      read: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    this.notifications = new Notifications(location, `mend_wake_${location.schema}`);
  }

  /** Connects, creates the schema and migrates it as needed, and measures the server's clock. */
  static async open(url: string, options: PgStoreOptions = {}): Promise<PgStore> {
    const location = parsePgUrl(url);
    const pool = new pg.Pool({ ...clientConfig(location), max: options.poolSize ?? 10 });
    // An idle connection the server dropped: the pool replaces it; nothing to crash over.
    pool.on("error", () => undefined);
    try {
      await migrate(pool, location);
    } catch (err) {
      await pool.end();
      throw unavailable(url, err);
    }
    const columnTypes = await readColumnTypes(pool, location.schema);
    let dbClock: DbClock | null = null;
    if (!options.clock) {
      dbClock = new DbClock(async () => {
        const r = await pool.query<{ now: number }>(
          "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now",
        );
        return r.rows[0]!.now;
      });
      await dbClock.start();
    }
    return new PgStore(url, location, pool, options.clock ?? dbClock!, dbClock, columnTypes);
  }

  // ---------------------------------------------------------------- transactions

  protected async transaction<T>(
    mode: "write" | "shared" | "read",
    fn: (q: Queryable, opened: Row[]) => Promise<T>,
    opening?: string,
  ): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    // The pool listens for a client's errors only while it is idle. A connection the server ends
    // while it is checked out here (pg_terminate_backend, a restart, a network failure) would
    // emit an 'error' nobody handles, which kills the process. The failure reaches this
    // transaction through its next statement anyway; the listener keeps it, so the connection is
    // released as broken and the pool drops it, even when it broke after the COMMIT.
    const onError = (err: Error) => {
      broken ??= err;
    };
    client.on("error", onError);
    const atCommit: string[] = [];
    // The start (with `opening`) and the end (with what was deferred to it) are one round trip
    // each: the simple protocol runs several statements in one message, and stops at the first
    // that fails. Without `opening`, the start waits for the first statement that needs an
    // answer, and goes with the end when none does (a small submission: one round trip).
    let begun = false;
    const direct = queryable(client);
    const begin = async () => {
      if (begun) return;
      begun = true;
      await client.query(this.begin[mode]);
    };
    const q: Queryable =
      opening !== undefined
        ? direct
        : {
            async get(sql, params) {
              await begin();
              return direct.get(sql, params);
            },
            async all(sql, params) {
              await begin();
              return direct.all(sql, params);
            },
            async run(sql, params) {
              await begin();
              return direct.run(sql, params);
            },
          };
    this.atCommit.set(q, atCommit);
    try {
      let opened: Row[] = [];
      if (opening !== undefined) {
        begun = true;
        opened = lastResult(await client.query(`${this.begin[mode]}; ${opening}`)).rows;
      }
      const result = await fn(q, opened);
      if (atCommit.length > 0 || begun) {
        if (!begun) atCommit.unshift(this.begin[mode]);
        begun = true;
        atCommit.push("COMMIT");
        await client.query(atCommit.join(";\n"));
      }
      return result;
    } catch (err) {
      try {
        if (begun) await client.query("ROLLBACK");
      } catch (rollbackErr) {
        // The connection itself failed: it must not go back to the pool.
        broken = rollbackErr as Error;
      }
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  /** Statements (parameters inlined) each open transaction runs with its COMMIT. */
  private readonly atCommit = new WeakMap<Queryable, string[]>();

  /** Runs `sql` with the transaction's COMMIT, in the same round trip. */
  private deferToCommit(q: Queryable, sql: string): void {
    const pending = this.atCommit.get(q);
    if (!pending) throw new MendError("internal", "no open transaction to defer a statement to");
    pending.push(sql);
  }

  /** Settles and claims set-based where it can (./exchange.ts). */
  override exchange(req: ExchangeRequest): Promise<ExchangeResult> {
    return setBasedExchange(this, req, () => super.exchange(req));
  }

  /** @internal */
  async lockChainHead(q: Queryable): Promise<ChainHead> {
    return (await q.get<ChainHead>("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"))!;
  }

  /**
   * The records go as one JSON array of rows: serialized natively on both sides, a fraction of
   * the cost of escaping thirteen text arrays. A few records (a submission, an idle worker's
   * claim) go as a literal with the COMMIT, a round trip less; many as a parameter of a prepared
   * statement, as the server parses a long literal more slowly than the round trip it saves.
   * @internal
   */
  async appendRecords(q: Queryable, records: JournalTransition[], head: ChainHead): Promise<void> {
    const rows = recordRows(records);
    if (rows.length > INLINE_RECORDS_BYTES) {
      await q.run(APPEND_SQL, [rows, head.seq, head.hash]);
      return;
    }
    let n = 0;
    const values = [pg.escapeLiteral(rows), String(head.seq), pg.escapeLiteral(head.hash)];
    this.deferToCommit(
      q,
      APPEND_SQL.replace(/\?/g, () => values[n++]!),
    );
  }

  /**
   * A few records (a submission of a few tasks, an idle worker's claim, a small batch) go to
   * `append_chained` with the COMMIT: the server numbers and chains them as the transaction ends
   * (migration v4), which saves the round trip that would read the head. Many stay with the
   * worker, which hashes them off the server's CPU. @internal
   */
  override chainOnServer(q: Queryable, records: readonly JournalTransition[]): boolean {
    // A bound from the variable parts first, so a large batch is not serialized twice.
    let size = 0;
    for (const r of records)
      size += RECORD_FRAME_BYTES + r.dataJson.length + (r.detailJson?.length ?? 0);
    if (size > INLINE_RECORDS_BYTES) return false;
    const rows = recordRows(records);
    if (rows.length > INLINE_RECORDS_BYTES) return false;
    this.deferToCommit(q, `SELECT append_chained(${pg.escapeLiteral(rows)})`);
    return true;
  }

  /**
   * A small creation's rows go as literal INSERTs with the COMMIT, beside its records (see
   * chainOnServer) and its NOTIFY: with the BEGIN sent lazily, a submission of a few tasks is one
   * round trip. A failing INSERT fails the COMMIT's message, and the transaction rolls back whole.
   * @internal
   */
  override insertWithCommit(tx: Tx, records: PreparedChange[], deps: [string, string][]): boolean {
    const statements: string[] = [];
    for (const batch of groupByShape(records)) {
      const shape = batch[0]!.shape;
      const rows = batch.map((p) => literalRow(p.values));
      if (!shape.insert || rows.includes(null)) return false;
      statements.push(
        `INSERT INTO ${shape.table} (${shape.columns.map((c) => `"${c}"`).join(", ")}) VALUES ${rows.join(", ")}`,
      );
    }
    if (deps.length > 0) {
      statements.push(
        `INSERT INTO task_deps (task_id, dep_id) VALUES ${deps.map(literalRow).join(", ")}`,
      );
    }
    if (statements.reduce((n, sql) => n + sql.length, 0) > INLINE_RECORDS_BYTES) return false;
    for (const sql of statements) this.deferToCommit(tx.q, sql);
    for (const p of records) tx.record(p);
    return true;
  }

  /** Tokens from a sequence: unique and increasing, taken without the log's head. */
  /** @internal */
  async leaseTokens(tx: Tx, n: number): Promise<number[]> {
    const rows = await tx.all<{ t: number }>(
      "SELECT nextval('lease_tokens') AS t FROM generate_series(1, ?::int)",
      [n],
    );
    return rows.map((r) => r.t);
  }

  /**
   * Writes a batch of one shape with one statement: the rows (new values, and for an update the
   * id and expected status) go as one JSON array, so the statement's text is the same whatever
   * the batch size and is parsed and planned once per connection. @internal
   */
  override async applyBatch(
    q: Queryable,
    shape: WriteShape,
    batch: PreparedChange[],
  ): Promise<number> {
    if (batch.length === 1) return q.run(shape.sql, batch[0]!.values);
    return q.run(this.batchSql(shape), [this.batchJson(shape, batch)]);
  }

  /**
   * Completes held tasks set-based (./exchange.ts): the batch UPDATE of their shape, each row
   * written only when the task is running under `tokens[i]` held by `workerId`, with no breaker,
   * fallbacks or quality threshold. Returns what the records need of the rows written. @internal
   */
  async completeHeld(
    q: Queryable,
    batch: PreparedChange[],
    tokens: number[],
    workerId: string,
  ): Promise<CompletedRow[]> {
    const shape = batch[0]!.shape;
    let sql = this.completionStatements.get(shape);
    if (!sql) {
      sql = this.batchUpdateSql(shape, ["token bigint"]);
      sql += ` AND t.lease_token = u.token AND t.lease_worker = ?
          AND t.breaker IS NULL AND t.fallbacks IS NULL AND t.quality_threshold IS NULL
        RETURNING t.id, t.workstream_id AS "workstreamId", t.attempts, t.revivals,
          EXISTS (SELECT 1 FROM task_deps d WHERE d.dep_id = t.id) AS "hasDependents"`;
      this.completionStatements.set(shape, sql);
    }
    const json = this.batchJson(shape, batch, (i) => ({ token: tokens[i] }));
    return q.all<CompletedRow>(sql, [json, workerId]);
  }

  private readonly completionStatements = new Map<WriteShape, string>();
  private readonly batchStatements = new Map<WriteShape, string>();

  /**
   * A batch's rows as one JSON array: per row, a key per column (`v0`, `v1`, …), then for an
   * update the id and expected status, with `extra(i)`'s fields.
   */
  private batchJson(
    shape: WriteShape,
    batch: PreparedChange[],
    extra?: (i: number) => Record<string, unknown>,
  ): string {
    const keys = shape.columns.map((_, j) => `v${j}`);
    if (!shape.insert) keys.push("id", "expected");
    return JSON.stringify(
      batch.map((p, i) => {
        const row: Record<string, unknown> = extra ? extra(i) : {};
        for (let c = 0; c < keys.length; c++) row[keys[c]!] = p.values[c];
        return row;
      }),
    );
  }

  /** The set-based statement of a shape, built once. */
  private batchSql(shape: WriteShape): string {
    let sql = this.batchStatements.get(shape);
    if (sql) return sql;
    if (shape.insert) {
      sql = `INSERT INTO ${shape.table} (${shape.columns.map((c) => `"${c}"`).join(", ")})
        SELECT * FROM json_to_recordset(?::json) AS u(${this.recordColumns(shape).join(", ")})`;
    } else {
      sql = this.batchUpdateSql(shape);
    }
    this.batchStatements.set(shape, sql);
    return sql;
  }

  /** An update shape's batch UPDATE, its rows' `extra` columns declared after the shape's. */
  private batchUpdateSql(shape: WriteShape, extra: string[] = []): string {
    const columns = [...this.recordColumns(shape), "id text", "expected text", ...extra];
    return `UPDATE ${shape.table} AS t SET ${shape.columns.map((c, j) => `"${c}" = u.v${j}`).join(", ")}
        FROM json_to_recordset(?::json) AS u(${columns.join(", ")})
        WHERE t.id = u.id AND t.status = u.expected`;
  }

  /** A shape's columns as a JSON record's keys (`v0`, `v1`, …) with their types. */
  private recordColumns(shape: WriteShape): string[] {
    const types = this.columnTypes.get(shape.table)!;
    return shape.columns.map((c, j) => `v${j} ${types.get(c)}`);
  }

  /** @internal */
  override async insertDependencies(q: Queryable, deps: [string, string][]): Promise<void> {
    if (deps.length === 0) return;
    await q.run(
      "INSERT INTO task_deps (task_id, dep_id) SELECT * FROM unnest(?::text[], ?::text[])",
      [deps.map((d) => d[0]), deps.map((d) => d[1])],
    );
  }

  protected override async beforeCommit(tx: Tx): Promise<void> {
    // Delivered when the transaction commits, and only then.
    if (tx.wakeRequested) {
      this.deferToCommit(
        tx.q,
        `SELECT pg_notify(${pg.escapeLiteral(this.notifications.channel)}, '')`,
      );
    }
  }

  protected async backupBeforeRollback(): Promise<void> {
    // The server's own backups cover a PostgreSQL store; see backup().
  }

  // ---------------------------------------------------------------- leadership

  /**
   * Leadership is a session advisory lock held on a connection of its own, plus a `leaders` row
   * the holder renews. When the leader's process dies its connection closes and the server
   * releases the lock, so another process takes over at its next attempt. A leader that stops
   * renewing while its connection lives on (hung, or cut off from the clock) is ended when its
   * row expires: the next contender terminates its session to free the lock.
   */
  override async acquireLeadership(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const key = `${name}\0${holder}`;
    const lock = lockKey(`${this.location.schema}:${name}`);
    let client = this.leaderships.get(key);
    if (client && !(await alive(client))) {
      this.leaderships.delete(key);
      client = undefined;
    }
    if (!client) {
      client = (await this.tryLock(lock)) ?? undefined;
      if (!client) {
        const row = await this.q.get<{ expires_at: number }>(
          "SELECT expires_at FROM leaders WHERE name = ?",
          [name],
        );
        if (!row || row.expires_at >= this.clock.now()) return false;
        await this.q.get(
          `SELECT pg_terminate_backend(pid) FROM pg_locks
           WHERE locktype = 'advisory' AND classid = ?::bigint::oid AND objid = (?::bigint & 4294967295)::oid
             AND objsubid = 2 AND granted`,
          [LEADER_LOCK, lock],
        );
        client = (await this.tryLock(lock, TAKEOVER_WAIT_MS)) ?? undefined;
        if (!client) return false;
      }
      this.leaderships.set(key, client);
    }
    await this.q.run(
      "INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
      [name, holder, this.clock.now() + ttlMs],
    );
    return true;
  }

  /**
   * A new connection holding the lock, or null when another session holds it; waits up to
   * `waitMs` for a terminated holder's session to end.
   */
  private async tryLock(lock: number, waitMs = 0): Promise<pg.Client | null> {
    const client = new pg.Client(clientConfig(this.location));
    client.on("error", () => undefined);
    try {
      await client.connect();
      const deadline = Date.now() + waitMs;
      for (;;) {
        const r = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [
          LEADER_LOCK,
          lock,
        ]);
        if (r.rows[0]!.ok) return client;
        if (Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    } catch {
      // Not reachable now: not the leader; the next attempt tries again.
    }
    await client.end().catch(() => undefined);
    return null;
  }

  override async releaseLeadership(name: string, holder: string): Promise<void> {
    const key = `${name}\0${holder}`;
    const client = this.leaderships.get(key);
    if (!client) return;
    this.leaderships.delete(key);
    await this.q.run("DELETE FROM leaders WHERE name = ? AND holder = ?", [name, holder]);
    // Ending the session releases its advisory lock.
    await client.end().catch(() => undefined);
  }

  // ---------------------------------------------------------------- wake-ups

  onWake(fn: () => void): () => void {
    return this.notifications.subscribe(fn);
  }

  // ---------------------------------------------------------------- backups and validation

  async backup(): Promise<BackupInfo> {
    throw new MendError(
      "refused",
      "a PostgreSQL store is backed up by the server's own tools (pg_dump, or base backups with WAL archiving for point-in-time recovery); Mend's backups are for the SQLite store",
      { url: this.url },
    );
  }

  async listBackups(): Promise<BackupInfo[]> {
    return [];
  }

  /** Checks that the log's head row agrees with the log. */
  async integrityCheck(): Promise<string[]> {
    const problems: string[] = [];
    const head = await this.q.get<ChainHead>("SELECT seq, hash FROM chain_head WHERE id = 1");
    const last = await this.q.get<ChainHead>(
      "SELECT seq, hash FROM transitions ORDER BY seq DESC LIMIT 1",
    );
    if (!head) problems.push("chain_head has no row");
    else if ((last?.seq ?? 0) !== head.seq || (last && last.hash !== head.hash)) {
      problems.push(
        `chain_head says the log ends at seq ${head.seq}, but its last record is ${last?.seq ?? 0}`,
      );
    }
    return problems;
  }

  async close(): Promise<void> {
    this.dbClock?.stop();
    await this.notifications.close();
    for (const key of [...this.leaderships.keys()]) {
      const [name, holder] = key.split("\0") as [string, string];
      await this.releaseLeadership(name, holder);
    }
    await this.pool.end();
  }
}

/**
 * Creates the schema and applies the migrations it lacks, in one transaction under an advisory
 * lock: processes opening a new store at once apply each migration exactly once.
 */
async function migrate(pool: pg.Pool, location: PgLocation): Promise<void> {
  const client = await pool.connect();
  // As in a transaction: a connection ended meanwhile fails the next statement, not the process.
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken ??= err;
  };
  client.on("error", onError);
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock($1, $2)", [
      MIGRATION_LOCK,
      lockKey(location.schema),
    ]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${location.schema}`);
    await client.query("CREATE TABLE IF NOT EXISTS mend_schema (version integer NOT NULL)");
    const row = (await client.query<{ version: number }>("SELECT version FROM mend_schema"))
      .rows[0];
    const version = row?.version ?? 0;
    if (version > PG_MIGRATIONS.length) {
      throw new MendError(
        "store_incompatible",
        `schema ${location.schema} has version ${version}, newer than this Mend understands (${PG_MIGRATIONS.length}); upgrade Mend or use another schema`,
        { schema: location.schema, version, supported: PG_MIGRATIONS.length },
      );
    }
    for (let v = version; v < PG_MIGRATIONS.length; v++) await client.query(PG_MIGRATIONS[v]!);
    if (!row) await client.query("INSERT INTO mend_schema (version) VALUES ($1)", [0]);
    await client.query("UPDATE mend_schema SET version = $1", [PG_MIGRATIONS.length]);
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}

/** Every column's type in the schema, by table. */
async function readColumnTypes(
  pool: pg.Pool,
  schema: string,
): Promise<Map<string, Map<string, string>>> {
  const r = await pool.query<{ table_name: string; column_name: string; data_type: string }>(
    "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = $1",
    [schema],
  );
  const types = new Map<string, Map<string, string>>();
  for (const c of r.rows) {
    let table = types.get(c.table_name);
    if (!table) types.set(c.table_name, (table = new Map()));
    table.set(c.column_name, c.data_type);
  }
  return types;
}

/** A failure to reach or set up the database, as an error a person can act on. */
function unavailable(url: string, err: unknown): Error {
  if (err instanceof MendError) return err;
  return new MendError(
    "store_unavailable",
    `cannot open the PostgreSQL store at ${redact(url)}: ${(err as Error).message}`,
    { url: redact(url) },
  );
}
