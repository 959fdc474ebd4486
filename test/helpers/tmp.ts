/** Temporary directories and stores for tests: one fresh SQLite file per test, removed after it. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onTestFinished } from "vitest";
import type { Clock } from "../../src/engine/clock.js";
import { SqliteStore } from "../../src/store/sqlite/SqliteStore.js";

/** A fresh temporary directory, removed (with everything in it) when the current test finishes. */
export function tmpDir(prefix = "mend-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A store on a real SQLite file; closed when the current test finishes (closing twice is fine). */
export function openSqlite(path: string, clock: Clock): SqliteStore {
  const store = new SqliteStore(path, { clock });
  onTestFinished(() => store.close());
  return store;
}

/** A fresh temp directory and a store on `mend.db` inside it. */
export function tempStore(clock: Clock): { dir: string; path: string; store: SqliteStore } {
  const dir = tmpDir();
  const path = join(dir, "mend.db");
  return { dir, path, store: openSqlite(path, clock) };
}
