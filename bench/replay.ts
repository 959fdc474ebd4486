/**
 * `npm run bench:replay`: how long rebuilding a database from its transition journal takes
 * (`mend state restore --from-transitions`), for 1,000,000 transitions by default. The store is
 * filled through the real write path (submit, then claim and complete in batches), then rebuilt
 * into a new file: journal read, chain verified, log inserted, state replayed and written.
 *
 * With `--json` (for `npm run bench:peers`, bench/peers/run.ts), the summary goes to stderr with
 * the progress, and stdout gets one JSON line instead: `{ transitions, journalMiB, fillMs,
 * trialsMs, medianMs }` (bench/peers/results.ts `Replay`).
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createPlanner, systemClock } from "../dist/index.js";
import { validateDefinition } from "../dist/model/definition.js";
import { rebuildFromJournal } from "../dist/store/sqlite/rebuild.js";
import { SqliteStore } from "../dist/store/sqlite/SqliteStore.js";
import { journalDirFor, listSegments } from "../dist/state/journal.js";

const { values: args } = parseArgs({
  options: {
    transitions: { type: "string", default: "1000000" },
    trials: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
  },
});
const TRANSITIONS = Number(args.transitions);
const TASKS = Math.ceil(TRANSITIONS / 3);
const CHUNK = 10_000;
const BATCH = 500;

const dir = mkdtempSync(join(tmpdir(), "mend-replay-"));
const path = join(dir, "mend.db");
try {
  const store = new SqliteStore(path, { clock: systemClock, synchronous: "NORMAL" });
  const planner = createPlanner({});
  const filling = performance.now();
  for (let i = 0; i < TASKS; i += CHUNK) {
    const n = Math.min(CHUNK, TASKS - i);
    await store.submit(
      validateDefinition({
        name: `replay-${i}`,
        tasks: Array.from({ length: n }, (_, j) => ({
          id: `t${j}`,
          handler: "noop",
          input: { j },
        })),
      }),
    );
  }
  await store.registerWorker({
    id: "w1",
    host: "bench",
    pid: process.pid,
    concurrency: BATCH,
    handlers: ["noop"],
  });
  let running: { id: string; leaseToken: number }[] = [];
  for (;;) {
    const { claimed } = await store.exchange({
      workerId: "w1",
      outcomes: running.map((t) => ({
        kind: "complete",
        taskId: t.id,
        token: t.leaseToken,
        output: null,
      })),
      claim: BATCH,
      leaseMs: 60_000,
      handlers: ["noop"],
      planner,
    });
    if (claimed.length === 0 && running.length === 0) break;
    running = claimed;
  }
  const count = (await store.listTransitions({ newestFirst: true, limit: 1 }))[0]!.seq;
  await store.close();
  const journal = journalDirFor(path);
  const bytes = listSegments(journal).reduce((n, f) => n + statSync(join(journal, f)).size, 0);
  const fillMs = performance.now() - filling;
  process.stderr.write(
    `filled ${count.toLocaleString("en-US")} transitions (${(bytes / 2 ** 20).toFixed(0)} MiB of journal) in ${(fillMs / 1000).toFixed(1)} s\n`,
  );

  const times: number[] = [];
  for (let i = 0; i < Number(args.trials); i++) {
    const target = join(dir, `rebuilt-${i}.db`);
    const t0 = performance.now();
    const result = await rebuildFromJournal(journal, target, { now: Date.now() });
    const ms = performance.now() - t0;
    times.push(ms);
    rmSync(target);
    process.stderr.write(
      `trial ${i + 1}: ${result.transitions.toLocaleString("en-US")} transitions in ${(ms / 1000).toFixed(2)} s\n`,
    );
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  (args.json ? process.stderr : process.stdout).write(
    `rebuild from the journal, ${count.toLocaleString("en-US")} transitions: median ${(median / 1000).toFixed(2)} s (${Math.round((count / median) * 1000).toLocaleString("en-US")} transitions/s); target < 10 s\n`,
  );
  if (args.json) {
    const journalMiB = bytes / 2 ** 20;
    const summary = { transitions: count, journalMiB, fillMs, trialsMs: times, medianMs: median };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
