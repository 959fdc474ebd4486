/** The local PostgreSQL the PostgreSQL systems share: each in a schema of its own. */
import pg from "pg";

/** The server and database (`BENCH_PG_URL`, default the local `test` database). */
export const PG_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

async function withClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Drops `schema` and everything in it, if it exists. */
export function dropSchema(schema: string): Promise<void> {
  return withClient(async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });
}

/** "PostgreSQL 15.20 at 127.0.0.1:5432", read from the server. */
export function pgBackend(): Promise<string> {
  return withClient(async (c) => {
    const { rows } = await c.query<{ version: string }>("SELECT version()");
    const release = /^PostgreSQL (\S+)/.exec(rows[0]!.version)?.[1] ?? "";
    return `PostgreSQL ${release} at ${new URL(PG_URL).host}`;
  });
}
