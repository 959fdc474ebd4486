/**
 * `npm run bench:peers`: Mend beside the systems its users would pick instead, on the same
 * machine in the same run: the same workloads for each, trials alternating between systems,
 * medians reported with Mend's ratio to the best peer. Writes JSON to bench/results/ and the
 * generated part of docs/benchmarks.md (./report.ts). Run from the repository root.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { fmt, writeReport } from "./report.js";
import {
  type Latency,
  type PeerResults,
  quantile,
  type Recovery,
  type Throughput,
  type Trials,
} from "./results.js";
import type { Job, JobKind, Settings, System } from "./system.js";
import { wallNow, type WorkerHandle } from "./worker-process.js";

/** The systems, loaded only when asked for. */
const SYSTEMS: Record<string, () => Promise<System>> = {
  "mend-sqlite": async () => (await import("./mend.js")).mend("sqlite"),
  "mend-postgres": async () => (await import("./mend.js")).mend("postgres"),
  bullmq: async () => (await import("./bullmq.js")).bullmq(),
  "pg-boss": async () => (await import("./pgboss.js")).pgBoss(),
  "graphile-worker": async () => (await import("./graphile.js")).graphileWorker(),
};
const WORKLOADS = ["throughput", "latency", "recovery"] as const;
type Workload = (typeof WORKLOADS)[number];

const { values: args } = parseArgs({
  options: {
    tasks: { type: "string", default: "20000" },
    trials: { type: "string", default: "3" },
    samples: { type: "string", default: "200" },
    systems: { type: "string", default: Object.keys(SYSTEMS).join(",") },
    only: { type: "string", default: WORKLOADS.join(",") },
    /** Write docs/benchmarks.md's generated part from this run (default: only for a whole run with the default sizes). */
    docs: { type: "boolean" },
  },
});
const TASKS = Number(args.tasks);
const TRIALS = Number(args.trials);
const SAMPLES = Number(args.samples);
const keys = args.systems.split(",").map((k) => k.trim());
for (const k of keys) {
  if (!SYSTEMS[k])
    throw new Error(`unknown system ${k}; known: ${Object.keys(SYSTEMS).join(", ")}`);
}
const only = new Set(args.only.split(",") as Workload[]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function jobs(n: number, kind: JobKind, prefix: string): Job[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, kind }));
}

/**
 * Polls the system's own count until `n` jobs completed. A count can be a full scan (pg-boss's
 * and graphile-worker's tables, on a server without autovacuum): the pause after each poll is
 * four times what the poll took, at least 25 ms, so polling never takes more than a fifth of a
 * core from the system it measures.
 */
async function waitCompleted(sys: System, n: number, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const t0 = wallNow();
    if ((await sys.completed()) >= n) return;
    if (Date.now() > deadline) throw new Error(`${sys.name}: ${n} jobs not completed in time`);
    await sleep(Math.max(25, 4 * (wallNow() - t0)));
  }
}

/** Resolves with the first event of `kind` for job `id` a worker prints from now on. */
function nextEvent(w: WorkerHandle, kind: "start" | "done", id: string): Promise<number> {
  return new Promise((resolve) => {
    const off = w.on((e) => {
      if (e.ev === kind && e.id === id) {
        off();
        resolve(e.t);
      }
    });
  });
}

/** Enqueue a full queue, process it with one worker; then end to end with the worker waiting. */
async function throughput(sys: System, concurrency: number): Promise<Throughput> {
  const opts = { concurrency, settings: "default" as const, events: false, hold: false };
  await sys.setup();
  let t0 = wallNow();
  await sys.enqueue(jobs(TASKS, "noop", "q"));
  const enqueueMs = wallNow() - t0;
  let w = await sys.startWorker(opts);
  t0 = wallNow();
  await waitCompleted(sys, TASKS);
  const processMs = wallNow() - t0;
  await w.stop();
  await sys.teardown();

  await sys.setup();
  w = await sys.startWorker(opts);
  t0 = wallNow();
  await sys.enqueue(jobs(TASKS, "noop", "e"));
  await waitCompleted(sys, TASKS);
  const e2eMs = wallNow() - t0;
  await w.stop();
  await sys.teardown();
  return {
    concurrency,
    enqueuePerSec: (TASKS / enqueueMs) * 1000,
    processPerSec: (TASKS / processMs) * 1000,
    endToEndPerSec: (TASKS / e2eMs) * 1000,
  };
}

/** Enqueue → handler start, one job at a time, on a waiting worker in another process. */
async function latency(sys: System): Promise<Latency> {
  await sys.setup();
  const w = await sys.startWorker({
    concurrency: 1,
    settings: "default",
    events: true,
    hold: false,
  });
  const samples: number[] = [];
  // The first ten warm up connections and code paths.
  for (let i = 0; i < SAMPLES + 10; i++) {
    const id = `l${i}`;
    const started = nextEvent(w, "start", id);
    const done = nextEvent(w, "done", id);
    const t0 = wallNow();
    await sys.enqueue([{ id, kind: "stamp" }]);
    const t = await started;
    await done;
    if (i >= 10) samples.push(t - t0);
  }
  await w.stop();
  await sys.teardown();
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) };
}

const HELD = 10;

/**
 * A worker holding jobs is SIGKILLed; another worker, started before the kill, waits. Time until
 * it restarts each job and finishes it; jobs never finished are lost, finished twice duplicated.
 */
async function recovery(sys: System, settings: Settings): Promise<Recovery> {
  const { description, documented } = sys.recovery[settings];
  if (documented) return { settings, description, documented };
  await sys.setup();
  const base = { concurrency: HELD, settings, events: true };
  const victim = await sys.startWorker({ ...base, hold: true });
  const held = jobs(HELD, "hold", "r");
  const holding = new Set<string>();
  const allHeld = new Promise<void>((resolve) => {
    victim.on((e) => {
      if (e.ev === "start") holding.add(e.id);
      if (holding.size === HELD) resolve();
    });
  });
  await sys.enqueue(held);
  await withTimeout(allHeld, 60_000, `${sys.name}: the victim did not start its jobs`);
  const rescuer = await sys.startWorker({ ...base, hold: false });
  const restarted = new Map<string, number>();
  const done = new Map<string, number>();
  let completions = 0;
  const allDone = new Promise<void>((resolve) => {
    rescuer.on((e) => {
      if (e.ev === "start" && !restarted.has(e.id)) restarted.set(e.id, e.t);
      if (e.ev === "done") {
        completions++;
        if (!done.has(e.id)) done.set(e.id, e.t);
      }
      if (done.size === HELD) resolve();
    });
  });
  const killedAt = wallNow();
  await victim.kill();
  await withTimeout(allDone, 300_000, "").catch(() => undefined);
  // A job finished twice would show within a moment.
  await sleep(1_000);
  await rescuer.stop();
  await sys.teardown();
  const after = (m: Map<string, number>) => [...m.values()].map((t) => t - killedAt);
  return {
    settings,
    description,
    restartP50: quantile(after(restarted), 0.5),
    restartP99: quantile(after(restarted), 0.99),
    doneP99: quantile(after(done), 0.99),
    lost: HELD - done.size,
    duplicates: completions - done.size,
  };
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function main(): Promise<void> {
  const systems = await Promise.all(keys.map((k) => SYSTEMS[k]!()));
  const trials = new Map<System, Trials>(
    systems.map((s) => [
      s,
      {
        name: s.name,
        version: s.version,
        backend: s.backend,
        kind: s.kind,
        throughput: [],
        latency: [],
        recovery: [],
      },
    ]),
  );
  for (let trial = 0; trial < TRIALS; trial++) {
    // Alternating: each trial starts with the next system, so none always runs first or last.
    const order = systems.map((_, i) => systems[(i + trial) % systems.length]!);
    for (const sys of order) {
      const t = trials.get(sys)!;
      const label = `[trial ${trial + 1}/${TRIALS}] ${sys.name}`;
      if (only.has("throughput")) {
        const runs = [await throughput(sys, 10), await throughput(sys, 50)];
        t.throughput.push(runs);
        for (const r of runs) {
          console.log(
            `${label} c=${r.concurrency}: enqueue ${fmt(r.enqueuePerSec)}/s, processing ${fmt(r.processPerSec)}/s, end to end ${fmt(r.endToEndPerSec)}/s`,
          );
        }
      }
      if (only.has("latency")) {
        const r = await latency(sys);
        t.latency.push(r);
        console.log(`${label} latency: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
      }
      if (only.has("recovery")) {
        const runs: Recovery[] = [];
        for (const settings of ["default", "aggressive"] as const) {
          const r = await recovery(sys, settings);
          runs.push(r);
          console.log(
            r.documented
              ? `${label} recovery ${settings}: documented ${fmt(r.documented.ms)} ms (${r.description})`
              : `${label} recovery ${settings}: restarted p50 ${fmt(r.restartP50!)} ms p99 ${fmt(r.restartP99!)} ms, done p99 ${fmt(r.doneP99!)} ms, lost ${r.lost}, duplicates ${r.duplicates}`,
          );
        }
        t.recovery.push(runs);
      }
    }
  }
  // Some systems learn their server's version only once set up.
  for (const [sys, t] of trials) t.backend = sys.backend;
  const results: PeerResults = {
    at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model ?? "unknown",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
    },
    tasks: TASKS,
    trials: TRIALS,
    samples: SAMPLES,
    systems: [...trials.values()],
  };
  mkdirSync("bench/results", { recursive: true });
  const file = `bench/results/peers-${results.at.replace(/[:.]/g, "-")}.json`;
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`\nresults: ${file}`);
  // Only a whole run with the default sizes speaks for the docs.
  const full =
    keys.length === Object.keys(SYSTEMS).length &&
    only.size === WORKLOADS.length &&
    TASKS === 20_000 &&
    SAMPLES === 200 &&
    TRIALS >= 3;
  console.log(writeReport(results, args.docs ?? full));
}

await main();
