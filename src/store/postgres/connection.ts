/**
 * node-postgres set up for Mend: a store URL's `schema` parameter becomes the connections'
 * `search_path`, 64-bit integers come back as numbers (timestamps in ms and seqs are far below
 * 2^53), and the shared SQL's `?` placeholders become PostgreSQL's `$n`.
 */
import pg from "pg";
import { MendError } from "../../errors.js";
import type { Queryable, Row } from "../sql/queryable.js";
import { redact } from "../url.js";

/** Where a PostgreSQL store lives: the server, and the schema its tables are in. */
export interface PgLocation {
  /** The connection string without Mend's own parameters. */
  connectionString: string;
  schema: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Splits a store URL (`postgres://user@host:5432/db?schema=mend`) into the connection string and
 * the schema (default `mend`). The schema name must be a plain lowercase identifier, so it never
 * needs quoting.
 */
export function parsePgUrl(url: string): PgLocation {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new MendError("invalid_argument", `"${url}" is not a valid PostgreSQL URL`, { url });
  }
  const schema = parsed.searchParams.get("schema") ?? "mend";
  if (!SCHEMA_NAME.test(schema)) {
    throw new MendError(
      "invalid_argument",
      `schema "${schema}" in ${redact(url)} must be lowercase letters, digits and underscores, starting with a letter or _`,
      { schema },
    );
  }
  parsed.searchParams.delete("schema");
  return { connectionString: parsed.toString(), schema };
}

const INT8 = 20;
const NUMERIC = 1700;

/** Type parsers of this store's connections: bigint and numeric as JS numbers. */
const TYPES = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === INT8 || oid === NUMERIC) return (v: string) => (v === null ? null : Number(v));
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

/** Connection settings for a location: its schema first on the search path, numbers parsed. */
export function clientConfig(loc: PgLocation, extra: pg.ClientConfig = {}): pg.ClientConfig {
  return {
    connectionString: loc.connectionString,
    // JIT compilation pays off for long analytic queries, never for Mend's short ones; and the
    // claim's planner settings make its plan look costly enough to trigger it on every run.
    options: `-c search_path=${loc.schema} -c jit=off`,
    types: TYPES,
    application_name: "mend",
    ...extra,
  };
}

/** A statement ready for node-postgres: PostgreSQL placeholders and a prepared-statement name. */
interface PgStatement {
  name: string;
  text: string;
}

/** Statements by their shared-SQL text, converted once. */
const statements = new Map<string, PgStatement>();

/**
 * The statement for a shared-SQL text: `?` placeholders become `$1…$n` (the shared SQL never has
 * `?` in literals), and it gets a name, so each connection parses and plans it once. Every text
 * Mend runs is one of a bounded set (batches send arrays, not longer texts), so the names do too.
 */
export function toPg(sql: string): PgStatement {
  let statement = statements.get(sql);
  if (statement === undefined) {
    let n = 0;
    statement = { name: `mend_${statements.size + 1}`, text: sql.replace(/\?/g, () => `$${++n}`) };
    statements.set(sql, statement);
  }
  return statement;
}

/** A client or pool as a {@link Queryable}. */
export function queryable(db: pg.Pool | pg.PoolClient | pg.Client): Queryable {
  const query = (sql: string, params: readonly unknown[]) =>
    db.query({ ...toPg(sql), values: params as unknown[] });
  return {
    async get<T = Row>(sql: string, params: readonly unknown[] = []) {
      return (await query(sql, params)).rows[0] as T | undefined;
    },
    async all<T = Row>(sql: string, params: readonly unknown[] = []) {
      return (await query(sql, params)).rows as T[];
    },
    async run(sql: string, params: readonly unknown[] = []) {
      return (await query(sql, params)).rowCount ?? 0;
    },
  };
}

/** A 32-bit key for advisory locks, from a name (FNV-1a). */
export function lockKey(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}
