/**
 * The PostgreSQL schema against the SQLite one: applied to a fresh schema of a real server, it
 * must have every table and column SQLite has (bar the SQLite-only journal position), with the
 * same keys and indexes, so that shared SQL and the row codec work on both.
 */
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GENESIS_HASH } from "../src/store/chain.js";
import { PG_MIGRATIONS } from "../src/store/postgres/migrations.js";
import { SQLITE_MIGRATIONS } from "../src/store/sqlite/migrations.js";
import { freshSchema, PG_TEST_URL } from "./helpers/pg.js";

/** SQLite tables PostgreSQL does without: the journal position belongs to the SQLite file journal. */
const SQLITE_ONLY_TABLES = ["journal_position"];
/** Tables only PostgreSQL has, with their columns. */
const PG_ONLY_TABLES: Record<string, Column[]> = {
  chain_head: [
    { name: "id", type: "integer", notNull: true, default: null },
    { name: "seq", type: "bigint", notNull: true, default: null },
    { name: "hash", type: "text", notNull: true, default: null },
  ],
};
/** Tables the SQLite code reads `ORDER BY rowid`: PostgreSQL gives them a generated `rowid`. */
const ROWID_TABLES = ["interventions", "tasks", "workstreams"];
/** Indexes that name, last, columns SQLite's index holds implicitly (its rowid). */
const EXTRA_INDEX_COLUMNS: Record<string, string[]> = { tasks_claim: ["rowid"] };
const PG_TYPES: Record<string, string> = {
  INTEGER: "bigint",
  TEXT: "text",
  REAL: "double precision",
};

interface Column {
  name: string;
  type: string;
  notNull: boolean;
  default: string | null;
}

/** What is compared of a schema: tables with their columns (in order), keys and indexes. */
interface Schema {
  columns: Record<string, Column[]>;
  primaryKeys: Record<string, string[]>;
  /** `table.column -> table.column`, sorted. */
  foreignKeys: string[];
  /** Index name to its table, key columns (`name` or `name DESC`) and whether it is partial. */
  indexes: Record<string, { table: string; columns: string[]; partial: boolean }>;
}

/** The schema every SQLite migration produces, read back from an in-memory database. */
function sqliteSchema(): Schema {
  const db = new Database(":memory:");
  try {
    for (const m of SQLITE_MIGRATIONS) db.transaction(() => db.exec(m))();
    const tables = db
      .prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
      )
      .pluck()
      .all() as string[];
    const schema: Schema = { columns: {}, primaryKeys: {}, foreignKeys: [], indexes: {} };
    for (const table of tables) {
      const info = db.pragma(`table_info("${table}")`) as {
        name: string;
        type: string;
        notnull: number;
        dflt_value: string | null;
        pk: number;
      }[];
      schema.columns[table] = info.map((c) => ({
        name: c.name,
        type: c.type,
        // SQLite lets a TEXT PRIMARY KEY hold NULL (a legacy quirk); the store never writes one.
        notNull: c.notnull === 1 || c.pk > 0,
        default: c.dflt_value,
      }));
      schema.primaryKeys[table] = info
        .filter((c) => c.pk > 0)
        .sort((a, b) => a.pk - b.pk)
        .map((c) => c.name);
      const fks = db.pragma(`foreign_key_list("${table}")`) as {
        table: string;
        from: string;
        to: string;
      }[];
      for (const fk of fks) schema.foreignKeys.push(`${table}.${fk.from} -> ${fk.table}.${fk.to}`);
      const indexes = db.pragma(`index_list("${table}")`) as {
        name: string;
        origin: string;
        partial: number;
      }[];
      // origin 'c': made by CREATE INDEX, not for a primary key or unique constraint.
      for (const index of indexes.filter((i) => i.origin === "c")) {
        const keys = (
          db.pragma(`index_xinfo("${index.name}")`) as { name: string; desc: number; key: number }[]
        ).filter((k) => k.key === 1);
        schema.indexes[index.name] = {
          table,
          columns: keys.map((k) => (k.desc ? `${k.name} DESC` : k.name)),
          partial: index.partial === 1,
        };
      }
    }
    schema.foreignKeys.sort();
    return schema;
  } finally {
    db.close();
  }
}

/** The schema as PostgreSQL's catalogs describe `schema`. */
async function pgSchema(client: pg.Client, schema: string): Promise<Schema> {
  const out: Schema = { columns: {}, primaryKeys: {}, foreignKeys: [], indexes: {} };
  const tables = await client.query<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
    [schema],
  );
  for (const t of tables.rows) out.columns[t.table_name] = [];
  const columns = await client.query<{
    table_name: string;
    column_name: string;
    data_type: string;
    is_nullable: "YES" | "NO";
    column_default: string | null;
  }>(
    `SELECT table_name, column_name, data_type, is_nullable, column_default
       FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position`,
    [schema],
  );
  for (const c of columns.rows) {
    out.columns[c.table_name]?.push({
      name: c.column_name,
      type: c.data_type,
      notNull: c.is_nullable === "NO",
      // PostgreSQL shows a text default with its cast: '…'::text.
      default: c.column_default?.replace(/::text$/, "") ?? null,
    });
  }
  const keys = await client.query<{ table_name: string; column_name: string }>(
    `SELECT tc.table_name, k.column_name
       FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage k
         ON k.constraint_schema = tc.constraint_schema AND k.constraint_name = tc.constraint_name
      WHERE tc.table_schema = $1 AND tc.constraint_type = 'PRIMARY KEY'
      ORDER BY tc.table_name, k.ordinal_position`,
    [schema],
  );
  for (const k of keys.rows) (out.primaryKeys[k.table_name] ??= []).push(k.column_name);
  const fks = await client.query<{ fk: string }>(
    `SELECT format('%s.%s -> %s.%s', t.relname, a.attname, r.relname, ra.attname) AS fk
       FROM pg_constraint c
       JOIN pg_class t ON t.oid = c.conrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace
       JOIN pg_class r ON r.oid = c.confrelid
       JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
       JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
      WHERE c.contype = 'f' AND n.nspname = $1 AND cardinality(c.conkey) = 1`,
    [schema],
  );
  out.foreignKeys = fks.rows.map((r) => r.fk).sort();
  const indexes = await client.query<{
    name: string;
    table: string;
    columns: string[];
    partial: boolean;
  }>(
    // indoption bit 0 is DESC; pg_get_indexdef of one column leaves it out.
    `SELECT i.relname AS name, t.relname AS table, x.indpred IS NOT NULL AS partial,
            array(SELECT pg_get_indexdef(x.indexrelid, k, true)
                         || CASE WHEN x.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
                    FROM generate_series(1, x.indnkeyatts) k ORDER BY k) AS columns
       FROM pg_index x
       JOIN pg_class i ON i.oid = x.indexrelid
       JOIN pg_class t ON t.oid = x.indrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname = $1 AND NOT x.indisprimary`,
    [schema],
  );
  for (const i of indexes.rows) {
    out.indexes[i.name] = { table: i.table, columns: i.columns, partial: i.partial };
  }
  return out;
}

/** Applies every PostgreSQL migration to `schema`, each in its own transaction, as the store will. */
async function migrate(client: pg.Client, schema: string): Promise<void> {
  for (const migration of PG_MIGRATIONS) {
    await client.query("BEGIN");
    try {
      await client.query(`SET LOCAL search_path TO ${client.escapeIdentifier(schema)}`);
      await client.query(migration);
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK");
      throw err;
    }
  }
}

/** Runs `fn` in a transaction on `schema` and rolls it back, leaving the schema as it was. */
async function rolledBack<T>(client: pg.Client, schema: string, fn: () => Promise<T>): Promise<T> {
  await client.query("BEGIN");
  try {
    await client.query(`SET LOCAL search_path TO ${client.escapeIdentifier(schema)}`);
    return await fn();
  } finally {
    await client.query("ROLLBACK");
  }
}

describe("PostgreSQL migrations", () => {
  const client = new pg.Client(PG_TEST_URL);
  const drops: (() => Promise<void>)[] = [];
  let schema: string;
  let publicBefore: string[];
  const sqlite = sqliteSchema();

  const publicTables = async () =>
    (
      await client.query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
      )
    ).rows.map((r) => r.table_name);

  beforeAll(async () => {
    await client.connect();
    publicBefore = await publicTables();
    const fresh = await freshSchema();
    drops.push(fresh.drop);
    schema = fresh.schema;
    await migrate(client, schema);
  });

  afterAll(async () => {
    for (const drop of drops) await drop();
    await client.end();
  });

  it("has every SQLite table but the journal position's, and chain_head", async () => {
    const pgTables = Object.keys((await pgSchema(client, schema)).columns).sort();
    const expected = [
      ...Object.keys(sqlite.columns).filter((t) => !SQLITE_ONLY_TABLES.includes(t)),
      ...Object.keys(PG_ONLY_TABLES),
    ].sort();
    expect(pgTables).toEqual(expected);
    // The skip list names tables that exist: a renamed journal table would otherwise slip by.
    for (const t of SQLITE_ONLY_TABLES) expect(sqlite.columns).toHaveProperty(t);
  });

  it("has every SQLite column, in order (rowid aside), with the mapped type, nullability and default", async () => {
    const actual = (await pgSchema(client, schema)).columns;
    for (const [table, columns] of Object.entries(sqlite.columns)) {
      if (SQLITE_ONLY_TABLES.includes(table)) continue;
      const expected = columns.map((c) => ({
        ...c,
        type: PG_TYPES[c.type] ?? `unmapped ${c.type}`,
      }));
      // The rowid column comes where the first migration put it; later ones add columns after it.
      const rowid = { name: "rowid", type: "bigint", notNull: true, default: null };
      const found = actual[table] ?? [];
      expect(
        found.filter((c) => c.name === "rowid"),
        table,
      ).toEqual(ROWID_TABLES.includes(table) ? [rowid] : []);
      expect(
        found.filter((c) => c.name !== "rowid"),
        table,
      ).toEqual(expected);
    }
    for (const [table, columns] of Object.entries(PG_ONLY_TABLES)) {
      expect(actual[table], table).toEqual(columns);
    }
  });

  it("has SQLite's primary keys, foreign keys and indexes", async () => {
    const actual = await pgSchema(client, schema);
    const expectedKeys = Object.fromEntries(
      Object.entries(sqlite.primaryKeys).filter(([t]) => !SQLITE_ONLY_TABLES.includes(t)),
    );
    expect(actual.primaryKeys).toEqual({ ...expectedKeys, chain_head: ["id"] });
    expect(actual.foreignKeys).toEqual(sqlite.foreignKeys);
    const expectedIndexes = Object.fromEntries(
      Object.entries(sqlite.indexes).map(([name, index]) => [
        name,
        { ...index, columns: [...index.columns, ...(EXTRA_INDEX_COLUMNS[name] ?? [])] },
      ]),
    );
    expect(actual.indexes).toEqual(expectedIndexes);
  });

  it("numbers rows of the rowid tables in insertion order, with inserts that name their columns", async () => {
    const columns = await client.query<{ table_name: string; identity_generation: string }>(
      `SELECT table_name, identity_generation FROM information_schema.columns
        WHERE table_schema = $1 AND column_name = 'rowid' ORDER BY table_name`,
      [schema],
    );
    expect(columns.rows).toEqual(
      ROWID_TABLES.map((t) => ({ table_name: t, identity_generation: "ALWAYS" })),
    );
    const order = await rolledBack(client, schema, async () => {
      for (const id of ["w-b", "w-a", "w-c"]) {
        await client.query(
          "INSERT INTO workstreams (id, name, status, on_failure, created_at, updated_at) VALUES ($1, 'n', 'pending', 'stop', 1, 1)",
          [id],
        );
      }
      const rows = await client.query<{ id: string }>(
        "SELECT id FROM workstreams ORDER BY created_at, rowid",
      );
      return rows.rows.map((r) => r.id);
    });
    expect(order).toEqual(["w-b", "w-a", "w-c"]);
  });

  it("starts the chain at genesis, in one row, and fencing tokens at 1", async () => {
    const head = await client.query<{ id: number; seq: string; hash: string }>(
      `SELECT id, seq, hash FROM ${client.escapeIdentifier(schema)}.chain_head`,
    );
    // bigint arrives as a string from node-postgres unless a parser is installed.
    expect(head.rows.map((r) => ({ ...r, seq: Number(r.seq) }))).toEqual([
      { id: 1, seq: 0, hash: GENESIS_HASH },
    ]);
    const second = rolledBack(client, schema, () =>
      client.query(`INSERT INTO chain_head (id, seq, hash) VALUES (2, 0, 'x')`),
    );
    await expect(second).rejects.toThrow(/chain_head_id_check/);
    const tokens = await rolledBack(client, schema, async () => [
      Number((await client.query("SELECT nextval('lease_tokens') AS t")).rows[0].t),
      Number((await client.query("SELECT nextval('lease_tokens') AS t")).rows[0].t),
    ]);
    expect(tokens).toEqual([1, 2]);
  });

  it("applies again in a second schema without touching the first or public", async () => {
    const other = await freshSchema();
    drops.push(other.drop);
    // Draw a token in the first schema: the second's sequence must still start at 1.
    await client.query(`SELECT nextval('${schema}.lease_tokens')`);
    await migrate(client, other.schema);
    const [first, second] = [await pgSchema(client, schema), await pgSchema(client, other.schema)];
    expect(second).toEqual(first);
    const token = await rolledBack(client, other.schema, async () =>
      Number((await client.query("SELECT nextval('lease_tokens') AS t")).rows[0].t),
    );
    expect(token).toBe(1);
    expect(await publicTables()).toEqual(publicBefore);
  });
});
