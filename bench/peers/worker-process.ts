/**
 * Worker processes of the systems under test: spawned with the same environment, their stdout
 * read as {@link WorkerEvent} lines, stopped or SIGKILLed the same way.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { WorkerEvent, WorkerOptions } from "./system.js";

/** A running worker process and the events it printed so far. */
export interface WorkerHandle {
  readonly child: ChildProcess;
  readonly events: WorkerEvent[];
  /** Calls `fn` with each event from now on; returns a function that stops it. */
  on(fn: (e: WorkerEvent) => void): () => void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL; resolves once the process is gone. */
  kill(): Promise<void>;
}

/** The environment variables a worker entry reads its {@link WorkerOptions} from. */
export function workerEnv(o: WorkerOptions): Record<string, string> {
  return {
    BENCH_CONCURRENCY: String(o.concurrency),
    BENCH_SETTINGS: o.settings,
    BENCH_EVENTS: o.events ? "1" : "0",
    BENCH_HOLD: o.hold ? "1" : "0",
  };
}

/** Reads {@link workerEnv} back, in a worker entry. */
export function workerOptions(): WorkerOptions {
  const e = process.env;
  return {
    concurrency: Number(e.BENCH_CONCURRENCY ?? "10"),
    settings: e.BENCH_SETTINGS === "aggressive" ? "aggressive" : "default",
    events: e.BENCH_EVENTS === "1",
    hold: e.BENCH_HOLD === "1",
  };
}

/** Prints an event, in a worker entry. */
export function emit(e: WorkerEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

/**
 * Worker processes not yet exited. A worker outlives an interrupted run unless killed, and the
 * peers' queues have fixed names: a stray worker would take the next run's jobs, and that run
 * would wait for them forever. So every one still running is SIGKILLed when this process exits,
 * and on SIGINT/SIGTERM.
 */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
for (const [signal, code] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const) {
  process.once(signal, () => process.exit(code));
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
export const wallNow = (): number => performance.timeOrigin + performance.now();

/**
 * Spawns `node args…` with `env` added, and resolves once it printed `{"ev":"ready"}`. Lines on
 * stdout that are not events are ignored, and so is stderr. Rejects if the process exits or
 * `timeoutMs` passes first, with the end of what it printed on stderr.
 */
export function spawnWorker(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<WorkerHandle> {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  // Workers' own logs would bury the figures; kept to explain a worker that fails to start.
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4_000);
  });
  const events: WorkerEvent[] = [];
  const listeners = new Set<(e: WorkerEvent) => void>();
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      running.delete(child);
      resolve();
    }),
  );
  createInterface({ input: child.stdout! }).on("line", (line) => {
    if (!line.startsWith("{")) return;
    let e: WorkerEvent;
    try {
      e = JSON.parse(line) as WorkerEvent;
    } catch {
      return;
    }
    if (typeof e.ev !== "string") return;
    events.push(e);
    for (const fn of listeners) fn(e);
  });
  const handle: WorkerHandle = {
    child,
    events,
    on(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(`worker ${args.join(" ")} did not get ready in ${timeoutMs} ms:\n${stderr}`),
      );
    }, timeoutMs);
    const off = handle.on((e) => {
      if (e.ev !== "ready") return;
      clearTimeout(timer);
      off();
      resolve(handle);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `worker ${args.join(" ")} exited before it was ready (${signal ?? code}):\n${stderr}`,
        ),
      );
    });
  });
}
