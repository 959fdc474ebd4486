/**
 * An in-process call policy: retry, circuit breaker and timeout around one call a handler makes
 * (a tool call, an HTTP request), built from the same pieces as Mend's task recovery. Failures
 * are classified by {@link classifyError}, retries planned by {@link planFailure} (backoff, per
 * category rules, `Retry-After`), and the breaker runs the state machine of `breaker.ts`, with
 * its defaults, in memory: it guards this process's calls only, where a task's breaker lives in
 * the store and is shared by every worker.
 *
 * Layers, outermost first, as for tasks: breaker → retry → per-attempt timeout. The breaker is
 * asked before every attempt and told every attempt's outcome.
 */
import { z } from "zod";
import type { Clock, TimerHandle } from "../engine/clock.js";
import { systemClock } from "../engine/clock.js";
import { MendError } from "../errors.js";
import {
  type BreakerDefinition,
  breakerConfig,
  type DefinitionProblem,
  describe,
  formatPath,
  normalizeRetry,
  type TaskRetryDefinition,
} from "../model/definition.js";
import { formatDuration, parseDuration } from "../model/duration.js";
import { FAILURE_CATEGORIES } from "../model/failure.js";
import type { BreakerConfig, RetryPolicy } from "../model/spec.js";
import type { BreakerStatus } from "../model/states.js";
import {
  type BreakerChange,
  type BreakerState,
  closedState,
  countsForBreaker,
  dueForProbe,
  halfOpenState,
  probeSlots,
  recordOutcome,
} from "./breaker.js";
import { type ClassifierRule, classifyError, TaskTimeoutError } from "./classify.js";
import { planFailure } from "./retry.js";

/** Node.js timers' longest delay (2^31 - 1 ms, about 24.8 days): longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Options of a {@link CallPolicy}. Durations are milliseconds or text such as `"30s"`. */
export interface CallPolicyOptions {
  /** Names the policy in error messages and their context, e.g. the service it calls. */
  name?: string;
  /**
   * Retries of a failed attempt, in the format of a task's `retry`: a preset name (`"default"`,
   * `"none"`, …) or an object (`maxAttempts`, `backoff`, `initial`, `factor`, `max`, `jitter`,
   * `schedule`, `on` per category, `customDelay`) over the default policy (3 attempts, 1 s
   * doubling, full jitter, 5 min cap). Only recoverable failures are retried. Default: none,
   * one attempt.
   */
  retry?: string | TaskRetryDefinition;
  /**
   * A circuit breaker for this policy's calls, in the format of a definition's `breakers`
   * entry; `{}` takes every default (5 failures in a row, open 5 min, 3 probes). Default: none.
   */
  breaker?: BreakerDefinition;
  /** Longest one attempt may run; it is then aborted and fails as a `timeout`. Default: none. */
  timeout?: string | number;
  /** Classification rules checked before Mend's own tables (see `classifyError`). */
  classify?: ClassifierRule[];
  /** Source of time and timers. Default: the system clock. */
  clock?: Clock;
  /** Uniform in `[0, 1)`, for jitter. Default: `Math.random`. */
  random?: () => number;
  /** Told of every status change of the breaker. Must not throw. */
  onBreakerChange?: (event: BreakerChangeEvent) => void;
}

/** A status change of a {@link CallPolicy}'s breaker. */
export interface BreakerChangeEvent {
  from: BreakerStatus;
  to: BreakerStatus;
  reason: string;
  /** Epoch ms. */
  at: number;
}

/** What the function a policy runs is given, once per attempt. */
export interface CallContext {
  /** Attempt number, from 1. */
  readonly attempt: number;
  /** Aborted when the attempt times out or the caller's signal aborts. */
  readonly signal: AbortSignal;
}

/** The function a {@link CallPolicy} runs. */
export type CallFn<T> = (call: CallContext) => T | PromiseLike<T>;

/**
 * Raised, without running the call, while a {@link CallPolicy}'s breaker is open, or half-open
 * with every probe slot taken. It classifies as a recoverable `external_service` failure whose
 * `retryAfterMs` is the time left until the breaker lets probes through, so a task that lets it
 * escape is retried when the dependency may be back.
 */
export class BreakerOpenError extends MendError {
  readonly category = "external_service";
  readonly recoverable = true;
  /** Time until the breaker lets probes through; undefined when it is already half-open. */
  readonly retryAfterMs: number | undefined;

  constructor(
    /** The breaker's state when it refused the call. */
    readonly state: Readonly<BreakerState>,
    policy: string | undefined,
    now: number,
    /** Why it last opened. */
    reason: string,
    options?: { cause?: unknown },
  ) {
    const breaker = policy === undefined ? "circuit breaker" : `circuit breaker "${policy}"`;
    const retryAfterMs =
      state.status === "open" && state.openUntil !== null
        ? Math.max(0, state.openUntil - now)
        : undefined;
    super(
      "refused",
      retryAfterMs === undefined
        ? `${breaker} is half-open and all its probes are running (it opened after ${reason}): ` +
            "calls are refused until a probe succeeds"
        : `${breaker} is open (${reason}): calls are refused for another ` +
            formatDuration(retryAfterMs),
      { policy: policy ?? null, status: state.status, openUntil: state.openUntil, reason },
      options,
    );
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Runs calls under retry, a circuit breaker and a timeout, each optional:
 *
 * ```ts
 * const search = new CallPolicy({ name: "search-api", retry: { maxAttempts: 3, initial: "200ms" },
 *   breaker: { failureThreshold: 5, open: "30s" }, timeout: "2s" });
 * const hits = await search.run(({ signal }) => fetchJson(url, { signal }), ctx.signal);
 * ```
 *
 * One policy per dependency, shared by the calls to it, so its breaker sees all of them.
 */
export class CallPolicy {
  /** The retry policy, resolved; null for a single attempt. */
  readonly retry: RetryPolicy | null;
  /** The breaker's settings, defaults filled in; null for no breaker. */
  readonly breakerConfig: BreakerConfig | null;
  /** The per-attempt timeout in ms; null for none. */
  readonly timeoutMs: number | null;
  private readonly name: string | undefined;
  private readonly rules: ClassifierRule[];
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly onBreakerChange: ((event: BreakerChangeEvent) => void) | undefined;
  private readonly customDelay: TaskRetryDefinition["customDelay"];
  private readonly watchdog: Watchdog | null;
  private state: BreakerState;
  private openReason = "";
  /** Attempts running as half-open probes, whichever half-open period admitted them. */
  private probes = 0;

  /**
   * @throws MendError `invalid_argument` listing every problem with the options, each with its
   *   path (`retry.maxAttempts: must be at least 1, got 0`); `context.problems` holds them all.
   */
  constructor(options: CallPolicyOptions = {}) {
    const o = parseOptions(options);
    this.name = o.name;
    this.retry = o.retry;
    this.breakerConfig = o.breaker;
    this.timeoutMs = o.timeoutMs;
    this.rules = o.classify ?? [];
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? Math.random;
    this.onBreakerChange = o.onBreakerChange;
    this.customDelay = o.customDelay;
    this.watchdog = o.timeoutMs === null ? null : new Watchdog(this.clock, o.timeoutMs, o.name);
    this.state = closedState(null);
  }

  /**
   * The breaker's state (a plain value, replaced on every change); null without a breaker. An
   * open breaker whose time is up still reads `open` until a call moves it to `half_open`.
   */
  get breakerState(): Readonly<BreakerState> | null {
    return this.breakerConfig === null ? null : this.state;
  }

  /**
   * Runs `fn` under the policy and returns what its first successful attempt returned. A failed
   * attempt is retried when the failure is recoverable and attempts remain, after the backoff
   * delay; otherwise its error is rethrown as it was. Aborting `signal` stops at once with its
   * reason, between attempts or during one (the attempt's signal aborts too); that outcome is
   * not fed to the breaker.
   *
   * @throws BreakerOpenError while the breaker refuses calls; its `cause` is the last attempt's
   *   error when it opened between attempts of this call.
   * @throws TaskTimeoutError when the last attempt ran past the timeout.
   */
  async run<T>(fn: CallFn<T>, signal?: AbortSignal): Promise<T> {
    let lastError: { cause: unknown } | undefined;
    let lastDelayMs: number | null = null;
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      const probe = this.admit(lastError);
      const call = new Attempt(attempt, signal);
      let value: T;
      try {
        value = await (this.watchdog === null && signal === undefined
          ? fn(call)
          : this.guard(fn, call));
      } catch (err) {
        if (probe) this.probes--;
        // The caller gave up: that says nothing about the dependency, and nothing is to be retried.
        if (signal?.aborted) throw signal.reason;
        const now = this.clock.now();
        const failure = classifyError(err, { rules: this.rules, now });
        if (this.breakerConfig !== null && countsForBreaker(failure)) this.record(false);
        if (this.retry === null) throw err;
        const decision = planFailure({
          attempt,
          policy: this.retry,
          failure,
          lastDelayMs,
          workerLostStreak: 0,
          now,
          random: this.random,
          customDelay: this.customDelay,
        });
        if (decision.action !== "retry") throw err;
        lastError = { cause: err };
        // A retry the breaker would refuse when it comes due is refused now, not after the wait.
        if (this.state.status === "open" && !dueForProbe(this.state, decision.runAt)) {
          throw this.refusal(now, lastError);
        }
        await this.sleep(decision.delayMs, signal);
        lastDelayMs = decision.delayMs;
        continue;
      }
      if (probe) this.probes--;
      if (this.breakerConfig !== null) this.record(true);
      return value;
    }
  }

  /**
   * Lets an attempt through the breaker, moving it to half-open when its open time is up, or
   * refuses it, with the previous attempt's error as cause. True when it runs as a probe.
   */
  private admit(lastError: { cause: unknown } | undefined): boolean {
    const config = this.breakerConfig;
    if (config === null || this.state.status === "closed") return false;
    const now = this.clock.now();
    if (this.state.status === "open") {
      if (!dueForProbe(this.state, now)) throw this.refusal(now, lastError);
      this.change(
        halfOpenState(this.state),
        { to: "half_open", reason: "open time is up: probing" },
        now,
      );
    }
    if (probeSlots(config, this.probes) === 0) throw this.refusal(now, lastError);
    this.probes++;
    return true;
  }

  private refusal(now: number, lastError: { cause: unknown } | undefined): BreakerOpenError {
    return new BreakerOpenError(this.state, this.name, now, this.openReason, lastError);
  }

  /** Feeds one counted outcome to the breaker. */
  private record(ok: boolean): void {
    const config = this.breakerConfig!;
    // The common case changes nothing (recordOutcome would return an equal state): skip the copy.
    const clean = this.state.status === "closed" && this.state.failures === 0;
    if (ok && clean && config.mode === "consecutive") return;
    const now = this.clock.now();
    const step = recordOutcome(config, this.state, ok, now);
    if (step.change === null) this.state = step.state;
    else this.change(step.state, step.change, now);
  }

  private change(next: BreakerState, change: BreakerChange, now: number): void {
    const from = this.state.status;
    this.state = next;
    if (change.to === "open") this.openReason = change.reason;
    this.onBreakerChange?.({ from, to: change.to, reason: change.reason, at: now });
  }

  /** Runs one attempt so that the timeout or the caller's signal can end it before `fn` does. */
  private guard<T>(fn: CallFn<T>, attempt: Attempt): T | Promise<T> {
    attempt.start(this.watchdog);
    let result: T | PromiseLike<T>;
    try {
      result = fn(attempt);
    } catch (err) {
      attempt.stop();
      throw err;
    }
    if (!isThenable(result)) {
      attempt.stop();
      return result;
    }
    const running = new Promise<T>((resolve, reject) => {
      attempt.resolve = resolve as (value: unknown) => void;
      attempt.reject = reject;
    });
    try {
      result.then(
        (value) => attempt.finish(true, value),
        (err: unknown) => attempt.finish(false, err),
      );
    } catch (err) {
      // A thenable whose `then` throws: the attempt failed, and must not wait for the timeout.
      attempt.finish(false, err);
    }
    return running;
  }

  /** Waits out a retry delay; the caller's signal cuts it short. */
  private sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.clock.clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = this.clock.setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/**
 * One attempt: the {@link CallContext} given to the function, and the node of the watchdog's
 * list of running attempts (intrusive, so tracking it allocates nothing more).
 */
class Attempt implements CallContext {
  resolve: ((value: unknown) => void) | null = null;
  reject: ((reason: unknown) => void) | null = null;
  deadline = 0;
  prev: Attempt | null = null;
  next: Attempt | null = null;
  private watchdog: Watchdog | null = null;
  private done = false;
  private cutOffBy: unknown = undefined;
  private controller: AbortController | null = null;

  constructor(
    readonly attempt: number,
    private readonly parent: AbortSignal | undefined,
  ) {}

  /** Made on first use: most calls never read it, and an AbortController costs microseconds. */
  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.cutOffBy !== undefined) this.controller.abort(this.cutOffBy);
    }
    return this.controller.signal;
  }

  /** Puts the attempt under the watchdog and the caller's signal. */
  start(watchdog: Watchdog | null): void {
    this.watchdog = watchdog;
    watchdog?.add(this);
    // The attempt is the listener (handleEvent): no closure per attempt.
    this.parent?.addEventListener("abort", this);
  }

  /** Takes the attempt off the watchdog and the caller's signal. */
  stop(): void {
    this.done = true;
    this.watchdog?.remove(this);
    this.parent?.removeEventListener("abort", this);
  }

  /** Settles with the function's outcome, unless the attempt was already cut off. */
  finish(ok: boolean, value: unknown): void {
    if (this.done) return;
    this.stop();
    if (ok) this.resolve!(value);
    else this.reject!(value);
  }

  /** Ends the attempt before the function does: aborts its signal and fails with `reason`. */
  cutOff(reason: unknown): void {
    if (this.done) return;
    this.cutOffBy = reason;
    this.controller?.abort(reason);
    this.finish(false, reason);
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.cutOff(this.parent!.reason);
  }
}

/**
 * Cuts off attempts that run past the timeout, with one timer for all of them. Starting an attempt
 * reads no clock, and attempts that settle within the turn of the event loop they started in (a
 * no-op, a cached answer) need no timer: an attempt joins the list of running attempts unstamped; a
 * zero-delay check, armed at most once per turn, stamps the new ones with their deadline and arms
 * the timer. The timeout thus counts from that check, in the event loop's next timers phase: an
 * attempt may run longer than its timeout by the time until the check (about a millisecond, more on
 * a busy loop), never shorter. Every attempt gets the same timeout, so the list is in deadline
 * order and only its head needs the timer; when the list empties the timer is cleared, so it never
 * keeps the process alive after the calls it guards.
 */
class Watchdog {
  private head: Attempt | null = null;
  private tail: Attempt | null = null;
  private timer: TimerHandle | null = null;
  private checking = false;

  constructor(
    private readonly clock: Clock,
    private readonly timeoutMs: number,
    private readonly policy: string | undefined,
  ) {}

  add(attempt: Attempt): void {
    attempt.deadline = Infinity;
    attempt.prev = this.tail;
    if (this.tail === null) this.head = attempt;
    else this.tail.next = attempt;
    this.tail = attempt;
    if (!this.checking) {
      this.checking = true;
      this.clock.setTimeout(this.check, 0);
    }
  }

  /** Takes a running attempt off the list; does nothing for one already taken off. */
  remove(attempt: Attempt): void {
    if (attempt.prev === null && this.head !== attempt) return;
    if (attempt.prev === null) this.head = attempt.next;
    else attempt.prev.next = attempt.next;
    if (attempt.next === null) this.tail = attempt.prev;
    else attempt.next.prev = attempt.prev;
    attempt.prev = attempt.next = null;
    if (this.head === null && this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private readonly check = (): void => {
    this.checking = false;
    const deadline = this.clock.now() + this.timeoutMs;
    // The unstamped attempts are the newest, at the tail.
    for (let a = this.tail; a !== null && a.deadline === Infinity; a = a.prev)
      a.deadline = deadline;
    if (this.head !== null && this.timer === null) this.arm(this.head.deadline);
  };

  private readonly expire = (): void => {
    this.timer = null;
    const now = this.clock.now();
    while (this.head !== null && this.head.deadline <= now) {
      const late = this.head;
      this.remove(late);
      const call = this.policy === undefined ? "call" : `"${this.policy}" call`;
      late.cutOff(
        new TaskTimeoutError(
          this.timeoutMs,
          `${call} timed out after ${formatDuration(this.timeoutMs)}`,
        ),
      );
    }
    // An unstamped head is left to the check that will stamp it.
    if (this.head !== null && this.head.deadline !== Infinity) this.arm(this.head.deadline);
  };

  private arm(at: number): void {
    this.timer = this.clock.setTimeout(this.expire, Math.max(0, at - this.clock.now()));
  }
}

// ---------------------------------------------------------------------------------------------
// Options

const OPTION_NAMES = [
  "name",
  "retry",
  "breaker",
  "timeout",
  "classify",
  "clock",
  "random",
  "onBreakerChange",
] as const;

function functionSchema<F>() {
  return z.custom<F>((value) => typeof value === "function", {
    error: (iss) => `expected a function, got ${describe(iss.input)}`,
  });
}

/** The options besides `retry` and `breaker`, which Mend's definition validation checks. */
const optionsSchema = z
  .strictObject(
    {
      name: z.string({ error: (iss) => `expected a string, got ${describe(iss.input)}` }).min(1, {
        error: "must not be empty",
      }),
      retry: z.unknown(),
      breaker: z.unknown(),
      timeout: z
        .custom<string | number>((v) => typeof v === "string" || typeof v === "number", {
          error: (iss) =>
            `expected a duration such as "30s", or a number of milliseconds, got ${describe(iss.input)}`,
        })
        .transform((value, ctx) => {
          let ms: number;
          try {
            ms = parseDuration(value);
          } catch (err) {
            ctx.addIssue({ code: "custom", message: (err as Error).message, input: value });
            return z.NEVER;
          }
          if (ms < 1 || ms > MAX_TIMER_MS) {
            const message =
              ms < 1
                ? "must be greater than 0"
                : `must be at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest timer Node.js sets`;
            ctx.addIssue({ code: "custom", message, input: value });
            return z.NEVER;
          }
          return ms;
        }),
      classify: z.array(
        z.strictObject({
          match: functionSchema<ClassifierRule["match"]>(),
          category: z.enum(FAILURE_CATEGORIES, {
            error: (iss) =>
              `expected a failure category (${FAILURE_CATEGORIES.join(", ")}), got ${describe(iss.input)}`,
          }),
          recoverable: z
            .boolean({ error: (iss) => `expected true or false, got ${describe(iss.input)}` })
            .optional(),
        }),
        { error: (iss) => `expected a list of rules, got ${describe(iss.input)}` },
      ),
      clock: z.custom<Clock>(
        (v) =>
          typeof v === "object" &&
          v !== null &&
          ["now", "setTimeout", "clearTimeout"].every(
            (method) => typeof (v as Record<string, unknown>)[method] === "function",
          ),
        { error: "expected a Clock (now, setTimeout and clearTimeout functions)" },
      ),
      random: functionSchema<() => number>(),
      onBreakerChange: functionSchema<(event: BreakerChangeEvent) => void>(),
    },
    {
      error: (iss) => {
        if (iss.code === "unrecognized_keys") {
          const keys = iss.keys.map((k) => `"${k}"`).join(", ");
          return `unknown option${iss.keys.length === 1 ? "" : "s"} ${keys} (allowed: ${OPTION_NAMES.join(", ")})`;
        }
        return iss.code === "invalid_type"
          ? `expected an object, got ${describe(iss.input)}`
          : undefined;
      },
    },
  )
  .partial();

interface ParsedOptions extends Omit<
  z.output<typeof optionsSchema>,
  "retry" | "breaker" | "timeout"
> {
  retry: RetryPolicy | null;
  customDelay: TaskRetryDefinition["customDelay"];
  breaker: BreakerConfig | null;
  timeoutMs: number | null;
}

/** Validates every option, and refuses them all when any is wrong. */
function parseOptions(options: CallPolicyOptions): ParsedOptions {
  const parsed = optionsSchema.safeParse(options);
  const problems: DefinitionProblem[] = parsed.success
    ? []
    : parsed.error.issues.map((iss) => ({ path: formatPath(iss.path), message: iss.message }));
  const raw: { retry?: unknown; breaker?: unknown } =
    typeof options === "object" && options !== null ? options : {};

  let retry: RetryPolicy | null = null;
  if (raw.retry !== undefined) {
    try {
      retry = normalizeRetry(raw.retry as string | TaskRetryDefinition);
      const caps = [
        retry.maxDelayMs,
        ...Object.values(retry.categories ?? {}).map((r) => r?.maxDelayMs),
      ];
      if (caps.some((ms) => ms !== undefined && ms > MAX_TIMER_MS)) {
        problems.push({
          path: "retry.max",
          message: `must be at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest timer Node.js sets`,
        });
      }
    } catch (err) {
      if (!(err instanceof MendError)) throw err;
      problems.push(...nested("retry", err.context.problems as DefinitionProblem[]));
    }
  }
  let breaker: BreakerConfig | null = null;
  if (raw.breaker !== undefined) {
    try {
      breaker = breakerConfig(raw.breaker as BreakerDefinition);
    } catch (err) {
      if (!(err instanceof z.ZodError)) throw err;
      const found = err.issues.map((iss) => ({ path: formatPath(iss.path), message: iss.message }));
      problems.push(...nested("breaker", found));
    }
  }
  if (!parsed.success || problems.length > 0) {
    const rank = (p: DefinitionProblem) =>
      (OPTION_NAMES as readonly string[]).indexOf(p.path.split(/[.[]/)[0]!);
    problems.sort((a, b) => rank(a) - rank(b));
    const lines = problems.map((p) => `  - ${p.path === "" ? "" : `${p.path}: `}${p.message}`);
    throw new MendError("invalid_argument", `invalid call policy options:\n${lines.join("\n")}`, {
      problems,
    });
  }
  const { timeout, ...rest } = parsed.data;
  const customDelay =
    typeof raw.retry === "object" ? (raw.retry as TaskRetryDefinition).customDelay : undefined;
  return { ...rest, retry, customDelay, breaker, timeoutMs: timeout ?? null };
}

function nested(prefix: string, problems: readonly DefinitionProblem[]): DefinitionProblem[] {
  return problems.map((p) => ({
    path:
      p.path === ""
        ? prefix
        : p.path.startsWith("[")
          ? `${prefix}${p.path}`
          : `${prefix}.${p.path}`,
    message: p.message,
  }));
}
