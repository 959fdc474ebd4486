/**
 * `npm run bench:restore -- [--mb 100] [--trials 3]` (not part of the
 * tests): how long `mend state restore --from-backup` takes on a store of about `--mb` megabytes,
 * in place into a sound store (which includes its quick check, the backup's check, and the safety
 * backup taken first) and by replacing a damaged file. Also times a backup of the same store.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { systemClock } from "../dist/engine/clock.js";
import { validateDefinition } from "../dist/model/definition.js";
import { inspectStore, restoreFromBackup } from "../dist/store/sqlite/backup.js";
import { SqliteStore } from "../dist/store/sqlite/SqliteStore.js";

const { values: args } = parseArgs({
  options: {
    mb: { type: "string", default: "100" },
    trials: { type: "string", default: "3" },
  },
});
const TARGET_BYTES = Number(args.mb) * 1024 * 1024;
const TRIALS = Number(args.trials);
/** Each task's input; it is stored twice (task row and creation record). */
const INPUT_BYTES = 20_000;
const TASKS_PER_WORKSTREAM = 100;
const who = { actor: "bench", reason: "benchmark", command: "bench/restore.ts" };

/** Fills the store with workstreams of tasks with large inputs until the file reaches the target. */
async function fill(store: SqliteStore, path: string): Promise<void> {
  let n = 0;
  while (fileBytes(path) < TARGET_BYTES) {
    const tasks = Array.from({ length: TASKS_PER_WORKSTREAM }, (_, i) => ({
      id: `t${i}`,
      handler: "work",
      input: { blob: `${n}-${i}-`.padEnd(INPUT_BYTES, "x") },
    }));
    await store.submit(validateDefinition({ name: `bulk-${n++}`, tasks }));
  }
}

function fileBytes(path: string): number {
  let total = 0;
  for (const f of [path, `${path}-wal`]) {
    try {
      total += statSync(f).size;
    } catch {
      // Not there (yet).
    }
  }
  return total;
}

async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: performance.now() - start, value };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "mend-bench-restore-"));
  const path = join(dir, "mend.db");
  try {
    const store = new SqliteStore(path, { clock: systemClock });
    await fill(store, path);
    const backups: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      backups.push((await timed(() => store.backup({ reason: "bench" }))).ms);
    }
    // Changes after the backup, so the restore has something to undo.
    await store.submit(
      validateDefinition({ name: "after", tasks: [{ id: "a", handler: "work" }] }),
    );
    await store.close();
    const size = statSync(path).size;

    const checks: number[] = [];
    const inPlace: number[] = [];
    const replaced: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      checks.push((await timed(() => inspectStore(path, Date.now()))).ms);
      inPlace.push(
        (await timed(() => restoreFromBackup(path, "latest", { who, clock: systemClock }))).ms,
      );
      // Damage the header so the store cannot be opened: the restore replaces the file.
      writeFileSync(path, Buffer.alloc(4096, 0xff), { flag: "r+" });
      const r = await timed(() => restoreFromBackup(path, "latest", { who, clock: systemClock }));
      if (r.value.mode !== "replaced")
        throw new Error(`expected a replacement, got ${r.value.mode}`);
      replaced.push(r.ms);
    }
    const fmt = (xs: number[]) =>
      `${median(xs).toFixed(0)} ms (${xs.map((x) => x.toFixed(0)).join(", ")})`;
    console.log(`store: ${(size / 1024 / 1024).toFixed(1)} MiB, median of ${TRIALS} (all trials)`);
    console.log(`backup (online API, sealed, manifest):          ${fmt(backups)}`);
    console.log(`quick check of the store alone:                  ${fmt(checks)}`);
    console.log(`restore in place (checks + safety backup + copy): ${fmt(inPlace)}`);
    console.log(`restore replacing a damaged file:                ${fmt(replaced)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
