/**
 * The demo's worker processes: real `mend worker` processes on the demo's store, which the demo
 * starts, kills with SIGKILL (the failure it shows off), replaces, and always cleans up.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MendError } from "../errors.js";
import { newId } from "../model/ids.js";

/** Options of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  storeUrl: string;
  /** Variables added to each worker's environment. */
  env: Record<string, string>;
  /** Tasks each worker runs at once. */
  concurrency: number;
  /** File the workers' stdout and stderr are appended to. */
  logPath: string;
}

/** One worker process. */
export interface WorkerProcess {
  id: string;
  pid: number;
  /** Resolves with the exit code (or the signal's name) when the process has exited. */
  exited: Promise<number | string>;
  alive: boolean;
  /** Killed on purpose by the demo. */
  killed: boolean;
}

/** Heartbeat interval of the demo workers: the default, so the demo shows real recovery times. */
export const HEARTBEAT = "1s";
/** Lease length of the demo workers past their last heartbeat: the default. */
export const LEASE = "5s";

/** How long a demo worker asked to stop lets running tasks finish before it releases them. */
const GRACE = "2s";

const CLI_MAIN = fileURLToPath(new URL("../cli/main.js", import.meta.url));
/** The demo handlers module, as a path for `mend worker --handlers`. */
export const DEMO_HANDLERS_PATH = fileURLToPath(new URL("./handlers.js", import.meta.url));

/** Starts and stops `mend worker` child processes running the demo handlers. */
export class WorkerPool {
  private readonly processes = new Map<string, { info: WorkerProcess; child: ChildProcess }>();
  private readonly logFd: number;
  private closed = false;
  private readonly killOnExit = () => this.killAllNow();

  constructor(private readonly options: WorkerPoolOptions) {
    this.logFd = openSync(options.logPath, "a");
    // A demo that dies or exits early must not leave workers behind.
    process.on("exit", this.killOnExit);
  }

  /** Every worker started so far, in start order. */
  get all(): WorkerProcess[] {
    return [...this.processes.values()].map((p) => p.info);
  }

  /** Workers still running. */
  get alive(): WorkerProcess[] {
    return this.all.filter((w) => w.alive);
  }

  /** The worker with OS process id `pid`, if this pool started it. */
  byPid(pid: number): WorkerProcess | undefined {
    return this.all.find((w) => w.pid === pid);
  }

  /**
   * Starts one worker process.
   *
   * @throws MendError `internal` when the process cannot be started.
   */
  start(): WorkerProcess {
    const id = newId("w", Date.now());
    const child = spawn(
      process.execPath,
      [
        CLI_MAIN,
        "worker",
        "--handlers",
        DEMO_HANDLERS_PATH,
        "--store",
        this.options.storeUrl,
        "--concurrency",
        String(this.options.concurrency),
        "--heartbeat",
        HEARTBEAT,
        "--lease",
        LEASE,
        "--grace",
        GRACE,
        "--id",
        id,
      ],
      {
        env: { ...process.env, ...this.options.env },
        stdio: ["ignore", this.logFd, this.logFd],
      },
    );
    if (child.pid === undefined) {
      throw new MendError("internal", `could not start a worker process (${process.execPath})`);
    }
    const info: WorkerProcess = {
      id,
      pid: child.pid,
      alive: true,
      killed: false,
      exited: new Promise((resolve) => {
        child.once("exit", (code, signal) => {
          info.alive = false;
          resolve(code ?? signal ?? "unknown");
        });
      }),
    };
    this.processes.set(id, { info, child });
    return info;
  }

  /** SIGKILLs worker `id`, as a crash would, and waits until it is gone. */
  async kill(id: string): Promise<void> {
    const p = this.processes.get(id);
    if (!p?.info.alive) return;
    p.info.killed = true;
    p.child.kill("SIGKILL");
    await p.info.exited;
  }

  /**
   * Asks every worker to stop (SIGTERM: finish or release running tasks), SIGKILLs those still
   * running after `graceMs`, and closes the log.
   */
  async stopAll(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const alive = [...this.processes.values()].filter((p) => p.info.alive);
    for (const p of alive) p.child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const gone = Promise.all(alive.map((p) => p.info.exited));
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), graceMs);
    });
    if ((await Promise.race([gone, late])) === "late") {
      this.killAllNow();
      await gone;
    }
    clearTimeout(timer);
    process.off("exit", this.killOnExit);
    closeSync(this.logFd);
  }

  private killAllNow(): void {
    for (const p of this.processes.values()) {
      if (p.info.alive) p.child.kill("SIGKILL");
    }
  }
}
