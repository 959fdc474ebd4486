/**
 * Handlers: the code a worker runs for a task, registered under the names definitions refer to.
 * A handler is a plain function, or a task object that also carries its retry, timeout and
 * failure-classification rules.
 */
import { MendError } from "../errors.js";
import {
  DEFAULT_TIMEOUT_MS,
  type FallbackDefinition,
  type TaskRetryDefinition,
} from "./definition.js";
import type { DegradationView } from "../store/store.js";
import { isAbsolute } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDuration } from "./duration.js";
import type { FailureCategory } from "./failure.js";
import type { CompensationSpec } from "./spec.js";

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
  /**
   * Says the attempt is alive. With `details` (what it is doing, e.g. `{ page: 3 }`) it also
   * reports progress, as {@link TaskContext.progress} does; without, it only proves liveness,
   * which the worker's own heartbeats already do.
   */
  heartbeat(details?: unknown): void;
  /**
   * Reports progress: keeps a long task from being reported stalled (`task_stalled`, after its
   * `stallAfter` without progress, default 30 minutes). Cheap: the worker sends the fact with its
   * next heartbeat. `details` is logged at debug level, not stored.
   */
  progress(details?: unknown): void;
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
 * A handler with its recovery settings. `retry`, `timeout`, `breaker`, `deadline`, `fallbacks`,
 * `qualityThreshold`, `requires` and `stallAfter` apply to tasks of this handler whose definition
 * does not set them, when the handlers are known at submission (`runWorkstream`,
 * `submitWorkstream({ handlers })`, `mend run`); they take the definition file's formats.
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
  /**
   * Capabilities a worker must have to claim tasks of this handler, e.g. `["gpu"]` (see
   * `mend worker --capabilities`).
   */
  requires?: string[];
  /**
   * Report a task stalled (`task_stalled`) when it runs this long without progress
   * (`ctx.progress()` or `ctx.heartbeat(details)`): a duration such as `"2h"`, or milliseconds.
   * Default: the monitor's (`mend worker --stall-after`, 30 minutes).
   */
  stallAfter?: string | number;
  /**
   * Resources tasks of this handler must hold while they run, as in a definition's task:
   * `["git_repo_write", { oneOf: ["api-a", "api-b"] }]`.
   */
  resources?: (string | { oneOf: string[] })[];
  /**
   * Undoes a completed task's effects when its workstream is compensated. Workers register it as
   * the handler `<name>:compensate`; tasks of this handler whose definition sets no `compensate`
   * use it.
   */
  compensate?: CompensateDefinition<I, O>;
  /**
   * Where each attempt runs: `"none"` (default), in the worker's process; `"process"`, in a child
   * process of its own, which is SIGKILLed when it has not exited `killGrace` after its signal
   * aborted, so a hung handler cannot keep a worker slot. Needs `module`.
   */
  isolation?: Isolation;
  /**
   * The module whose default export registers this handler under the same name, as a `file:` URL
   * or an absolute path: usually `import.meta.url`. The child process imports it to find the
   * handler. Used with `isolation: "process"`.
   */
  module?: string | URL;
  /**
   * With `isolation: "process"`: how long an aborted attempt's process may take to exit before it
   * is SIGKILLed. A duration such as `"5s"`, or milliseconds (default 5 s).
   */
  killGrace?: string | number;
}

/** Where a handler's attempts run; see {@link TaskDefinition.isolation}. */
export type Isolation = "none" | "process";

/** How long an aborted isolated attempt may take to exit before it is SIGKILLed: 5 s. */
export const DEFAULT_KILL_GRACE_MS = 5_000;

/** A handler's `isolation: "process"` settings, checked. */
export interface ProcessIsolation {
  /** Absolute path of the module whose default export registers the handler. */
  modulePath: string;
  killGraceMs: number;
}

/** What a compensating handler is given as `ctx.input`: the task it undoes, as it completed. */
export interface CompensationInput<I = unknown, O = unknown> {
  /** The completed task's id as written in the definition. */
  task: string;
  input: I;
  output: O;
}

/**
 * A compensating handler as a plain function. Written as a method's type so that its parameter is
 * checked bivariantly: a handler map holds tasks of every input and output type (see
 * {@link HandlerMap}), and the output appears here as an input.
 */
export type CompensateFn<I = unknown, O = unknown> = {
  compensate(ctx: TaskContext<CompensationInput<I, O>>): unknown;
}["compensate"];

/** A compensating handler with its settings. */
export interface CompensateTask<I = unknown, O = unknown> {
  run: CompensateFn<I, O>;
  /** Safe to repeat: retried with the default retry policy. Otherwise it runs once (default). */
  idempotent?: boolean;
  /** A duration such as `"30s"`, or milliseconds (default 10 minutes). */
  timeout?: string | number;
}

/** How a task's effects are undone: a function, or one with its settings. */
export type CompensateDefinition<I = unknown, O = unknown> =
  CompensateFn<I, O> | CompensateTask<I, O>;

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

/** The handler a task's `compensate` is registered under: `<name>:compensate`. */
export function compensationHandler(name: string): string {
  return `${name}:compensate`;
}

/**
 * The handlers plus, for every task object that declares `compensate`, its compensating handler
 * registered as `<name>:compensate`, so that workers claim the compensating tasks. It keeps the
 * task's `classify` rules: the same services fail the same ways.
 *
 * @throws MendError `invalid_argument` when a `compensate` is malformed, or its handler name is
 * registered as well.
 */
export function withCompensations(map: HandlerMap): HandlerMap {
  let out: HandlerMap | null = null;
  for (const [name, entry] of Object.entries(map)) {
    if (typeof entry === "function" || entry.compensate === undefined) continue;
    const { run } = readCompensate(name, entry as TaskDefinition);
    const handler = compensationHandler(name);
    if (Object.hasOwn(map, handler)) {
      throw new MendError(
        "invalid_argument",
        `handler "${name}" declares compensate, which is registered as "${handler}", and a handler "${handler}" is registered too; keep one of them`,
        { handler },
      );
    }
    out ??= { ...map };
    out[handler] = {
      run,
      ...(entry.classify ? { classify: entry.classify } : {}),
    } as TaskDefinition<never, unknown>;
  }
  return out ?? map;
}

/**
 * The compensation that tasks of handler `name` get from its `compensate`; null without one.
 *
 * @throws MendError `invalid_argument` when the `compensate` is malformed.
 */
export function compensationSpecOf(name: string, def: TaskDefinition): CompensationSpec | null {
  if (def.compensate === undefined) return null;
  const { idempotent, timeoutMs } = readCompensate(name, def);
  return { handler: compensationHandler(name), idempotent, timeoutMs };
}

/** A task's `compensate`, checked and with its defaults filled in. */
function readCompensate(
  name: string,
  def: TaskDefinition,
): { run: CompensateFn; idempotent: boolean; timeoutMs: number } {
  const c = def.compensate as unknown;
  const wrong = (what: string) =>
    new MendError("invalid_argument", `handler "${name}": ${what}`, { handler: name });
  if (typeof c === "function") {
    return { run: c as CompensateFn, idempotent: false, timeoutMs: DEFAULT_TIMEOUT_MS };
  }
  if (typeof c !== "object" || c === null || typeof (c as CompensateTask).run !== "function") {
    throw wrong("compensate must be a function, or an object with a run function");
  }
  const { run, idempotent, timeout } = c as CompensateTask;
  if (idempotent !== undefined && typeof idempotent !== "boolean") {
    throw wrong(`compensate.idempotent must be true or false, got ${typeof idempotent}`);
  }
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (timeout !== undefined) {
    try {
      timeoutMs = parseDuration(timeout);
    } catch (err) {
      throw wrong(`compensate.timeout: ${(err as Error).message}`);
    }
    if (timeoutMs <= 0) throw wrong("compensate.timeout must be greater than 0");
  }
  return { run, idempotent: idempotent ?? false, timeoutMs };
}

/**
 * A handler's process isolation settings; null when it runs in the worker's process.
 *
 * @throws MendError `invalid_argument` naming the handler and listing every problem: an unknown
 *   `isolation`, a missing or relative `module`, a malformed `killGrace`, or a `killGrace`
 *   without `isolation: "process"`.
 */
export function processIsolationOf(name: string, def: TaskDefinition): ProcessIsolation | null {
  const { isolation, module, killGrace } = def as Record<
    "isolation" | "module" | "killGrace",
    unknown
  >;
  const problems: { path: string; message: string }[] = [];
  const problem = (path: string, message: string) => problems.push({ path, message });
  if (isolation !== undefined && isolation !== "none" && isolation !== "process") {
    problem("isolation", `must be "none" or "process", got ${JSON.stringify(isolation)}`);
  }
  const isolated = isolation === "process";
  let modulePath: string | null = null;
  if (module !== undefined) {
    modulePath = modulePathOf(module);
    if (modulePath === null) {
      problem(
        "module",
        `must be a file: URL or an absolute path, such as import.meta.url; got ${JSON.stringify(String(module))}`,
      );
    }
  } else if (isolated) {
    problem(
      "module",
      'required with isolation "process": the file: URL of the module whose default export registers this handler (usually import.meta.url)',
    );
  }
  let killGraceMs = DEFAULT_KILL_GRACE_MS;
  if (killGrace !== undefined) {
    if (!isolated) problem("killGrace", 'applies only with isolation "process"');
    try {
      killGraceMs = parseDuration(killGrace as string | number);
    } catch (err) {
      problem("killGrace", (err as Error).message);
    }
  }
  if (problems.length > 0) {
    const list = problems.map((p) => `  - ${p.path}: ${p.message}`).join("\n");
    throw new MendError(
      "invalid_argument",
      `invalid isolation settings of handler "${name}":\n${list}`,
      { handler: name, problems },
    );
  }
  return isolated ? { modulePath: modulePath!, killGraceMs } : null;
}

/** The absolute path a `module` setting names; null unless it is a file: URL or absolute path. */
function modulePathOf(module: unknown): string | null {
  const text = module instanceof URL ? module.href : module;
  if (typeof text !== "string") return null;
  if (text.startsWith("file:")) {
    try {
      return fileURLToPath(text);
    } catch {
      return null;
    }
  }
  return isAbsolute(text) ? text : null;
}

/**
 * A quality score as `ctx.setQuality` accepts it.
 *
 * @throws MendError `invalid_argument` unless it is a number from 0 to 1.
 */
export function checkQuality(score: unknown): number {
  if (typeof score !== "number" || !(score >= 0 && score <= 1)) {
    throw new MendError(
      "invalid_argument",
      `quality must be a number from 0 to 1, got ${String(score)}`,
      { score },
    );
  }
  return score;
}
