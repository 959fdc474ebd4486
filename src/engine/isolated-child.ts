/**
 * The entry point of a handler's child process under `isolation: "process"` (started by
 * `isolate.ts`): says it is ready, imports the handler's module, runs one attempt with a context
 * whose calls go back over IPC, reports the output or the classified error, and exits.
 */
import { performance } from "node:perf_hooks";
import { failure } from "../model/failure.js";
import { checkQuality, resolveHandler, type TaskContext } from "../model/handler.js";
import { loadHandlersModule } from "../model/load.js";
import { type ClassifierRule, classifyError } from "../recovery/classify.js";
import type { ChildMessage, LogLevel, ParentMessage, StartMessage } from "./isolate.js";

const controller = new AbortController();
let reported = false;
/** The handler's own classification rules, once its module is loaded. */
let rules: ClassifierRule[] | undefined;
/** Epoch ms, counted on from the worker's clock (which may be a test's fake one). */
let now: (() => number) | undefined;

/** Sends a message; resolves once it is written. Values JSON cannot carry are dropped. */
function post(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve();
    try {
      process.send!(message, undefined, undefined, () => resolve());
    } catch {
      resolve();
    }
  });
}

/** Sends the attempt's result, once, then exits: work the handler left running ends with it. */
async function report(message: ChildMessage & { type: "result" }): Promise<void> {
  if (reported) return;
  reported = true;
  await post(message);
  process.exit(0);
}

/** `value` if JSON can carry it, else undefined (a log call must not throw where it would not). */
function jsonSafe<T>(value: T): T | undefined {
  try {
    JSON.stringify(value);
    return value;
  } catch {
    return undefined;
  }
}

/**
 * Progress details as JSON can carry them: what it cannot is described, not dropped, as details
 * make a heartbeat count as progress.
 */
function detailsOf(details: unknown): unknown {
  return details === undefined ? undefined : (jsonSafe(details) ?? String(details));
}

function logger(level: LogLevel) {
  return (msg: string, data?: object) => {
    const safe = jsonSafe(data);
    void post({
      type: "log",
      level,
      msg,
      ...(data === undefined ? {} : { data: safe ?? { unserializable: String(data) } }),
    });
  };
}

async function run(start: StartMessage): Promise<void> {
  const startedAt = performance.now();
  now = () => Math.round(start.now + performance.now() - startedAt);
  let loaded = false;
  try {
    const def = resolveHandler(await loadHandlersModule(start.module), start.handler);
    loaded = true;
    rules = def.classify;
    const ctx: TaskContext = {
      input: start.input,
      attempt: start.attempt,
      signal: controller.signal,
      idempotencyKey: start.idempotencyKey,
      taskId: start.taskId,
      workstreamId: start.workstreamId,
      log: {
        debug: logger("debug"),
        info: logger("info"),
        warn: logger("warn"),
        error: logger("error"),
      },
      heartbeat: (details) => void post({ type: "heartbeat", details: detailsOf(details) }),
      progress: (details) => void post({ type: "progress", details: detailsOf(details) }),
      setQuality: (score) => void post({ type: "quality", score: checkQuality(score) }),
      degradation: start.degradation,
    };
    const output = await def.run(ctx);
    // As in the worker's process: output that JSON cannot carry fails the attempt.
    if (output !== undefined) JSON.stringify(output);
    await report({ type: "result", ok: true, output: output ?? null });
  } catch (err) {
    await report({
      type: "result",
      ok: false,
      failure: loaded
        ? classifyError(err, { rules, now: now?.() })
        : // The module or the handler could not be loaded: a code or deployment problem.
          failure(
            "logic",
            false,
            `cannot run handler "${start.handler}" in its own process: ${err instanceof Error ? err.message : String(err)}`,
          ),
    });
  }
}

process.on("message", (message: ParentMessage) => {
  if (message.type === "start") {
    void run(message);
  } else if (message.type === "abort") {
    const reason = new Error(message.message);
    reason.name = message.name;
    controller.abort(reason);
  }
});
// The worker is gone (even SIGKILLed): nobody will take the result.
process.on("disconnect", () => process.exit(1));
// An error the handler did not await would crash the worker were it in its process; here it is
// this attempt's failure, classified like a thrown one.
process.on("uncaughtException", (err) => {
  void report({ type: "result", ok: false, failure: classifyError(err, { rules, now: now?.() }) });
});
void post({ type: "ready" });
