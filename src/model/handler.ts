/**
 * Handlers: the code a worker runs for a task, registered under the names definitions refer to.
 * A handler is a plain function, or a task object that also carries its retry, timeout and
 * failure-classification rules.
 */
import { MendError } from "../errors.js";
import type { FallbackDefinition, TaskRetryDefinition } from "./definition.js";
import type { DegradationView } from "../store/store.js";
import type { FailureCategory } from "./failure.js";

/** Structured logging for a running task; `data` is recorded alongside the message. */
export interface TaskLogger {
  debug(msg: string, data?: object): void;
  info(msg: string, data?: object): void;
  warn(msg: string, data?: object): void;
  error(msg: string, data?: object): void;
}

/** What a handler is given for one attempt of one task. */
export interface TaskContext<I = unknown> {
  input: I;
  /** Attempt number, from 1. */
  attempt: number;
  /** Aborted when the task times out, is cancelled, or the worker loses its lease. */
  signal: AbortSignal;
  /** The same on every attempt of the task: pass it to external services to make repeats safe. */
  idempotencyKey: string;
  taskId: string;
  workstreamId: string;
  log: TaskLogger;
  /** Reports progress; keeps a long-running task from looking stalled. */
  heartbeat(details?: unknown): void;
  /**
   * Scores this attempt's result in [0, 1]. Below the task's `qualityThreshold` the attempt is a
   * `quality` failure (retried, or answered by a fallback); the score is stored with the result.
   */
  setQuality(score: number): void;
  /** The system's degradation level when the task was claimed: do less when it is above 0. */
  degradation: DegradationView;
}

/** A handler as a plain function; its result becomes the task's output. */
export type HandlerFn<I = unknown, O = unknown> = (ctx: TaskContext<I>) => Promise<O> | O;

/** A rule that classifies a handler's own errors before the default taxonomy is consulted. */
export interface ClassifierRule {
  match: (err: unknown) => boolean;
  category: FailureCategory;
  /** Default: the category's default. */
  recoverable?: boolean;
}

/**
 * A handler with its recovery settings. `retry`, `timeout`, `breaker`, `deadline`, `fallbacks`
 * and `qualityThreshold` apply to tasks of this handler whose definition does not set them, when
 * the handlers are known at submission (`runWorkstream`, `submitWorkstream({ handlers })`,
 * `mend run`); they take the definition file's formats.
 */
export interface TaskDefinition<I = unknown, O = unknown> {
  run: HandlerFn<I, O>;
  /** Same fields as a definition file's retry object, plus `backoff: "custom"` with `customDelay`. */
  retry?: TaskRetryDefinition;
  /** A duration such as `"30s"`, or milliseconds. */
  timeout?: string | number;
  /** Checked in order; the first match wins. */
  classify?: ClassifierRule[];
  /** Circuit breaker guarding this handler's calls, shared by every worker. */
  breaker?: string;
  /** Overall deadline across all attempts, e.g. `"10m"`. */
  deadline?: string | number;
  /** Alternative handlers when this one fails for good (see the definition file's `fallbacks`). */
  fallbacks?: FallbackDefinition;
  /** Lowest acceptable result quality in [0, 1], checked against `ctx.setQuality`. */
  qualityThreshold?: number;
}

/**
 * Handlers by name. Input is `never` here so that handlers declaring any input type fit: the
 * input arrives as JSON from the store, and a handler's declared type is its own claim about it.
 */
export type HandlerMap = Record<string, HandlerFn<never, unknown> | TaskDefinition<never, unknown>>;

/** Identity, so TypeScript infers and checks a task's input and output types. */
export function defineTask<I, O>(def: TaskDefinition<I, O>): TaskDefinition<I, O> {
  return def;
}

/** The registered handler names, sorted. */
export function handlerNames(map: HandlerMap): string[] {
  return Object.keys(map).sort();
}

/**
 * The handler registered as `name`, as a task object (a plain function becomes `{ run }`).
 *
 * @throws MendError `not_found` naming the registered handlers.
 */
export function resolveHandler(map: HandlerMap, name: string): TaskDefinition {
  if (!Object.hasOwn(map, name)) {
    const names = handlerNames(map);
    const known =
      names.length === 0 ? "no handlers are registered" : `handlers are: ${names.join(", ")}`;
    throw new MendError("not_found", `unknown handler "${name}" (${known})`, { handler: name });
  }
  const entry = map[name]!;
  return (typeof entry === "function" ? { run: entry } : entry) as TaskDefinition;
}
