import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Clock } from "../engine/clock.js";
import { systemClock } from "../engine/clock.js";
import { MendError } from "../errors.js";
import type { Store } from "./store.js";
import { isPostgresUrl } from "./url.js";

export { isPostgresUrl } from "./url.js";

/** Where the store is when nothing says otherwise. */
export const DEFAULT_STORE_PATH = ".mend/mend.db";

/**
 * The store URL, from the first of: the `--store` flag, `MEND_STORE`, `DATABASE_URL` (when it is
 * a PostgreSQL URL), `store` in `mend.config.json` in `cwd`, then `sqlite:.mend/mend.db`.
 */
export function resolveStoreUrl(flag?: string, cwd = process.cwd()): string {
  if (flag) return flag;
  if (process.env.MEND_STORE) return process.env.MEND_STORE;
  const databaseUrl = process.env.DATABASE_URL;
  if (databaseUrl && isPostgresUrl(databaseUrl)) return databaseUrl;
  const config = resolve(cwd, "mend.config.json");
  if (existsSync(config)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(config, "utf8"));
    } catch (err) {
      throw new MendError("invalid_argument", `cannot parse ${config}: ${(err as Error).message}`);
    }
    const store = (parsed as { store?: unknown }).store;
    if (typeof store === "string") return store;
  }
  return `sqlite:${DEFAULT_STORE_PATH}`;
}

/** Options for {@link openStore}. */
export interface OpenStoreOptions {
  clock?: Clock;
  /** SQLite only: `NORMAL` trades the last commits on power loss for speed (default `FULL`). */
  synchronous?: "FULL" | "NORMAL";
}

/**
 * Opens (creating and migrating as needed) the store at `url`: `sqlite:PATH` or a bare path, or
 * `postgres://user@host:5432/db?schema=NAME` (schema `mend` by default). A PostgreSQL store keeps
 * time on the server's clock unless `options.clock` is given (tests).
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  // Each backend loads only when asked for: a SQLite worker need not carry the PostgreSQL driver.
  if (isPostgresUrl(url)) {
    const { PgStore } = await import("./postgres/PgStore.js");
    return PgStore.open(url, { clock: options.clock });
  }
  const path = url.startsWith("sqlite:") ? url.slice("sqlite:".length) : url;
  if (path === "" || /^[a-z]+:\/\//i.test(path)) {
    throw new MendError(
      "invalid_argument",
      `unsupported store URL "${url}": use sqlite:PATH or postgres://USER@HOST:PORT/DATABASE`,
      { url },
    );
  }
  const { SqliteStore } = await import("./sqlite/SqliteStore.js");
  return new SqliteStore(resolve(path), {
    clock: options.clock ?? systemClock,
    synchronous: options.synchronous,
  });
}
