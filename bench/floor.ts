/**
 * `npm run bench:floor`: what SQLite itself allows on this machine for Mend's write pattern, with
 * no Mend code in the loop. It runs the end-to-end workload of `npm run bench` as bare SQL on
 * Mend's own schema: one process enqueues 20,000 tasks in transactions of 1,000 (row INSERT plus
 * one hash-chained log record each), another claims and completes them 50 per transaction
 * (guarded UPDATE plus a log record for each of the two transitions), with `synchronous=FULL`.
 * The figure is an upper bound for any implementation that records every transition durably.
 */
import { spawn } from "node:child_process";
import { hash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { SQLITE_MIGRATIONS } from "../dist/store/sqlite/migrations.js";

const { values: args } = parseArgs({
  options: {
    tasks: { type: "string", default: "20000" },
    chunk: { type: "string", default: "1000" },
    batch: { type: "string", default: "50" },
    trials: { type: "string", default: "3" },
    /** Internal: run as the processing side against this database. */
    process: { type: "string" },
  },
});
const TASKS = Number(args.tasks);
const CHUNK = Number(args.chunk);
const BATCH = Number(args.batch);

const RETRY = JSON.stringify({
  maxAttempts: 3,
  backoff: "exponential",
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 60_000,
  jitter: "full",
});

function open(path: string): Database.Database {
  const db = new Database(path, { timeout: 10_000 });
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  return db;
}

/** Appends hash-chained records the way the store does: seq and hash read once per transaction. */
function logWriter(db: Database.Database) {
  const last = db.prepare("SELECT seq, hash FROM transitions ORDER BY seq DESC LIMIT 1");
  const insert = db.prepare(
    `INSERT INTO transitions (seq, at, entity, entity_id, workstream_id, from_state, to_state, event, severity, actor, data, detail, hash)
     VALUES (?, ?, 'task', ?, ?, ?, ?, ?, 'info', ?, ?, NULL, ?)`,
  );
  let seq = 0;
  let prev = "";
  return {
    begin() {
      const row = last.get() as { seq: number; hash: string } | undefined;
      seq = row?.seq ?? 0;
      prev = row?.hash ?? "0".repeat(64);
    },
    nextSeq: () => seq + 1,
    append(
      id: string,
      ws: string,
      from: string | null,
      to: string,
      event: string,
      actor: string,
      data: string,
    ) {
      seq++;
      const at = Date.now();
      prev = hash(
        "sha256",
        `${prev}\n${seq}\n${at}\n${id}\n${from}\n${to}\n${event}\n${actor}\n${data}`,
      );
      insert.run(seq, at, id, ws, from, to, event, actor, data, prev);
    },
  };
}

/** The processing side: settle the last batch and claim the next one, in one transaction. */
function processAll(path: string): void {
  const db = open(path);
  const log = logWriter(db);
  const claim = db.prepare(
    `SELECT id, workstream_id AS ws, attempts FROM tasks WHERE status = 'queued' AND run_at <= ?
     ORDER BY priority DESC, run_at, rowid LIMIT ?`,
  );
  const start = db.prepare(
    `UPDATE tasks SET status = 'running', attempts = ?, lease_token = ?, lease_worker = 'w_floor', lease_expires_at = ?, updated_at = ?
     WHERE id = ? AND status = 'queued'`,
  );
  const complete = db.prepare(
    `UPDATE tasks SET status = 'completed', output = 'null', lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, updated_at = ?
     WHERE id = ? AND status = 'running' AND lease_token = ?`,
  );
  let running: { id: string; ws: string; attempts: number; token: number }[] = [];
  let done = 0;
  const round = db.transaction(() => {
    log.begin();
    const now = Date.now();
    for (const t of running) {
      complete.run(now, t.id, t.token);
      log.append(
        t.id,
        t.ws,
        "running",
        "completed",
        "task_completed",
        "worker:w_floor",
        `{"output":null,"leaseToken":null,"leaseWorker":null,"status":"completed","updatedAt":${now}}`,
      );
    }
    done += running.length;
    const rows = claim.all(now, BATCH) as { id: string; ws: string; attempts: number }[];
    running = rows.map((r) => {
      const token = log.nextSeq();
      start.run(r.attempts + 1, token, now + 5000, now, r.id);
      log.append(
        r.id,
        r.ws,
        "queued",
        "running",
        "task_started",
        "worker:w_floor",
        `{"attempts":${r.attempts + 1},"leaseToken":${token},"leaseWorker":"w_floor","status":"running","updatedAt":${now}}`,
      );
      return { ...r, token };
    });
  });
  const idle = new Int32Array(new SharedArrayBuffer(4));
  process.stdout.write("ready\n");
  while (done < TASKS) {
    round.immediate();
    // Nothing to do yet: wait a millisecond rather than spin on the write lock.
    if (running.length === 0) Atomics.wait(idle, 0, 0, 1);
  }
  db.close();
}

/** One trial: enqueue here while a child process works the queue; returns tasks per second. */
async function trial(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "mend-floor-"));
  const path = join(dir, "floor.db");
  const db = open(path);
  for (const m of SQLITE_MIGRATIONS) db.exec(m);
  const log = logWriter(db);
  const insert = db.prepare(
    `INSERT INTO workstreams (id, name, status, on_failure, created_at, updated_at) VALUES (?, 'floor', 'active', 'continue', ?, ?)`,
  );
  const insertTask = db.prepare(
    `INSERT INTO tasks (id, workstream_id, key, handler, input, status, priority, attempts, retry, timeout_ms, critical, deps, run_at, worker_lost_streak, idempotency_key, created_at, updated_at)
     VALUES (?, ?, ?, 'noop', NULL, 'queued', 0, 0, ?, 600000, 1, '[]', ?, 0, ?, ?, ?)`,
  );
  const worker = spawn(
    process.execPath,
    [
      ...process.execArgv,
      fileURLToPath(import.meta.url),
      "--process",
      path,
      "--tasks",
      String(TASKS),
      "--batch",
      String(BATCH),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<number | null>((r) => worker.once("exit", r));
  await new Promise((r) => worker.stdout!.once("data", r));
  const t0 = performance.now();
  for (let w = 0; w < TASKS / CHUNK; w++) {
    const ws = `ws_floor${String(w).padStart(18, "0")}`;
    db.transaction(() => {
      log.begin();
      const now = Date.now();
      insert.run(ws, now, now);
      for (let i = 0; i < CHUNK; i++) {
        const id = `${ws}/t${i}`;
        insertTask.run(id, ws, `t${i}`, RETRY, now, id, now, now);
        log.append(
          id,
          ws,
          null,
          "queued",
          "task_created",
          "engine",
          `{"id":"${id}","workstreamId":"${ws}","key":"t${i}","handler":"noop","input":null,"priority":0,"attempts":0,"retry":${RETRY},"timeoutMs":600000,"critical":true,"deps":[],"runAt":${now}}`,
        );
      }
    }).immediate();
  }
  const code = await exited;
  const ms = performance.now() - t0;
  db.close();
  rmSync(dir, { recursive: true, force: true });
  if (code !== 0) throw new Error(`processing side exited with ${code}`);
  return (TASKS / ms) * 1000;
}

if (args.process) {
  processAll(args.process);
} else {
  const rates: number[] = [];
  for (let i = 0; i < Number(args.trials); i++) {
    rates.push(await trial());
    process.stderr.write(
      `trial ${i + 1}: ${Math.round(rates.at(-1)!).toLocaleString("en-US")} tasks/s\n`,
    );
  }
  rates.sort((a, b) => a - b);
  const median = rates[Math.floor(rates.length / 2)]!;
  process.stdout.write(
    `bare SQLite floor, end to end, ${TASKS} tasks, enqueue chunks of ${CHUNK}, claim batches of ${BATCH}, synchronous=FULL: median ${Math.round(median).toLocaleString("en-US")} tasks/s (best ${Math.round(rates.at(-1)!).toLocaleString("en-US")})\n`,
  );
}
