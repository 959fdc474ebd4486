/**
 * `npm run bench:peers`: Mend beside the systems its users would pick instead, on the same
 * machine in the same run: the same workloads for each, trials alternating between systems,
 * medians reported with Mend's ratio to the best peer. Writes JSON to bench/results/ and the
 * generated part of docs/benchmarks.md (./report.ts). Run from the repository root.
 *
 * Workloads (`--only`, comma-separated; all by default): `throughput`, `latency`, `recovery`,
 * `memory` (an idle worker beside `--queued` jobs it does not take), and `replay` (Mend only:
 * bench/replay.ts rebuilding a store from `--transitions` transitions, run once after the others).
 * The peers' worker entries are first transpiled to plain JavaScript (./build-workers.ts), so
 * every system's workers run as plain `node` processes.
 */
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { quantile } from "../stats.js";
import { buildWorkers } from "./build-workers.js";
import { type PolicyOverhead, policyOverhead } from "./policy.js";
import { duration, fmt, writeReport } from "./report.js";
import {
  type Latency,
  type Memory,
  type PeerResults,
  type RecoveredJob,
  type Recovery,
  type Replay,
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
const WORKLOADS = ["throughput", "latency", "recovery", "memory", "replay", "policy"] as const;
type Workload = (typeof WORKLOADS)[number];

const { values: args } = parseArgs({
  options: {
    tasks: { type: "string", default: "20000" },
    trials: { type: "string", default: "3" },
    samples: { type: "string", default: "200" },
    systems: { type: "string", default: Object.keys(SYSTEMS).join(",") },
    only: { type: "string", default: WORKLOADS.join(",") },
    /** Jobs queued beside the idle worker of the memory workload. */
    queued: { type: "string", default: "100000" },
    /** Transitions the replay workload rebuilds from. */
    transitions: { type: "string", default: "1000000" },
    /** Write docs/benchmarks.md's generated part from this run (default: only for a whole run with the default sizes). */
    docs: { type: "boolean" },
  },
});
const TASKS = Number(args.tasks);
const TRIALS = Number(args.trials);
const SAMPLES = Number(args.samples);
const QUEUED = Number(args.queued);
const TRANSITIONS = Number(args.transitions);
const keys = args.systems.split(",").map((k) => k.trim());
for (const k of keys) {
  if (!SYSTEMS[k])
    throw new Error(`unknown system ${k}; known: ${Object.keys(SYSTEMS).join(", ")}`);
}
const only = new Set(args.only.split(",").map((w) => w.trim()) as Workload[]);
for (const w of only) {
  if (!WORKLOADS.includes(w))
    throw new Error(`unknown workload ${w}; known: ${WORKLOADS.join(", ")}`);
}

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
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(
        new Error(
          `no ${kind} event for job ${id} from worker ${w.child.pid} in ${EVENT_TIMEOUT_MS / 1000} s: did another process take it (a worker left over from an interrupted run)?`,
        ),
      );
    }, EVENT_TIMEOUT_MS);
    const off = w.on((e) => {
      if (e.ev === kind && e.id === id) {
        clearTimeout(timer);
        off();
        resolve(e.t);
      }
    });
  });
}

/** How long a job's start or end may take to show before the run gives up on it. */
const EVENT_TIMEOUT_MS = 60_000;

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
    // The next job goes once this one's completion is recorded, so it never waits behind it.
    await waitCompleted(sys, i + 1);
    if (i >= 10) samples.push(t - t0);
  }
  await w.stop();
  await sys.teardown();
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) };
}

const HELD = 10;

/** The time of the first `ev` event a worker printed for job `id`, if any. */
function firstEvent(w: WorkerHandle, ev: "start" | "done", id: string): number | undefined {
  for (const e of w.events) if (e.ev === ev && e.id === id) return e.t;
  return undefined;
}

/**
 * A worker holding jobs is SIGKILLed; another worker, started before the kill, waits. Time until
 * it restarts each job and finishes it, from the kill (the issue's figure) and from when the
 * killed worker had started the job; jobs never finished are lost, finished twice duplicated.
 * Nothing is clamped: a job restarted before the kill counts with a negative time.
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
  // Read off every event the rescuer printed, those before this listener included.
  const allDone = new Promise<void>((resolve) => {
    const check = () => {
      if (held.every((j) => firstEvent(rescuer, "done", j.id) !== undefined)) resolve();
    };
    rescuer.on(check);
    check();
  });
  const killedAt = wallNow();
  await victim.kill();
  await withTimeout(allDone, 300_000, "").catch(() => undefined);
  // A job finished twice would show within a moment.
  await sleep(1_000);
  await rescuer.stop();
  await sys.teardown();
  const ids = new Set(held.map((j) => j.id));
  const perJob: RecoveredJob[] = held.map(({ id }) => {
    const at = (t: number | undefined) => (t === undefined ? undefined : t - killedAt);
    const job: RecoveredJob = { id, started: at(firstEvent(victim, "start", id))! };
    const restarted = at(firstEvent(rescuer, "start", id));
    const done = at(firstEvent(rescuer, "done", id));
    if (restarted !== undefined) job.restarted = restarted;
    if (done !== undefined) job.done = done;
    return job;
  });
  const restarted = perJob.filter((j) => j.restarted !== undefined);
  const finished = perJob.filter((j) => j.done !== undefined);
  const completions = rescuer.events.filter((e) => e.ev === "done" && ids.has(e.id)).length;
  const restart = restarted.map((j) => j.restarted!);
  const restartFromStart = restarted.map((j) => j.restarted! - j.started);
  const done = finished.map((j) => j.done!);
  const doneFromStart = finished.map((j) => j.done! - j.started);
  return {
    settings,
    description,
    restartP50: quantile(restart, 0.5),
    restartP99: quantile(restart, 0.99),
    doneP99: quantile(done, 0.99),
    fromStart: {
      restartP50: quantile(restartFromStart, 0.5),
      restartP99: quantile(restartFromStart, 0.99),
      doneP99: quantile(doneFromStart, 0.99),
    },
    killAfterStart: -Math.max(...perJob.map((j) => j.started)),
    lost: HELD - finished.length,
    duplicates: completions - finished.length,
    jobs: perJob,
  };
}

/**
 * How long the memory workload's worker idles before its memory is read. Every system's worker
 * gives back 5-11 MiB about 8 s after it started (V8's memory reducer, once the process is idle):
 * read well after that, the figure is the settled idle state rather than a race with it.
 */
const IDLE_MS = 15_000;
const MEMORY_CONCURRENCY = 50;

/** VmRSS and VmHWM of a process, in MiB, from /proc/<pid>/status (Linux). */
function residentMemory(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]) / 1024;
  };
  return { rssMiB: kib("VmRSS"), hwmMiB: kib("VmHWM") };
}

/**
 * A fresh setup with `QUEUED` jobs no worker takes (`other`, ./system.ts), one worker with the
 * defaults started beside them and left idle, then its resident memory.
 */
async function memory(sys: System): Promise<Memory> {
  await sys.setup();
  await sys.enqueue(jobs(QUEUED, "other", "m"));
  const w = await sys.startWorker({
    concurrency: MEMORY_CONCURRENCY,
    settings: "default",
    events: false,
    hold: false,
  });
  const samples: number[] = [];
  for (let waited = 0; waited < IDLE_MS; waited += 1_000) {
    await sleep(1_000);
    samples.push(residentMemory(w.child.pid!).rssMiB);
  }
  const { rssMiB, hwmMiB } = residentMemory(w.child.pid!);
  const completed = await sys.completed();
  await w.stop();
  await sys.teardown();
  return {
    queued: QUEUED,
    concurrency: MEMORY_CONCURRENCY,
    idleMs: IDLE_MS,
    rssMiB,
    hwmMiB,
    rssEachSecondMiB: samples,
    completed,
  };
}

/**
 * Mend's rebuild from its transition journal: bench/replay.ts (what `npm run bench:replay` runs)
 * in a process of its own, with `--json`; its progress shows on stderr.
 */
function replay(): Promise<Replay> {
  const argv = ["--import", "tsx", "bench/replay.ts", "--json"];
  argv.push("--transitions", String(TRANSITIONS), "--trials", String(TRIALS));
  const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      const line = out.split("\n").findLast((l) => l.startsWith("{"));
      if (code !== 0 || !line) {
        reject(new Error(`bench/replay.ts --json failed (${signal ?? code}):\n${out}`));
      } else {
        resolve(JSON.parse(line) as Replay);
      }
    });
  });
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
  buildWorkers();
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
        memory: [],
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
              ? `${label} recovery ${settings}: documented ${duration(r.documented.ms)} (${r.description})`
              : `${label} recovery ${settings}: after the kill, restarted p50 ${duration(r.restartP50!)} p99 ${duration(r.restartP99!)}, done p99 ${duration(r.doneP99!)}; after the victim started the jobs, restarted p99 ${duration(r.fromStart!.restartP99)} (killed ${duration(r.killAfterStart!)} after the last start); lost ${r.lost}, duplicates ${r.duplicates}`,
          );
        }
        t.recovery.push(runs);
      }
      if (only.has("memory")) {
        const r = await memory(sys);
        t.memory.push(r);
        console.log(
          `${label} memory: idle worker RSS ${r.rssMiB.toFixed(1)} MiB (peak ${r.hwmMiB.toFixed(1)} MiB) beside ${fmt(r.queued)} queued jobs it does not take${r.completed > 0 ? `; ${fmt(r.completed)} of them completed: it took them` : ""}`,
        );
      }
    }
  }
  const policy: PolicyOverhead[] = [];
  if (only.has("policy")) {
    for (let trial = 0; trial < TRIALS; trial++) {
      const r = await policyOverhead();
      policy.push(r);
      console.log(
        `[trial ${trial + 1}/${TRIALS}] call policy: Mend ${fmt(r.mend)} ns, ${r.version} ${fmt(r.cockatiel)} ns per call (reading the signal: ${fmt(r.withSignal.mend)} / ${fmt(r.withSignal.cockatiel)} ns)`,
      );
    }
  }
  let replayed: Replay | undefined;
  if (only.has("replay") && keys.includes("mend-sqlite")) {
    console.log(`replay: filling a store with ${fmt(TRANSITIONS)} transitions, then rebuilding it`);
    replayed = await replay();
    console.log(
      `replay: rebuild from ${fmt(replayed.transitions)} transitions, median ${duration(replayed.medianMs)}`,
    );
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
    queued: QUEUED,
    systems: [...trials.values()],
    ...(replayed && { replay: replayed }),
    ...(policy.length > 0 && { policy }),
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
    QUEUED === 100_000 &&
    TRANSITIONS === 1_000_000 &&
    TRIALS >= 3;
  console.log(await writeReport(results, args.docs ?? full));
}

await main();
