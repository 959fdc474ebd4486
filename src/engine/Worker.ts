import { hostname } from "node:os";
import { MendError } from "../errors.js";
import { checkCapabilities } from "../model/capabilities.js";
import type { Failure } from "../model/failure.js";
import {
  checkQuality,
  type HandlerMap,
  handlerNames,
  type ProcessIsolation,
  processIsolationOf,
  resolveHandler,
  type TaskContext,
  withCompensations,
} from "../model/handler.js";
import { newId, WORKSTREAM_ID_PREFIX } from "../model/ids.js";
import type { WorkerControl } from "../model/records.js";
import { type Logger, silentLogger } from "../observe/logger.js";
import { type ClassifierRule, classifyError, TaskTimeoutError } from "../recovery/classify.js";
import type {
  ClaimedTask,
  DegradationView,
  ExchangeResult,
  FailurePlanner,
  HeartbeatResult,
  Outcome,
  Store,
} from "../store/store.js";
import { type Clock, systemClock, type TimerHandle } from "./clock.js";
import { checkIsolatedModules, IsolatedHandlerError, runIsolated } from "./isolate.js";
import { createPlanner } from "./planner.js";
import { NORMAL_DEGRADATION } from "../recovery/degrade.js";

/** Options of a {@link Worker}. Durations in milliseconds. */
export interface WorkerOptions {
  store: Store;
  handlers: HandlerMap;
  /** Tasks run at once (default 10). */
  concurrency?: number;
  /** Heartbeat interval (default 1000). */
  heartbeatMs?: number;
  /** A lease lasts this long past the last heartbeat (default 5000). */
  leaseMs?: number;
  /** Poll interval while idle, in case a wake-up is missed (default 250). */
  pollMs?: number;
  /**
   * Tasks claimed beyond `concurrency`, waiting in the worker for a free slot (default 0). With
   * short tasks, round trips then carry more tasks each and run while handlers do, rather than
   * between them; a prefetched task holds its lease, and counts as started, from its claim, so
   * keep it small where tasks run long (other workers cannot take what one holds).
   */
  prefetch?: number;
  /** Most tasks settled and claimed in one transaction (default 100, or `prefetch` if larger). */
  batchSize?: number;
  /** Default id: `w_…`. */
  id?: string;
  /**
   * What this worker can do, e.g. `["gpu"]` (default none): it claims a task that requires
   * capabilities only when it has all of them.
   */
  capabilities?: string[];
  /** Registered as started under a supervisor that restarts it (`mend worker --supervise`). */
  supervised?: boolean;
  /**
   * Called once when an operator's request (shut down, restart) reaches the worker at a
   * heartbeat; by default the worker stops gracefully ({@link Worker.stop}).
   */
  onControl?: (control: WorkerControl) => void;
  clock?: Clock;
  logger?: Logger;
  planner?: FailurePlanner;
}

interface Running {
  task: ClaimedTask;
  controller: AbortController;
  timer: TimerHandle;
  /** Progress reports of the handler so far, and how many a heartbeat has carried to the store. */
  progress: number;
  reported: number;
  /** Aborted by a shutdown: released rather than reported, whatever the handler does now. */
  released?: boolean;
}

/** Why a handler's signal was aborted. */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
}

/**
 * Claims ready tasks under leases and runs their handlers. Finished tasks are settled and new
 * ones claimed in one store round trip, so a busy worker commits many tasks per transaction.
 */
export class Worker {
  readonly id: string;
  private readonly store: Store;
  private readonly handlers: HandlerMap;
  private readonly handlerList: string[];
  /** What it can do, sorted. */
  readonly capabilities: string[];
  private readonly supervised: boolean;
  private readonly onControl: ((control: WorkerControl) => void) | undefined;
  /** The operator's request this worker heard, if any. */
  private heard: WorkerControl | null = null;
  private readonly concurrency: number;
  private readonly heartbeatMs: number;
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private readonly batchSize: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly planner: FailurePlanner;
  /** Handlers with `isolation: "process"`, by name. */
  private readonly isolated = new Map<string, ProcessIsolation>();
  /** Isolated attempts whose process is still alive; each settles once it is gone. */
  private readonly children = new Set<Promise<void>>();

  private readonly running = new Map<string, Running>();
  private readonly prefetch: number;
  /** Prefetched tasks waiting for a slot, by id, in claim order. */
  private readonly waiting = new Map<string, ClaimedTask>();
  /** The degradation level the store last reported, handed to handlers. */
  private degradation: DegradationView = NORMAL_DEGRADATION;
  private outbox: Outcome[] = [];
  private pumping = false;
  private pumpAgain = false;
  private pumpScheduled = false;
  private stopping = false;
  private started = false;
  private heartbeatTimer: TimerHandle | null = null;
  private pollTimer: TimerHandle | null = null;
  private unsubscribeWake: (() => void) | null = null;
  private drained: (() => void) | null = null;
  /** Called when the last running task finishes during a graceful stop. */
  private onIdle: (() => void) | null = null;
  private fatal: ((err: unknown) => void) | null = null;
  /** Settles when the worker has stopped (or failed for good). */
  readonly done: Promise<void>;

  constructor(options: WorkerOptions) {
    this.clock = options.clock ?? systemClock;
    this.store = options.store;
    // Tasks' `compensate` functions run as handlers of their own, claimed like any other.
    this.handlers = withCompensations(options.handlers);
    this.handlerList = handlerNames(this.handlers);
    if (this.handlerList.length === 0) {
      throw new MendError("invalid_argument", "a worker needs at least one handler");
    }
    for (const name of this.handlerList) {
      const isolation = processIsolationOf(name, resolveHandler(this.handlers, name));
      if (isolation) this.isolated.set(name, isolation);
    }
    this.capabilities = checkCapabilities(options.capabilities ?? []);
    this.supervised = options.supervised ?? false;
    this.onControl = options.onControl;
    this.concurrency = positive("concurrency", options.concurrency ?? 10);
    this.heartbeatMs = positive("heartbeatMs", options.heartbeatMs ?? 1000);
    this.leaseMs = positive("leaseMs", options.leaseMs ?? 5000);
    this.pollMs = positive("pollMs", options.pollMs ?? 250);
    this.prefetch = nonNegative("prefetch", options.prefetch ?? 0);
    this.batchSize = positive("batchSize", options.batchSize ?? Math.max(100, this.prefetch));
    this.id = options.id ?? newId("w", this.clock.now());
    if (this.id.startsWith(WORKSTREAM_ID_PREFIX) || this.id.includes("/") || this.id === "") {
      throw new MendError(
        "invalid_argument",
        `worker id "${this.id}" is not allowed: it must be non-empty, contain no "/" and not start with "${WORKSTREAM_ID_PREFIX}"`,
        { id: this.id },
      );
    }
    this.log = (options.logger ?? silentLogger).child({ worker: this.id });
    this.planner =
      options.planner ??
      createPlanner({
        customDelay: (name) =>
          Object.hasOwn(this.handlers, name)
            ? resolveHandler(this.handlers, name).retry?.customDelay
            : undefined,
      });
    this.done = new Promise<void>((resolve, reject) => {
      this.drained = resolve;
      this.fatal = reject;
    });
  }

  /** Tasks this worker is running now. */
  get inFlight(): number {
    return this.running.size;
  }

  /** The operator's request (shut down, restart) this worker heard at a heartbeat; else null. */
  get requested(): WorkerControl | null {
    return this.heard;
  }

  /** Registers the worker and starts claiming. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await checkIsolatedModules(this.isolated);
    await this.register();
    this.unsubscribeWake = this.store.onWake(() => this.schedulePump());
    this.scheduleHeartbeat();
    this.schedulePump();
  }

  /**
   * Graceful shutdown: stops claiming, lets running tasks finish for up to `graceMs`, then
   * aborts and releases the rest so another worker takes them at once. Tasks of isolated handlers
   * are released once their processes are gone: SIGKILLed, at most, after their `killGrace`.
   */
  async stop(graceMs = 30_000): Promise<void> {
    if (this.stopping) return this.done;
    this.stopping = true;
    this.unsubscribeWake?.();
    if (this.pollTimer) this.clock.clearTimeout(this.pollTimer);
    // Prefetched tasks never started: another worker may have them now.
    if (this.waiting.size > 0) {
      for (const task of this.waiting.values()) this.release(task, "worker shutting down");
      this.waiting.clear();
      this.schedulePump();
    }
    if (this.running.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = this.clock.setTimeout(resolve, graceMs);
        this.onIdle = () => {
          this.clock.clearTimeout(timer);
          resolve();
        };
      });
      this.onIdle = null;
    }
    for (const r of this.running.values()) {
      r.released = true;
      r.controller.abort(new LeaseLostError("worker shutting down: task released"));
      this.clock.clearTimeout(r.timer);
    }
    // Isolated handlers' processes are gone (SIGKILLed past their kill grace) before their tasks
    // are released, so that no other worker runs a task while its old process still does; the
    // heartbeats keep the leases meanwhile.
    if (this.children.size > 0) await Promise.all(this.children);
    for (const r of this.running.values()) this.release(r.task, "worker shutting down");
    this.running.clear();
    while (this.pumping) await new Promise((r) => setImmediate(r));
    await this.pump();
    if (this.heartbeatTimer) this.clock.clearTimeout(this.heartbeatTimer);
    await this.store.stopWorker(this.id);
    this.drained?.();
    return this.done;
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump().catch((err) => this.fail(err));
    });
  }

  /** One exchange at a time; calls arriving meanwhile are folded into the next one. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      for (let round = 0; ; round++) {
        // Between rounds, let the tasks the last round started run first: those that end at once
        // add their outcomes and free their slots, so the next round carries one full batch
        // rather than a small one with a full one after it.
        if (round > 0) await new Promise((r) => setImmediate(r));
        this.pumpAgain = false;
        const outcomes = this.outbox.splice(0, this.batchSize);
        const free = this.stopping
          ? 0
          : this.concurrency + this.prefetch - this.running.size - this.waiting.size;
        const want = Math.min(free, this.batchSize);
        if (outcomes.length === 0 && want === 0) break;
        let result: ExchangeResult;
        try {
          result = await this.store.exchange({
            workerId: this.id,
            outcomes,
            claim: want,
            leaseMs: this.leaseMs,
            handlers: this.handlerList,
            capabilities: this.capabilities,
            planner: this.planner,
          });
        } catch (err) {
          // The transaction rolled back: keep the outcomes (fencing makes a resend safe) and try
          // again after a pause, rather than losing results to a busy or briefly broken store.
          this.outbox.unshift(...outcomes);
          this.log.error("store exchange failed; retrying", { err: String(err) });
          this.schedulePoll(this.heartbeatMs);
          break;
        }
        const { settled, claimed } = result;
        this.degradation = result.degradation;
        for (const s of settled) {
          if (!s.applied) this.log.warn("outcome refused", { task: s.taskId, reason: s.reason });
        }
        for (const task of claimed) {
          // Claimed again (its lease expired while it waited here): the new lease replaces it.
          this.waiting.delete(task.id);
          if (this.running.size < this.concurrency) this.execute(task);
          else this.waiting.set(task.id, task);
        }
        if (this.outbox.length > 0 || (want > 0 && claimed.length === want)) this.pumpAgain = true;
        if (!this.stopping && want > 0 && claimed.length < want) this.schedulePoll();
        if (!this.pumpAgain) break;
      }
    } finally {
      this.pumping = false;
    }
  }

  private schedulePoll(ms = this.pollMs): void {
    if (this.pollTimer) this.clock.clearTimeout(this.pollTimer);
    this.pollTimer = this.clock.setTimeout(() => {
      this.pollTimer = null;
      this.schedulePump();
    }, ms);
  }

  private scheduleHeartbeat(): void {
    this.heartbeatTimer = this.clock.setTimeout(() => {
      this.beat()
        .catch((err) => this.log.error("heartbeat failed", { err: String(err) }))
        .finally(() => {
          if (!this.stopping || this.running.size > 0) this.scheduleHeartbeat();
        });
    }, this.heartbeatMs);
  }

  private register(): Promise<void> {
    return this.store.registerWorker({
      id: this.id,
      host: hostname(),
      pid: process.pid,
      concurrency: this.concurrency,
      handlers: this.handlerList,
      capabilities: this.capabilities,
      supervised: this.supervised,
    });
  }

  private async beat(): Promise<void> {
    const running = [...this.running.values()];
    const reporting = running.map((r) => r.progress);
    const leases = [
      ...running.map((r) => ({
        taskId: r.task.id,
        token: r.task.leaseToken,
        ...(r.progress > r.reported ? { progressed: true } : {}),
      })),
      ...[...this.waiting.values()].map((t) => ({ taskId: t.id, token: t.leaseToken })),
    ];
    const status = this.running.size > 0 ? "busy" : "idle";
    let beat: HeartbeatResult;
    try {
      beat = await this.store.heartbeat(this.id, status, leases, this.leaseMs);
    } catch (err) {
      if (!(err instanceof MendError && err.code === "not_found")) throw err;
      // The store no longer knows this worker (restored from a backup taken before it started):
      // register again rather than heartbeat into the void while the monitor reaps its leases.
      this.log.warn("worker is not registered in the store (restored?); registering again");
      await this.register();
      beat = await this.store.heartbeat(this.id, status, leases, this.leaseMs);
    }
    const { lost } = beat;
    // In the store now; progress from here on goes with the next heartbeat.
    running.forEach((r, i) => (r.reported = reporting[i]!));
    for (const id of lost) {
      this.waiting.delete(id);
      const r = this.running.get(id);
      if (!r) continue;
      this.log.warn("lease lost; aborting task", { task: id });
      this.running.delete(id);
      this.clock.clearTimeout(r.timer);
      r.controller.abort(new LeaseLostError(`lease on ${id} lost: another owner may run it`));
    }
    if (lost.length > 0) this.schedulePump();
    if (this.running.size === 0) this.onIdle?.();
    if (beat.control) this.hear(beat.control);
  }

  /** Acts once on an operator's request: by default, a graceful stop. */
  private hear(control: WorkerControl): void {
    if (this.heard || this.stopping) return;
    this.heard = control;
    this.log.warn(`${control.action} requested by ${control.actor}`, {
      reason: control.reason,
      reassign: control.reassign,
    });
    if (this.onControl) this.onControl(control);
    else this.stop().catch((err) => this.log.error("stop failed", { err: String(err) }));
  }

  private execute(task: ClaimedTask): void {
    // Claimed again while an earlier attempt still runs here (its lease expired meanwhile):
    // that attempt can no longer report, so stop it.
    const stale = this.running.get(task.id);
    if (stale) {
      this.clock.clearTimeout(stale.timer);
      stale.controller.abort(new LeaseLostError(`lease on ${task.id} expired; task claimed again`));
    }
    const controller = new AbortController();
    const timer = this.clock.setTimeout(
      () => controller.abort(new TaskTimeoutError(task.timeoutMs)),
      task.timeoutMs,
    );
    this.running.set(task.id, { task, controller, timer, progress: 0, reported: 0 });
    this.runHandler(task, controller.signal).then(
      (outcome) => this.finish(task, controller, outcome),
      (err) => this.fail(err),
    );
  }

  private async runHandler(task: ClaimedTask, signal: AbortSignal): Promise<Outcome> {
    const token = task.leaseToken;
    const def = resolveHandler(this.handlers, task.handler);
    const parentLog = this.log;
    let log: Logger | undefined;
    let quality: number | undefined;
    // Counted on this attempt's entry: the worker's next heartbeat tells the store.
    const entry = this.running.get(task.id);
    const progress = (details: unknown) => {
      if (entry) entry.progress++;
      parentLog.debug("progress", { task: task.id, attempt: task.attempts, details });
    };
    const ctx: TaskContext = {
      input: task.input,
      attempt: task.attempts,
      signal,
      idempotencyKey: task.idempotencyKey,
      taskId: task.id,
      workstreamId: task.workstreamId,
      // Built on first use: most handlers never log, and a child logger per task is not free.
      get log() {
        log ??= parentLog.child({ task: task.id, attempt: task.attempts });
        return log;
      },
      heartbeat: (details) => {
        if (details !== undefined) progress(details);
        this.schedulePump();
      },
      progress: (details) => progress(details),
      setQuality: (score) => {
        quality = checkQuality(score);
      },
      degradation: this.degradation,
    };
    const isolation = this.isolated.get(task.handler);
    try {
      const output = await (isolation
        ? this.runIsolated(ctx, task.handler, isolation)
        : raceAbort(
            Promise.resolve().then(() => def.run(ctx)),
            signal,
          ));
      if (output !== undefined) JSON.stringify(output);
      return {
        kind: "complete",
        taskId: task.id,
        token,
        output: output ?? null,
        ...(quality === undefined ? {} : { quality }),
      };
    } catch (err) {
      const reason = signal.aborted ? signal.reason : err;
      return {
        kind: "fail",
        taskId: task.id,
        token,
        failure:
          reason instanceof IsolatedHandlerError
            ? reason.failure
            : this.classify(reason, def.classify),
      };
    }
  }

  /** Runs an attempt in a child process; the slot stays taken until the process is gone. */
  private runIsolated(ctx: TaskContext, handler: string, isolation: ProcessIsolation) {
    const run = runIsolated(ctx, { handler, isolation, clock: this.clock });
    const gone = run.then(
      () => {},
      () => {},
    );
    this.children.add(gone);
    void gone.then(() => this.children.delete(gone));
    return run;
  }

  private classify(err: unknown, rules: ClassifierRule[] | undefined): Failure {
    return classifyError(err, { rules, now: this.clock.now() });
  }

  private finish(task: ClaimedTask, controller: AbortController, outcome: Outcome): void {
    const r = this.running.get(task.id);
    // A task whose lease was lost was already dropped: its outcome would only be refused.
    if (!r || r.controller !== controller || r.released) return;
    this.running.delete(task.id);
    this.clock.clearTimeout(r.timer);
    this.outbox.push(outcome);
    this.startWaiting();
    this.schedulePump();
    if (this.running.size === 0) this.onIdle?.();
  }

  /** Starts prefetched tasks while slots are free. */
  private startWaiting(): void {
    for (const task of this.waiting.values()) {
      if (this.running.size >= this.concurrency || this.stopping) return;
      this.waiting.delete(task.id);
      this.execute(task);
    }
  }

  /** Gives a task back unrun: it is queued again at once. */
  private release(task: ClaimedTask, reason: string): void {
    this.outbox.push({ kind: "release", taskId: task.id, token: task.leaseToken, reason });
  }

  private fail(err: unknown): void {
    this.log.error("worker failed", { err: String(err) });
    this.stopping = true;
    if (this.heartbeatTimer) this.clock.clearTimeout(this.heartbeatTimer);
    if (this.pollTimer) this.clock.clearTimeout(this.pollTimer);
    this.unsubscribeWake?.();
    this.fatal?.(err);
  }
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new MendError("invalid_argument", `${name} must be 0 or more, got ${value}`, {
      [name]: value,
    });
  }
  return value;
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new MendError("invalid_argument", `${name} must be a positive number, got ${value}`, {
      [name]: value,
    });
  }
  return value;
}

/** Settles with the promise, or rejects with the signal's reason once it aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
