/**
 * Tests against a real PostgreSQL server: one fresh schema per test (or file), dropped after it,
 * so tests run side by side in one database without seeing each other's rows.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { onTestFinished } from "vitest";
import type { Clock } from "../../src/engine/clock.js";
import { PgStore } from "../../src/store/postgres/PgStore.js";

/** The test database; `MEND_TEST_PG_URL` points the tests at another server. */
export const PG_TEST_URL =
  process.env.MEND_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** Runs `fn` on a short-lived client of the test database, closed afterwards whatever happens. */
async function withClient<T>(
  fn: (client: pg.Client) => Promise<T>,
  config: pg.ClientConfig = {},
): Promise<T> {
  const client = new pg.Client({ connectionString: PG_TEST_URL, ...config });
  // A server that drops the connection would otherwise emit an unhandled 'error' and crash the run.
  client.on("error", () => {});
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A store URL for the test database with `schema` selected (the store sets `search_path`). */
function urlWithSchema(schema: string): string {
  // Through URL, not string concatenation, so a PG_TEST_URL that has a query keeps it.
  const url = new URL(PG_TEST_URL);
  url.searchParams.set("schema", schema);
  return url.toString();
}

/**
 * Creates a uniquely named, empty schema in the test database. `url` is a store URL that selects
 * it (`?schema=<name>`); `drop()` removes the schema and everything in it, and may be called twice.
 */
export async function freshSchema(): Promise<{
  url: string;
  schema: string;
  drop: () => Promise<void>;
}> {
  // Lowercase letters, digits and underscores only: the name needs no quoting anywhere, and
  // the pid tells which test process left a schema behind.
  const schema = `mend_t_${process.pid}_${randomBytes(6).toString("hex")}`;
  await withClient((c) => c.query(`CREATE SCHEMA ${c.escapeIdentifier(schema)}`));
  return {
    url: urlWithSchema(schema),
    schema,
    drop: () =>
      withClient(async (c) => {
        await c.query(`DROP SCHEMA IF EXISTS ${c.escapeIdentifier(schema)} CASCADE`);
      }),
  };
}

/** A PostgreSQL store in a fresh schema, closed and its schema dropped when the test finishes. */
export async function tempPgStore(clock: Clock): Promise<PgStore> {
  const { url, drop } = await freshSchema();
  const store = await PgStore.open(url, { clock });
  onTestFinished(async () => {
    await store.close();
    await drop();
  });
  return store;
}

/** A node of an executed plan, as `EXPLAIN (ANALYZE, FORMAT JSON)` gives it. */
export interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Actual Rows": number;
  Plans?: PlanNode[];
}

/** Every node of `sql`'s plan, run with `params` (EXPLAIN ANALYZE), parents before children. */
export async function planNodes(
  store: PgStore,
  sql: string,
  params: readonly unknown[] = [],
): Promise<PlanNode[]> {
  const [row] = await store.q.all<{ "QUERY PLAN": { Plan: PlanNode }[] }>(
    `EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`,
    params,
  );
  const nodes: PlanNode[] = [];
  const walk = (node: PlanNode): void => {
    nodes.push(node);
    for (const child of node.Plans ?? []) walk(child);
  };
  walk(row!["QUERY PLAN"][0]!.Plan);
  return nodes;
}
