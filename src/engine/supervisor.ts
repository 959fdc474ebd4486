/**
 * `mend worker --supervise`: a small parent process that runs the real worker as its child and
 * starts it again when it dies (a crash, a SIGKILL, an out-of-memory kill) or asks to be restarted
 * (`mend worker restart ID`), with exponential backoff between crash restarts and a crash-loop
 * limit. Signals it receives go to the worker, which stops gracefully; the supervisor exits once
 * the worker has.
 */
import { spawn } from "node:child_process";
import type { RetryRule } from "../model/spec.js";
import { type Logger, silentLogger } from "../observe/logger.js";
import { backoffDelay } from "../recovery/backoff.js";
import { type Clock, systemClock, type TimerHandle } from "./clock.js";

/** The exit code with which a worker asks its supervisor to start it again at once. */
export const RESTART_EXIT_CODE = 75;
/** Set (to `1`) in a supervised worker's environment: it registers as supervised. */
export const SUPERVISED_ENV = "MEND_SUPERVISED";

/** Crash restarts allowed within {@link DEFAULT_RESTART_WINDOW_MS} before the supervisor gives up. */
export const DEFAULT_MAX_RESTARTS = 5;
export const DEFAULT_RESTART_WINDOW_MS = 60_000;
/** Delay before restarting a crashed worker: 0.5 s, doubling per crash in the window, at most 30 s. */
export const DEFAULT_RESTART_BACKOFF: RetryRule = Object.freeze({
  maxAttempts: DEFAULT_MAX_RESTARTS + 1,
  backoff: "exponential",
  initialMs: 500,
  factor: 2,
  maxDelayMs: 30_000,
  jitter: "none",
}) as RetryRule;

/** How a worker process ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A worker process as the supervisor sees it. */
export interface SupervisedProcess {
  readonly pid: number | undefined;
  /** Settles once the process has exited (or could not be started: code and signal null). */
  readonly exited: Promise<ChildExit>;
  kill(signal: NodeJS.Signals): void;
}

/** Why a worker process is being started. */
export type StartReason = "first" | "crashed" | "restart_requested";

/** Options of a {@link Supervisor}. Durations in milliseconds. */
export interface SupervisorOptions {
  /** Starts one worker process. */
  start: () => SupervisedProcess;
  /** Crash restarts allowed within `windowMs`; one more and the supervisor gives up (default 5). */
  maxRestarts?: number;
  /** The crash-loop window (default 60 000). */
  windowMs?: number;
  /** Delay before crash restart number n within the window (default {@link DEFAULT_RESTART_BACKOFF}). */
  backoff?: RetryRule;
  random?: () => number;
  clock?: Clock;
  logger?: Logger;
  /** Called after each start. */
  onStart?: (child: SupervisedProcess, why: StartReason) => void;
  /** Called when a crashed worker will be started again after `delayMs`. */
  onCrash?: (exit: ChildExit, delayMs: number, restarts: number) => void;
}

/** Why the supervisor stopped. */
export type SupervisorOutcome =
  /** The worker exited on its own terms (a shutdown request, a signal passed on to it). */
  | { kind: "stopped"; exit: ChildExit }
  /** The worker crashed more than `maxRestarts` times within `windowMs`. */
  | { kind: "gave_up"; exit: ChildExit; restarts: number; windowMs: number };

/**
 * Runs a worker process and keeps it running. A worker that exits 0 was asked to stop (an
 * operator's shutdown) and is not started again; one that exits with {@link RESTART_EXIT_CODE} is
 * started again at once; any other exit is a crash, restarted after a backoff unless it is one
 * too many within the window.
 */
export class Supervisor {
  private readonly maxRestarts: number;
  private readonly windowMs: number;
  private readonly backoff: RetryRule;
  private readonly random: () => number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private child: SupervisedProcess | null = null;
  private stopping = false;
  /** Ends a backoff wait early (a signal arrived). */
  private interrupt: (() => void) | null = null;
  /** Times of the crash restarts within the window. */
  private crashes: number[] = [];
  private lastDelayMs: number | null = null;

  constructor(private readonly options: SupervisorOptions) {
    this.maxRestarts = options.maxRestarts ?? DEFAULT_MAX_RESTARTS;
    this.windowMs = options.windowMs ?? DEFAULT_RESTART_WINDOW_MS;
    this.backoff = options.backoff ?? DEFAULT_RESTART_BACKOFF;
    this.random = options.random ?? Math.random;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
  }

  /** The worker process running now, if any. */
  get current(): SupervisedProcess | null {
    return this.child;
  }

  /** Runs workers until one stops on its own terms or they crash too often. */
  async run(): Promise<SupervisorOutcome> {
    let why: StartReason = "first";
    for (;;) {
      const child = this.options.start();
      this.child = child;
      this.options.onStart?.(child, why);
      const exit = await child.exited;
      this.child = null;
      if (this.stopping || exit.code === 0) return { kind: "stopped", exit };
      if (exit.code === RESTART_EXIT_CODE) {
        this.log.info("worker asked to be restarted", { pid: child.pid });
        why = "restart_requested";
        continue;
      }
      const now = this.clock.now();
      this.crashes = this.crashes.filter((at) => at > now - this.windowMs);
      if (this.crashes.length >= this.maxRestarts) {
        return { kind: "gave_up", exit, restarts: this.crashes.length, windowMs: this.windowMs };
      }
      this.crashes.push(now);
      const delayMs = backoffDelay(
        this.backoff,
        this.crashes.length,
        this.lastDelayMs,
        this.random,
      );
      this.lastDelayMs = delayMs;
      this.log.warn("worker crashed; restarting", { pid: child.pid, ...exit, delayMs });
      this.options.onCrash?.(exit, delayMs, this.crashes.length);
      await this.sleep(delayMs);
      if (this.stopping) return { kind: "stopped", exit };
      why = "crashed";
    }
  }

  /**
   * Passes a signal on to the worker, which stops gracefully (a second one stops it at once); the
   * supervisor then returns without starting it again.
   */
  signal(signal: NodeJS.Signals): void {
    this.stopping = true;
    if (this.child) this.child.kill(signal);
    else this.interrupt?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: TimerHandle | null = null;
      const done = () => {
        if (timer) this.clock.clearTimeout(timer);
        this.interrupt = null;
        resolve();
      };
      this.interrupt = done;
      timer = this.clock.setTimeout(done, ms);
    });
  }
}

/**
 * Starts `node <script> ...args` as a supervised worker: in its own process group, so that a
 * terminal's Ctrl-C reaches it once, through the supervisor, rather than twice (which would stop
 * it at once); with an IPC channel, whose closing tells the worker its supervisor is gone.
 */
export function spawnWorkerProcess(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): SupervisedProcess {
  const child = spawn(process.execPath, [...process.execArgv, ...args], {
    detached: true,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...env, [SUPERVISED_ENV]: "1" },
  });
  const exited = new Promise<ChildExit>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", () => resolve({ code: null, signal: null }));
  });
  return {
    pid: child.pid,
    exited,
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** How a worker process ended, in words. */
export function describeExit(exit: ChildExit): string {
  if (exit.signal) return `was killed by ${exit.signal}`;
  if (exit.code === null) return "could not be started";
  return `exited with code ${exit.code}`;
}
