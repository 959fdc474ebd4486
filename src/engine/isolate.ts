/**
 * Process isolation (`isolation: "process"`): one attempt of a handler runs in a child process of
 * its own, started for it and gone when it ends. When the attempt's signal aborts, the child is
 * told to abort; if it has not exited after the handler's kill grace, it is SIGKILLed, so a hung
 * handler cannot keep a worker slot. The child's side is `isolated-child.ts`.
 */
import { type ChildProcess, fork } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { MendError } from "../errors.js";
import type { Failure, FailureCategory } from "../model/failure.js";
import type { ProcessIsolation, TaskContext } from "../model/handler.js";
import { loadHandlersModule } from "../model/load.js";
import type { DegradationView } from "../store/store.js";
import type { Clock, TimerHandle } from "./clock.js";

/** Worker to child: what to run, then (maybe) that it must stop. */
export type ParentMessage = StartMessage | { type: "abort"; name: string; message: string };

/** Everything the child needs to build the handler's context. */
export interface StartMessage {
  type: "start";
  /** Absolute path of the handlers module that registers `handler`. */
  module: string;
  handler: string;
  /** The worker's clock at the start, in epoch ms: the child's time counts on from it. */
  now: number;
  input: unknown;
  attempt: number;
  idempotencyKey: string;
  taskId: string;
  workstreamId: string;
  degradation: DegradationView;
}

/** Log levels of `ctx.log`. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Child to worker: ready for its start message, context calls, and last the attempt's result. */
export type ChildMessage =
  | { type: "ready" }
  | { type: "heartbeat"; details?: unknown }
  | { type: "progress"; details?: unknown }
  | { type: "quality"; score: number }
  | { type: "log"; level: LogLevel; msg: string; data?: object }
  | ResultMessage;

/** How the handler ended; a thrown error is classified in the child, where it is a real object. */
export type ResultMessage =
  { type: "result"; ok: true; output: unknown } | { type: "result"; ok: false; failure: Failure };

/** An isolated attempt's own failure, classified in its child process (with the handler's rules). */
export class IsolatedHandlerError extends Error {
  override readonly name = "IsolatedHandlerError";
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}

/**
 * A handler's process ended (exit code or signal) before reporting a result, without being told
 * to stop. A `tool_failure`, recoverable: the worker and its lease are fine, the handler's process
 * is what failed, and a new attempt in a fresh process may well succeed; the retry policy bounds
 * the repeats.
 */
export class HandlerProcessError extends Error {
  override readonly name = "HandlerProcessError";
  readonly category = "tool_failure" satisfies FailureCategory;
  readonly recoverable = true;
  readonly code = "HANDLER_PROCESS_EXITED";
  constructor(
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    handler: string,
  ) {
    super(
      `the process running handler "${handler}" ${
        signal === null ? `exited with code ${exitCode}` : `was killed by ${signal}`
      } before reporting a result`,
    );
  }
}

/** Options of {@link runIsolated}. */
export interface IsolatedRunOptions {
  /** The name the handler is registered under, in the worker and in its module. */
  handler: string;
  isolation: ProcessIsolation;
  /** Times the kill grace, and gives the child its start time. */
  clock: Clock;
}

/**
 * Runs one attempt of a handler in a child process. `ctx.signal` aborts it; `ctx.heartbeat`,
 * `ctx.progress`, `ctx.setQuality` and `ctx.log` receive the child's calls. Settles only once the child is gone:
 * with the output; or rejects with the signal's reason when it aborted first, an
 * {@link IsolatedHandlerError} when the handler failed, a {@link HandlerProcessError} when the
 * process died on its own, or the spawn error.
 */
export function runIsolated(ctx: TaskContext, options: IsolatedRunOptions): Promise<unknown> {
  const { handler, isolation, clock } = options;
  const { signal } = ctx;
  return new Promise((resolve, reject) => {
    const child = fork(CHILD_ENTRY, [], { execArgv: childExecArgv(), serialization: "json" });
    track(child);
    let started = false;
    let result: ResultMessage | null = null;
    let killTimer: TimerHandle | null = null;
    let settled = false;

    const send = (message: ParentMessage) => {
      // The child may be gone already: its exit settles the attempt, not a failed send.
      if (child.connected) child.send(message, () => {});
    };
    const sendAbort = () => {
      const reason = signal.reason as { name?: unknown; message?: unknown } | undefined;
      send({
        type: "abort",
        name: typeof reason?.name === "string" ? reason.name : "AbortError",
        message: typeof reason?.message === "string" ? reason.message : String(reason),
      });
    };
    const onAbort = () => {
      // A result that came before the abort stands, as it would in the worker's process.
      if (result !== null) return;
      if (started) sendAbort();
      killTimer = clock.setTimeout(() => child.kill("SIGKILL"), isolation.killGraceMs);
    };
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (killTimer !== null) clock.clearTimeout(killTimer);
      signal.removeEventListener("abort", onAbort);
      fn();
    };

    child.on("message", (message: ChildMessage) => {
      switch (message.type) {
        case "ready":
          started = true;
          send({
            type: "start",
            module: isolation.modulePath,
            handler,
            now: clock.now(),
            input: ctx.input,
            attempt: ctx.attempt,
            idempotencyKey: ctx.idempotencyKey,
            taskId: ctx.taskId,
            workstreamId: ctx.workstreamId,
            degradation: ctx.degradation,
          });
          if (signal.aborted) sendAbort();
          break;
        case "heartbeat":
          ctx.heartbeat(message.details);
          break;
        case "progress":
          ctx.progress(message.details);
          break;
        case "quality":
          try {
            ctx.setQuality(message.score);
          } catch (err) {
            ctx.log.warn("isolated handler reported an invalid quality", { err: String(err) });
          }
          break;
        case "log":
          ctx.log[message.level](message.msg, message.data);
          break;
        case "result":
          // After the abort the attempt has failed with the abort's reason, whatever comes next.
          if (!signal.aborted) result = message;
          break;
      }
    });
    // `close`, not `exit`: it comes after the IPC channel is drained, so no result is missed.
    child.on("close", (code, killedBy) =>
      settle(() => {
        if (result?.ok) resolve(result.output);
        else if (result) reject(new IsolatedHandlerError(result.failure));
        else if (signal.aborted) reject(signal.reason);
        else reject(new HandlerProcessError(code, killedBy, handler));
      }),
    );
    child.on("error", (err) => {
      // Could not start (EAGAIN, EMFILE…): classified by its code. Later errors (a failed kill)
      // change nothing: `close` still comes.
      if (child.pid === undefined) settle(() => reject(err));
    });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Checks that each isolated handler's module registers it under the same name, so a wrong
 * `module` is refused when the worker starts rather than failing every attempt.
 *
 * @throws MendError `not_found` or `invalid_argument` naming the handler and its module.
 */
export async function checkIsolatedModules(
  isolated: ReadonlyMap<string, ProcessIsolation>,
): Promise<void> {
  for (const [name, { modulePath }] of isolated) {
    let registered: string[];
    try {
      registered = Object.keys(await loadHandlersModule(modulePath));
    } catch (err) {
      if (!(err instanceof MendError)) throw err;
      throw new MendError(
        err.code,
        `handler "${name}" (isolation "process"): ${err.message}`,
        { handler: name, module: modulePath },
        { cause: err },
      );
    }
    if (!registered.includes(name)) {
      throw new MendError(
        "invalid_argument",
        `handler "${name}" (isolation "process"): its module ${modulePath} does not register it (it registers ${registered.sort().join(", ")}); module must be the handlers module whose default export registers "${name}" under that name`,
        { handler: name, module: modulePath },
      );
    }
  }
}

const SELF = fileURLToPath(import.meta.url);
/** The child's entry point: beside this file, `.ts` when run from source, `.js` when built. */
const CHILD_ENTRY = join(dirname(SELF), `isolated-child${extname(SELF)}`);

/**
 * The child inherits the worker's Node flags (so a loader the worker runs under, such as tsx, also
 * loads TypeScript handler modules in the child). Run from source without such a loader (under
 * vitest), the child's own entry point is TypeScript, so tsx's loader is added.
 */
function childExecArgv(): string[] {
  const argv = process.execArgv;
  if (extname(SELF) !== ".ts" || argv.some((a) => a.includes("tsx"))) return argv;
  const tsx = createRequire(import.meta.url).resolve("tsx");
  return [...argv, "--import", pathToFileURL(tsx).href];
}

/**
 * Children still running in this process. If the process exits without stopping its workers
 * (`process.exit`, a second SIGINT), they are SIGKILLed with it rather than left behind.
 */
const live = new Set<ChildProcess>();
let exitHooked = false;

function track(child: ChildProcess): void {
  if (!exitHooked) {
    exitHooked = true;
    process.on("exit", () => {
      for (const c of live) c.kill("SIGKILL");
    });
  }
  live.add(child);
  child.once("exit", () => live.delete(child));
}
