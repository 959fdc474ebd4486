/**
 * Runs the demo: starts worker processes on a store, submits the research workstream, watches it
 * with live progress, SIGKILLs one worker while it holds running tasks (and starts a replacement),
 * and at the end computes the recovery report from the store's transition log.
 *
 * The demo process itself runs no task: everything happens in the workers, through the store, as
 * it would in production. It uses real timers; engine code inside the workers uses the clock.
 */
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { submitWorkstream } from "../engine/submit.js";
import { MendError } from "../errors.js";
import type { TaskRecord, TransitionRecord } from "../model/records.js";
import { openStore } from "../store/open.js";
import type { Store } from "../store/store.js";
import { demoEnv } from "./config.js";
import type { LiveDisplay } from "./display.js";
import { Narrator } from "./display.js";
import handlers from "./handlers.js";
import { readLedger } from "./ledger.js";
import { COMPLETION_EVENTS, computeMetrics, type RecoveryMetrics } from "../observe/metrics.js";
import { computeReport, type RecoveryReport } from "./report.js";
import { MAX_AGENTS, RESEARCH_HANDLERS, researchWorkstream, SEARCH_BREAKER } from "./research.js";
import { LEASE, WorkerPool, type WorkerProcess } from "./workers.js";

/** Tasks each demo worker runs at once. */
export const DEMO_CONCURRENCY = 4;
/** Most worker processes the demo starts at once. */
export const MAX_WORKERS = 16;
/** How often the demo reads progress and new events. */
const POLL_MS = 200;
/** A workstream still running after this long is given up on (the report then shows it). */
const DEADLINE_MS = 120_000;
/** How long the workers have to register before the demo gives up. */
const REGISTER_TIMEOUT_MS = 20_000;
/** How long a worker's tasks have been running before the demo kills it. */
const KILL_AFTER_RUNNING_MS = 300;
/** How long workers have to exit after SIGTERM before they are killed. */
const STOP_GRACE_MS = 5_000;
/** How long a failed workstream is watched for revivals (a few monitor sweeps) before it counts. */
const REVIVAL_GRACE_MS = 3_000;
/** The staged outage of the search API lasts at least this long… */
const OUTAGE_MIN_MS = 3_000;
/** …and ends once a half-open probe has failed, or after this long at most. */
const OUTAGE_MAX_MS = 8_000;

/** Options of {@link runDemo}. */
export interface DemoOptions {
  seed: number;
  /** Researcher agents (search tasks). */
  agents: number;
  /** Probability in [0, 1] that an attempt hits an injected fault. */
  faultRate: number;
  /** Worker processes to start. */
  workers: number;
  /** Store URL; default a fresh store from {@link freshDemoStoreUrl}. */
  storeUrl?: string;
  /** Stage an outage of the search API while the researchers work (default true). */
  outage?: boolean;
  /** Where live progress and events go; null for none (JSON output). */
  display: LiveDisplay | null;
}

/** The staged outage: when the search API went down and came back, in ms since the demo started. */
export interface Outage {
  startedAtMs: number;
  endedAtMs: number | null;
}

/** What the search API's circuit breaker did, from the log. */
export interface BreakerSummary {
  name: string;
  opened: number;
  halfOpened: number;
  closed: number;
  /** Time spent open (not half-open), in ms. */
  openMs: number;
  /** Its state at the end. */
  status: string;
}

/** The worker the demo killed. */
export interface KilledWorker {
  workerId: string;
  pid: number;
  /** Keys of the tasks it was running. */
  tasks: string[];
  /** When, in ms since the demo started. */
  atMs: number;
  /** From the kill until the monitor requeued the first of its tasks; null if it never did. */
  requeuedAfterMs: number | null;
  /** From the kill until the last of its tasks completed; null unless all of them did. */
  recoveredAfterMs: number | null;
}

/** What a demo run did and its recovery report. */
export interface DemoResult {
  store: string;
  /** Side-effect ledger the handlers appended to. */
  ledger: string;
  /** The worker processes' output. */
  workerLog: string;
  seed: number;
  agents: number;
  faultRate: number;
  workers: { workerId: string; pid: number; killed: boolean }[];
  killed: KilledWorker | null;
  replacement: { workerId: string; pid: number } | null;
  /** Stopped early by SIGINT or SIGTERM. */
  interrupted: boolean;
  /** Gave up waiting for the workstream. */
  timedOut: boolean;
  /** Whole demo, workers' start and stop included. */
  elapsedMs: number;
  report: RecoveryReport;
  outage: Outage | null;
  breaker: BreakerSummary | null;
  /** Tasks that failed for good and were revived once their cause cleared. */
  revived: { task: string; cause: string; confidence: number; completed: boolean }[];
  /** The recovery metrics of the whole run, as `mend metrics` computes them. */
  metrics: RecoveryMetrics;
}

/**
 * A store URL for a new demo run, `sqlite:.mend/demo-YYYYMMDD-HHMMSS.db` under `cwd`, so that runs
 * never mix.
 */
export function freshDemoStoreUrl(now = new Date(), cwd = process.cwd()): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  let path = join(".mend", `demo-${stamp}.db`);
  for (let n = 2; existsSync(resolve(cwd, path)); n++)
    path = join(".mend", `demo-${stamp}-${n}.db`);
  return `sqlite:${path}`;
}

/** The demo's side files, next to a SQLite store (else in the temporary directory). */
function sideFiles(storeUrl: string): { ledger: string; workerLog: string; outage: string } {
  const base = storeUrl.startsWith("sqlite:")
    ? storeUrl.slice("sqlite:".length).replace(/\.db$/, "")
    : join(tmpdir(), `mend-demo-${process.pid}`);
  return {
    ledger: `${base}.ledger.jsonl`,
    workerLog: `${base}.workers.log`,
    outage: `${base}.outage`,
  };
}

/**
 * Checks the options' ranges.
 *
 * @throws MendError `invalid_argument` listing every problem.
 */
export function validateDemoOptions(
  options: Pick<DemoOptions, "seed" | "agents" | "faultRate" | "workers">,
): void {
  const problems: string[] = [];
  if (!Number.isInteger(options.agents) || options.agents < 1 || options.agents > MAX_AGENTS) {
    problems.push(`--agents must be an integer from 1 to ${MAX_AGENTS}, got ${options.agents}`);
  }
  if (!Number.isInteger(options.workers) || options.workers < 1 || options.workers > MAX_WORKERS) {
    problems.push(`--workers must be an integer from 1 to ${MAX_WORKERS}, got ${options.workers}`);
  }
  if (!(options.faultRate >= 0 && options.faultRate <= 1)) {
    problems.push(`--fault-rate must be from 0 to 1, got ${options.faultRate}`);
  }
  if (!Number.isSafeInteger(options.seed)) {
    problems.push(`--seed must be an integer, got ${options.seed}`);
  }
  if (problems.length > 0) {
    throw new MendError("invalid_argument", problems.join("; "), { problems });
  }
}

/** The kill as it happened, before its outcome is known. */
interface Kill {
  workerId: string;
  pid: number;
  tasks: string[];
  at: number;
}

/** The kill with how long its tasks took to be requeued and to complete, from the log. */
function describeKill(
  kill: Kill,
  startedAt: number,
  transitions: readonly TransitionRecord[],
): KilledWorker {
  const lost = transitions.filter(
    (t) => t.event === "worker_lost" && (t.detail as { worker?: string }).worker === kill.workerId,
  );
  const lostIds = new Set(lost.map((t) => t.entityId));
  const completions = transitions.filter(
    (t) => lostIds.has(t.entityId) && COMPLETION_EVENTS.has(t.event),
  );
  const allCompleted = lostIds.size === kill.tasks.length && completions.length === lostIds.size;
  return {
    workerId: kill.workerId,
    pid: kill.pid,
    tasks: kill.tasks,
    atMs: kill.at - startedAt,
    requeuedAfterMs: lost.length === 0 ? null : Math.min(...lost.map((t) => t.at)) - kill.at,
    recoveredAfterMs: allCompleted ? Math.max(...completions.map((t) => t.at)) - kill.at : null,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Whether to start the outage now: once research is under way and the worker kill is done (or,
 * when there was nothing to kill, a second into the research), so both can be told apart.
 */
function outageDue(tasks: readonly TaskRecord[], kill: Kill | null, now: number): boolean {
  const researching = tasks.filter(
    (t) => t.handler === RESEARCH_HANDLERS.research && t.status === "running",
  );
  if (researching.length === 0) return false;
  return kill !== null || researching.some((t) => now - t.updatedAt > 1_000);
}

/**
 * What a breaker did over the log: opened, open time and final state as the metrics count them,
 * and how many probe rounds and closes.
 */
function summarizeBreaker(
  name: string,
  log: readonly TransitionRecord[],
  metrics: RecoveryMetrics,
): BreakerSummary | null {
  const counted = metrics.breakers[name];
  if (!counted) return null;
  const count = (event: string) =>
    log.filter((t) => t.entity === "breaker" && t.entityId === name && t.event === event).length;
  return {
    name,
    opened: counted.opened,
    halfOpened: count("breaker_half_opened"),
    closed: count("breaker_closed"),
    openMs: counted.openMs,
    status: counted.state,
  };
}

/** The revivals in a workstream's log, and whether each revived task then completed. */
function describeRevivals(transitions: readonly TransitionRecord[]): DemoResult["revived"] {
  return transitions
    .filter((t) => t.event === "task_revived")
    .map((t) => {
      const d = t.detail as { cause: string; confidence: number };
      return {
        task: t.entityId.slice(t.entityId.lastIndexOf("/") + 1),
        cause: d.cause,
        confidence: d.confidence,
        completed: transitions.some(
          (c) => c.entityId === t.entityId && c.seq > t.seq && COMPLETION_EVENTS.has(c.event),
        ),
      };
    });
}

/**
 * Waits until every worker in `started` has registered in the store.
 *
 * @throws MendError `internal` when one exits first or they take too long.
 */
async function waitRegistered(
  store: Store,
  started: WorkerProcess[],
  logPath: string,
): Promise<void> {
  const deadline = Date.now() + REGISTER_TIMEOUT_MS;
  for (;;) {
    const dead = started.find((w) => !w.alive);
    if (dead) {
      throw new MendError(
        "internal",
        `worker ${dead.id} exited during startup (${await dead.exited}); see ${logPath}`,
        { workerId: dead.id, log: logPath },
      );
    }
    const records = await store.listWorkers();
    const registered = (w: WorkerProcess) =>
      records.some((r) => r.id === w.id && r.status !== "shutdown");
    if (started.every(registered)) return;
    if (Date.now() > deadline) {
      throw new MendError(
        "internal",
        `workers did not register within ${REGISTER_TIMEOUT_MS / 1000}s; see ${logPath}`,
        { log: logPath },
      );
    }
    await sleep(100);
  }
}

/**
 * The worker to kill: the one running the most research tasks, once it has been running at least
 * two (or the only one, with a single agent) for a moment, so that the kill interrupts work in
 * progress rather than tasks it has only just claimed.
 */
function pickVictim(tasks: readonly TaskRecord[], agents: number, now: number) {
  const held = new Map<string, string[]>();
  for (const t of tasks) {
    if (
      t.status !== "running" ||
      t.handler !== RESEARCH_HANDLERS.research ||
      !t.leaseWorker ||
      // A running task's updatedAt is its claim: heartbeats renew the lease without a transition.
      now - t.updatedAt < KILL_AFTER_RUNNING_MS
    ) {
      continue;
    }
    held.set(t.leaseWorker, [...(held.get(t.leaseWorker) ?? []), t.key]);
  }
  const [best] = [...held].sort(([, a], [, b]) => b.length - a.length);
  if (!best || best[1].length < Math.min(2, agents)) return null;
  return { workerId: best[0], tasks: best[1] };
}

/**
 * Runs the demo to the end and returns its report. Worker processes are always stopped, also on
 * error or interruption.
 *
 * @throws MendError `invalid_argument` for out-of-range options (before anything is started);
 *   `internal` when the workers cannot be started or all of them exit.
 */
export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  validateDemoOptions(options);
  const startedAt = Date.now();
  const elapsed = () => Date.now() - startedAt;
  const display = options.display;
  const store = await openStore(options.storeUrl ?? freshDemoStoreUrl());
  const files = sideFiles(store.url);
  const pool = new WorkerPool({
    storeUrl: store.url,
    env: demoEnv({
      seed: options.seed,
      rate: options.faultRate,
      ledger: files.ledger,
      outage: files.outage,
    }),
    concurrency: DEMO_CONCURRENCY,
    logPath: files.workerLog,
  });

  let interrupted = false;
  const onSignal = () => {
    // A second signal means "now": exiting kills the workers (see WorkerPool).
    if (interrupted) process.exit(130);
    interrupted = true;
    display?.event("■ interrupted: stopping the workers (again to quit at once)");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    const started = Array.from({ length: options.workers }, () => pool.start());
    await waitRegistered(store, started, files.workerLog);
    for (const w of started) display?.event(`● worker ${w.id} started (pid ${w.pid})`);

    const { workstreamId } = await submitWorkstream(store, researchWorkstream(options.agents), {
      handlers,
      actor: "demo",
    });
    const submittedAt = Date.now();
    display?.event(
      `● submitted research ${workstreamId}: plan → ${options.agents} researcher${options.agents === 1 ? "" : "s"} → write → review`,
    );

    const narrator = new Narrator();
    const reportedExits = new Set<string>();
    let afterSeq = 0;
    let kill: Kill | null = null;
    let replacement: WorkerProcess | null = null;
    let timedOut = false;
    let outage: Outage | null = null;
    let failedSince: number | null = null;
    const endOutage = () => {
      rmSync(files.outage, { force: true });
      if (outage && outage.endedAtMs === null) {
        outage.endedAtMs = elapsed();
        display?.event("● outage over: the search API answers again");
      }
    };
    for (;;) {
      const ws = (await store.getWorkstream(workstreamId))!;
      const tasks = await store.listTasks(workstreamId);
      // The whole log, not only the workstream's: breakers and patterns belong to no workstream.
      for (const t of await store.listTransitions({ afterSeq })) {
        afterSeq = t.seq;
        const line = narrator.narrate(t);
        if (line) display?.event(line);
      }
      display?.update(
        "research",
        tasks,
        `failures ${narrator.failures}  recovered ${narrator.recovered}  revived ${narrator.revived}  workers ${pool.alive.length}`,
      );
      if (outage === null && options.outage !== false && outageDue(tasks, kill, Date.now())) {
        writeFileSync(files.outage, "");
        outage = { startedAtMs: elapsed(), endedAtMs: null };
        display?.event(
          `✗ outage: the search API answers 503 to every call (breaker ${SEARCH_BREAKER} guards it)`,
        );
      } else if (outage?.endedAtMs === null) {
        const lasted = elapsed() - outage.startedAtMs;
        // Ends once a probe failed (the breaker opened twice), so the demo shows the breaker
        // reopening, and then closing and reviving the tasks that failed meanwhile.
        if (lasted >= OUTAGE_MAX_MS || (lasted >= OUTAGE_MIN_MS && narrator.breakerOpened >= 2)) {
          endOutage();
        }
      }
      if (ws.status !== "active") {
        // A workstream that failed may come back: the monitor revives tasks whose cause has
        // cleared on its next sweeps. Only a failure that stays is the end.
        failedSince ??= Date.now();
        if (ws.status !== "failed" || Date.now() - failedSince > REVIVAL_GRACE_MS) break;
      } else {
        failedSince = null;
      }
      if (interrupted) break;
      if (Date.now() - submittedAt > DEADLINE_MS) {
        timedOut = true;
        display?.event(`✗ the workstream did not finish within ${DEADLINE_MS / 1000}s; stopping`);
        break;
      }

      for (const w of pool.all) {
        if (w.alive || w.killed || reportedExits.has(w.id)) continue;
        reportedExits.add(w.id);
        display?.event(
          `✗ worker ${w.id} (pid ${w.pid}) exited unexpectedly (${await w.exited}); see ${files.workerLog}`,
        );
      }
      if (pool.alive.length === 0) {
        throw new MendError("internal", `every demo worker exited; see ${files.workerLog}`, {
          log: files.workerLog,
        });
      }

      if (kill === null) {
        const victim = pickVictim(tasks, options.agents, Date.now());
        // The pid comes from the store, as an operator would find it; only our own child is killed.
        const record = victim && (await store.listWorkers()).find((w) => w.id === victim.workerId);
        const proc = record ? pool.byPid(record.pid) : undefined;
        if (victim && record && proc?.alive) {
          await pool.kill(proc.id);
          kill = { workerId: proc.id, pid: proc.pid, tasks: victim.tasks, at: Date.now() };
          display?.event(
            `✗ killed worker ${proc.id} (pid ${proc.pid}) holding ${victim.tasks.length} task${victim.tasks.length === 1 ? "" : "s"} (${victim.tasks.join(", ")}) — its leases expire in ≤${LEASE} and another worker takes over`,
          );
          replacement = pool.start();
          display?.event(`● started replacement worker ${replacement.id} (pid ${replacement.pid})`);
        }
      }
      await sleep(POLL_MS);
    }
    endOutage();
    await pool.stopAll(STOP_GRACE_MS);
    const workstream = (await store.getWorkstream(workstreamId))!;
    const tasks = await store.listTasks(workstreamId);
    const log = await store.listTransitions();
    const transitions = log.filter((t) => t.workstreamId === workstreamId);
    const executions = await readLedger(files.ledger);
    const report = computeReport({ workstream, tasks, transitions, executions });
    const metrics = computeMetrics({
      transitions: log,
      interventions: await store.listInterventions(),
      to: Date.now(),
    });
    return {
      store: store.url,
      ledger: files.ledger,
      workerLog: files.workerLog,
      seed: options.seed,
      agents: options.agents,
      faultRate: options.faultRate,
      workers: pool.all.map((w) => ({ workerId: w.id, pid: w.pid, killed: w.killed })),
      killed: kill && describeKill(kill, startedAt, transitions),
      replacement: replacement && { workerId: replacement.id, pid: replacement.pid },
      interrupted,
      timedOut,
      elapsedMs: elapsed(),
      report,
      outage,
      breaker: summarizeBreaker(SEARCH_BREAKER, log, metrics),
      revived: describeRevivals(transitions),
      metrics,
    };
  } finally {
    rmSync(files.outage, { force: true });
    display?.done();
    await pool.stopAll(STOP_GRACE_MS);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await store.close();
  }
}
