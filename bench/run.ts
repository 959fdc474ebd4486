/**
 * `npm run bench`: throughput, single-task latency and worker-loss recovery of Mend against real
 * worker processes, on the embedded SQLite store with durability on (synchronous=FULL) and on
 * the PostgreSQL store (a fresh schema of `MEND_BENCH_PG_URL`, default the local server's `test`
 * database, dropped afterwards). `--store sqlite|postgres` runs one of them; `--prefetch N` gives
 * the throughput runs' workers `--prefetch N`. Prints a table and writes JSON to bench/results/.
 * Not part of the tests.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { openStore, type Store, submitWorkstream } from "../dist/index.js";
import { median, quantile } from "./stats.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const cli = join(root, "dist/cli/main.js");
const handlers = join(root, "bench/handlers.mjs");

const { values: args } = parseArgs({
  options: {
    tasks: { type: "string", default: "20000" },
    trials: { type: "string", default: "3" },
    only: { type: "string" },
    /** Tasks per workstream submitted in the end-to-end run. */
    chunk: { type: "string", default: "1000" },
    store: { type: "string", default: "sqlite,postgres" },
    /** Worker `--prefetch` in the throughput runs (0: the worker's default, none). */
    prefetch: { type: "string", default: "0" },
  },
});
const PG_URL = process.env.MEND_BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
type StoreKind = "sqlite" | "postgres";
const STORE_LABELS: Record<StoreKind, string> = {
  sqlite: "sqlite, WAL, synchronous=FULL",
  postgres: `postgresql (${new URL(PG_URL).host}), a fresh schema per run`,
};
const TASKS = Number(args.tasks);
const TRIALS = Number(args.trials);
const CHUNK = Number(args.chunk);
const PREFETCH = Number(args.prefetch);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();

let kind: StoreKind = "sqlite";

/** A new, empty store of the kind being measured, and how to remove it. */
function tempStore(): { url: string; remove: () => Promise<void> } {
  if (kind === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "mend-bench-"));
    return {
      url: `sqlite:${join(dir, "mend.db")}`,
      remove: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const schema = `mend_bench_${randomBytes(5).toString("hex")}`;
  const url = new URL(PG_URL);
  url.searchParams.set("schema", schema);
  return {
    url: url.toString(),
    remove: async () => {
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    },
  };
}

/** Starts `mend worker` and resolves once it has registered. */
async function startWorker(url: string, extra: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [cli, "--store", url, "worker", "--handlers", handlers, ...extra],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  await new Promise<void>((ok, fail) => {
    let err = "";
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      if (err.includes("started")) ok();
    });
    child.once("exit", (code) => fail(new Error(`worker exited ${code}: ${err}`)));
  });
  return child;
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/**
 * Resolves once none of `ids` is active. One query per poll whatever their number: on
 * PostgreSQL a query per workstream every few milliseconds would itself load the server.
 */
async function waitSettled(store: Store, ids: string[], timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const waiting = new Set(ids);
  while (waiting.size > 0) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${waiting.size} workstreams`);
    }
    for (const ws of await store.listWorkstreams()) {
      if (ws.status !== "active") waiting.delete(ws.id);
    }
    if (waiting.size > 0) await sleep(5);
  }
}

function noopTasks(n: number, handler = "noop") {
  return Array.from({ length: n }, (_, i) => ({ id: `t${i}`, handler }));
}

interface ThroughputResult {
  concurrency: number;
  enqueuePerSec: number;
  processPerSec: number;
  endToEndPerSec: number;
}

/** Enqueue rate, processing rate of a full queue, and end-to-end rate with the worker running. */
async function throughput(concurrency: number): Promise<ThroughputResult> {
  const flags = ["--concurrency", String(concurrency), "--prefetch", String(PREFETCH)];
  // Enqueue, then process the full queue.
  let { url, remove } = tempStore();
  let store = await openStore(url);
  let t0 = now();
  const { workstreamId } = await submitWorkstream(store, {
    name: "bench",
    tasks: noopTasks(TASKS),
  });
  const enqueueMs = now() - t0;
  let worker = await startWorker(url, flags);
  const startedAt = now();
  await waitSettled(store, [workstreamId]);
  const processMs = now() - startedAt;
  await stopWorker(worker);
  await store.close();
  await remove();

  // End to end: the worker is already waiting; tasks arrive in workstreams of --chunk tasks.
  ({ url, remove } = tempStore());
  store = await openStore(url);
  worker = await startWorker(url, flags);
  t0 = now();
  const ids: string[] = [];
  for (let i = 0; i < TASKS; i += CHUNK) {
    const n = Math.min(CHUNK, TASKS - i);
    ids.push(
      (await submitWorkstream(store, { name: `e2e-${i}`, tasks: noopTasks(n) })).workstreamId,
    );
  }
  await waitSettled(store, ids);
  const e2eMs = now() - t0;
  await stopWorker(worker);
  await store.close();
  await remove();
  return {
    concurrency,
    enqueuePerSec: (TASKS / enqueueMs) * 1000,
    processPerSec: (TASKS / processMs) * 1000,
    endToEndPerSec: (TASKS / e2eMs) * 1000,
  };
}

/** Enqueue → handler start, one task at a time, on a waiting worker in another process. */
async function latency(samples = 200): Promise<{ p50: number; p99: number }> {
  const { url, remove } = tempStore();
  const store = await openStore(url);
  const worker = await startWorker(url, ["--concurrency", "1"]);
  const lat: number[] = [];
  for (let i = 0; i < samples + 10; i++) {
    const t0 = now();
    const { workstreamId, taskIds } = await submitWorkstream(store, {
      name: "lat",
      tasks: [{ id: "t", handler: "stamp" }],
    });
    await waitSettled(store, [workstreamId]);
    const task = await store.getTask(taskIds[0]!);
    if (i >= 10) lat.push((task!.output as { startedAt: number }).startedAt - t0);
  }
  await stopWorker(worker);
  await store.close();
  await remove();
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) };
}

interface RecoveryResult {
  settings: string;
  restartP50: number;
  restartP99: number;
  doneP99: number;
  lost: number;
  duplicates: number;
}

/** SIGKILL a worker holding tasks; time until another worker restarts them and finishes them. */
async function recovery(settings: string, flags: string[]): Promise<RecoveryResult> {
  const { url, remove } = tempStore();
  const store = await openStore(url);
  const victim = await startWorker(url, ["--concurrency", "10", ...flags]);
  const { workstreamId, taskIds } = await submitWorkstream(store, {
    name: "recovery",
    tasks: noopTasks(10, "hold"),
  });
  for (;;) {
    const tasks = await store.listTasks(workstreamId);
    if (tasks.every((t) => t.status === "running")) break;
    await sleep(10);
  }
  const rescuer = await startWorker(url, ["--concurrency", "10", ...flags]);
  await sleep(200);
  const killedAt = Date.now();
  victim.kill("SIGKILL");
  await waitSettled(store, [workstreamId], 120_000);
  const restart: number[] = [];
  const done: number[] = [];
  let duplicates = 0;
  let lost = 0;
  for (const id of taskIds) {
    const history = await store.listTransitions({ entityId: id });
    const second = history.find((t) => t.event === "task_started" && t.at >= killedAt);
    const completions = history.filter((t) => t.to === "completed");
    if (second) restart.push(second.at - killedAt);
    if (completions.length === 0) lost++;
    if (completions.length > 1) duplicates++;
    if (completions[0]) done.push(completions[0].at - killedAt);
  }
  await stopWorker(rescuer);
  await store.close();
  await remove();
  return {
    settings,
    restartP50: quantile(restart, 0.5),
    restartP99: quantile(restart, 0.99),
    doneP99: quantile(done, 0.99),
    lost,
    duplicates,
  };
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

async function main(): Promise<void> {
  const kinds = args.store.split(",") as StoreKind[];
  const results: Record<string, unknown> = {
    machine: {
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      memGiB: Math.round(totalmem() / 2 ** 30),
    },
    node: process.version,
    tasks: TASKS,
    trials: TRIALS,
    prefetch: PREFETCH,
  };
  const report: string[] = [];
  for (const k of kinds) {
    if (!(k in STORE_LABELS)) throw new Error(`--store: unknown store "${k}"`);
    kind = k;
    process.stderr.write(`${STORE_LABELS[k]}\n`);
    const lines: string[] = [];
    results[k] = { store: STORE_LABELS[k], ...(await measure(lines)) };
    report.push(`Mend on ${STORE_LABELS[k]}, ${TASKS} no-op tasks, median of ${TRIALS}`);
    report.push(...lines.map((l) => `  ${l}`));
  }
  const outDir = join(root, "bench/results");
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`\n${report.join("\n")}\nresults: ${file}\n`);
}

/** Every measurement asked for, on the current store kind; `lines` gets the summary. */
async function measure(lines: string[]): Promise<Record<string, unknown>> {
  const only = args.only?.split(",");
  const want = (name: string) => !only || only.includes(name);
  const results: Record<string, unknown> = {};
  if (want("throughput")) {
    for (const c of [10, 50]) {
      const trials: ThroughputResult[] = [];
      for (let i = 0; i < TRIALS; i++) trials.push(await throughput(c));
      const m = {
        concurrency: c,
        enqueuePerSec: median(trials.map((t) => t.enqueuePerSec)),
        processPerSec: median(trials.map((t) => t.processPerSec)),
        endToEndPerSec: median(trials.map((t) => t.endToEndPerSec)),
        trials,
      };
      results[`throughput_c${c}`] = m;
      lines.push(
        `throughput c=${c}${PREFETCH > 0 ? ` prefetch ${PREFETCH}` : ""}: enqueue ${fmt(m.enqueuePerSec)}/s, processing ${fmt(m.processPerSec)}/s, end to end ${fmt(m.endToEndPerSec)}/s`,
      );
      process.stderr.write(`${lines.at(-1)}\n`);
    }
  }
  if (want("latency")) {
    const l = await latency();
    results.latency = l;
    lines.push(`latency enqueue→start: p50 ${fmt(l.p50, 2)} ms, p99 ${fmt(l.p99, 2)} ms`);
    process.stderr.write(`${lines.at(-1)}\n`);
  }
  if (want("recovery")) {
    const runs = [
      await recovery("default (heartbeat 1s, lease 5s, sweep 1s)", []),
      await recovery("tuned (heartbeat 100ms, lease 500ms, sweep 100ms)", [
        "--heartbeat",
        "100ms",
        "--lease",
        "500ms",
        "--sweep",
        "100ms",
      ]),
    ];
    results.recovery = runs;
    for (const r of runs) {
      lines.push(
        `recovery ${r.settings}: restarted p50 ${fmt(r.restartP50)} ms p99 ${fmt(r.restartP99)} ms, done p99 ${fmt(r.doneP99)} ms, lost ${r.lost}, duplicates ${r.duplicates}`,
      );
      process.stderr.write(`${lines.at(-1)}\n`);
    }
  }
  return results;
}

await main();
