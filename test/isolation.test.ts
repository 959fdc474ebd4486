/**
 * `isolation: "process"`: handlers run in real child processes, which report back over IPC and
 * are SIGKILLed when they ignore their abort signal past the kill grace. The kill grace and the
 * task timeouts run on a fake clock; the processes are real.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { IsolatedHandlerError, runIsolated } from "../src/engine/isolate.js";
import { Worker } from "../src/engine/Worker.js";
import { validateDefinition } from "../src/model/definition.js";
import type { TaskContext } from "../src/model/handler.js";
import type { Logger } from "../src/observe/logger.js";
import { NORMAL_DEGRADATION } from "../src/recovery/degrade.js";
import type { Store } from "../src/store/store.js";
import handlers from "./fixtures/isolated-handlers.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const MODULE = fileURLToPath(new URL("./fixtures/isolated-handlers.ts", import.meta.url));

interface LogLine {
  level: string;
  msg: string;
  data?: object;
  bindings: Record<string, unknown>;
}

/** A logger that keeps what it is given, with the bindings of the child logger that wrote it. */
function recordingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at = (level: string) => (msg: string, data?: object) =>
      void lines.push({ level, msg, data, bindings });
    return {
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return { logger: make({}), lines };
}

/**
 * Resolves once the `hang` handler has ticked twice more: its process is still running (a killed
 * one may still answer `kill(pid, 0)` until it is reaped, and may have ticks in flight).
 */
async function ticking(lines: LogLine[]): Promise<void> {
  const ticks = () => lines.filter((l) => l.msg === "tick").length;
  const seen = ticks();
  await waitFor(() => ticks() >= seen + 2, 5_000, "the handler to tick");
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid a fixture handler logged as it started. */
function loggedPid(lines: LogLine[], msg: string): Promise<number> {
  return waitFor(
    () => (lines.find((l) => l.msg === msg)?.data as { pid?: number } | undefined)?.pid,
    10_000,
    `the handler to log "${msg}"`,
  );
}

async function submit(
  store: Store,
  tasks: { id: string; handler: string; timeout?: string; input?: unknown }[],
): Promise<string[]> {
  const { taskIds } = await store.submit(
    validateDefinition({
      name: "isolation",
      tasks: tasks.map((t) => ({ ...t, retry: { maxAttempts: 2, backoff: "constant" } })),
    }),
  );
  return taskIds;
}

function startWorker(store: Store, clock: FakeClock, extra: object = {}) {
  const { logger, lines } = recordingLogger();
  const worker = new Worker({ store, clock, handlers, heartbeatMs: 500, logger, ...extra });
  return { worker, lines, started: worker.start() };
}

/** A context for {@link runIsolated} that records the calls the child makes. */
function recordingContext(): { ctx: TaskContext; calls: unknown[][] } {
  const calls: unknown[][] = [];
  const log = (level: string) => (msg: string, data?: object) =>
    void calls.push([level, msg, data]);
  const ctx: TaskContext = {
    input: "x",
    attempt: 2,
    signal: new AbortController().signal,
    idempotencyKey: "key",
    taskId: "t_1",
    workstreamId: "ws_1",
    log: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
    heartbeat: (details) => void calls.push(["heartbeat", details]),
    progress: (details) => void calls.push(["progress", details]),
    setQuality: (score) => void calls.push(["quality", score]),
    degradation: NORMAL_DEGRADATION,
  };
  return { ctx, calls };
}

const isolation = { modulePath: MODULE, killGraceMs: 1000 };

describe("isolation: process", () => {
  it("runs a handler in a process of its own and records its output and quality", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const [id] = await submit(store, [{ id: "a", handler: "echo", input: { n: 1 } }]);
    const { worker, lines, started } = startWorker(store, clock);
    await started;
    const task = await waitFor(
      async () => {
        const t = (await store.getTask(id!))!;
        return t.status === "completed" ? t : null;
      },
      10_000,
      "the task to complete",
    );
    const output = task.output as { pid: number };
    expect(output).toEqual({
      pid: expect.any(Number),
      input: { n: 1 },
      attempt: 1,
      taskId: id,
      workstreamId: task.workstreamId,
      idempotencyKey: task.idempotencyKey,
      level: 0,
    });
    expect(output.pid).not.toBe(process.pid);
    expect(task.quality).toBe(0.75);
    expect(lines).toContainEqual({
      level: "info",
      msg: "echoing",
      data: { attempt: 1 },
      bindings: { worker: worker.id, task: id, attempt: 1 },
    });
    expect(alive(output.pid)).toBe(false);
    await worker.stop(0);
  });

  it("hands the handler's heartbeat, progress, quality and log calls to the attempt's context", async () => {
    const { ctx, calls } = recordingContext();
    const output = await runIsolated(ctx, { handler: "echo", isolation, clock: new FakeClock() });
    expect(output).toMatchObject({ input: "x", attempt: 2, taskId: "t_1", idempotencyKey: "key" });
    expect(calls).toEqual([
      ["heartbeat", { step: 1 }],
      ["progress", { step: 2 }],
      ["quality", 0.75],
      ["info", "echoing", { attempt: 2 }],
    ]);
  });

  it("fails for good when the module does not register the handler: a code or deployment problem", async () => {
    const { ctx } = recordingContext();
    const missing = runIsolated(ctx, { handler: "nope", isolation, clock: new FakeClock() });
    await expect(missing).rejects.toBeInstanceOf(IsolatedHandlerError);
    await expect(missing).rejects.toMatchObject({
      failure: {
        category: "logic",
        recoverable: false,
        message:
          'cannot run handler "nope" in its own process: unknown handler "nope" (handlers are: echo, exit3, hang, killed, polite, quick, quota, spin, unavailable)',
      },
    });
  });

  it("classifies a handler's error as it would in the worker's process, with its own rules", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const ids = await submit(store, [
      { id: "isolated503", handler: "unavailable" },
      { id: "inline503", handler: "unavailable-inline" },
      { id: "isolatedQuota", handler: "quota" },
      { id: "inlineQuota", handler: "quota-inline" },
    ]);
    const { worker, started } = startWorker(store, clock, {
      handlers: {
        ...handlers,
        "unavailable-inline": { run: handlers.unavailable.run },
        "quota-inline": { run: handlers.quota.run, classify: handlers.quota.classify },
      },
    });
    await started;
    const [isolated503, inline503, isolatedQuota, inlineQuota] = await waitFor(
      async () => {
        const errors = await Promise.all(
          ids.map(async (id) => (await store.getTask(id))!.lastError),
        );
        return errors.every((e) => e !== null) ? errors : null;
      },
      10_000,
      "every task to fail its first attempt",
    );
    expect(isolated503).toEqual({
      category: "external_service",
      recoverable: true,
      message: "search 503",
      name: "Error",
      status: 503,
      retryAfterMs: 7000,
    });
    expect(isolated503).toEqual(inline503);
    // The rule matches with `instanceof`: it ran where the error was thrown.
    expect(isolatedQuota).toEqual({
      category: "rate_limited",
      recoverable: false,
      message: "monthly quota used up",
      name: "QuotaError",
    });
    expect(isolatedQuota).toEqual(inlineQuota);
    await worker.stop(0);
  });

  it.each(["hang", "spin"])(
    "SIGKILLs a handler that ignores its abort (%s) once the kill grace has passed, and frees its slot",
    async (handler) => {
      const clock = new FakeClock();
      const { store } = tempStore(clock);
      const [stuck] = await submit(store, [{ id: "stuck", handler, timeout: "2s" }]);
      const { worker, lines, started } = startWorker(store, clock, { concurrency: 1 });
      await started;
      const pid = await loggedPid(lines, handler === "hang" ? "hanging" : "spinning");
      const [next] = await submit(store, [{ id: "next", handler: "quick" }]);

      // Timed out and told to abort: it ignores that, and keeps its slot for the kill grace (1 s).
      await clock.advanceAsync(2_900, 100);
      if (handler === "hang") await ticking(lines);
      expect(worker.inFlight).toBe(1);
      expect((await store.getTask(next!))!.status).toBe("queued");

      await clock.advanceAsync(100, 100);
      await waitFor(() => !alive(pid), 5_000, "the handler's process to be killed");
      const failed = await waitFor(
        async () => (await store.getTask(stuck!))!.lastError,
        5_000,
        "the timeout to be recorded",
      );
      // As the same handler would have failed in the worker's process.
      expect(failed).toEqual({
        category: "timeout",
        recoverable: true,
        message: "timed out after 2s",
        name: "TimeoutError",
      });
      // The slot is free again: the next task runs at once.
      await waitFor(
        async () => (await store.getTask(next!))!.status === "completed",
        5_000,
        "the next task to run in the freed slot",
      );
      await worker.stop(0);
    },
  );

  it("does not kill a handler that stops within the kill grace when told to", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const [id] = await submit(store, [{ id: "p", handler: "polite", timeout: "2s" }]);
    const { worker, lines, started } = startWorker(store, clock);
    await started;
    const pid = await loggedPid(lines, "waiting");
    await clock.advanceAsync(2_000, 100);
    // No more time passes: the process exits by itself, well within its grace.
    await waitFor(() => !alive(pid), 5_000, "the handler's process to exit");
    const failed = await waitFor(
      async () => (await store.getTask(id!))!.lastError,
      5_000,
      "the timeout to be recorded",
    );
    expect(failed).toMatchObject({ category: "timeout", message: "timed out after 2s" });
    await worker.stop(0);
  });

  it.each([
    ["exit3", "exited with code 3"],
    ["killed", "was killed by SIGKILL"],
  ])(
    "fails the attempt as a recoverable tool_failure when the process dies on its own (%s)",
    async (handler, how) => {
      const clock = new FakeClock();
      const { store } = tempStore(clock);
      const [id] = await submit(store, [{ id: "x", handler }]);
      const { worker, started } = startWorker(store, clock);
      await started;
      const task = await waitFor(
        async () => {
          const t = (await store.getTask(id!))!;
          return t.lastError ? t : null;
        },
        10_000,
        "the attempt to fail",
      );
      expect(task.lastError).toEqual({
        category: "tool_failure",
        recoverable: true,
        message: `the process running handler "${handler}" ${how} before reporting a result`,
        name: "HandlerProcessError",
        code: "HANDLER_PROCESS_EXITED",
      });
      // Retried under its policy, like any recoverable failure.
      expect(task.status).toBe("queued");
      await worker.stop(0);
    },
  );

  it("on stop, kills the handlers' processes before releasing their tasks", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const [id] = await submit(store, [{ id: "h", handler: "hang" }]);
    const { worker, lines, started } = startWorker(store, clock);
    await started;
    const pid = await loggedPid(lines, "hanging");
    const stopped = worker.stop(0);
    await clock.advanceAsync(900, 100);
    await ticking(lines);
    expect((await store.getTask(id!))!.status).toBe("running");
    await clock.advanceAsync(200, 100);
    await stopped;
    expect(alive(pid)).toBe(false);
    expect(await store.getTask(id!)).toMatchObject({ status: "queued", attempts: 0 });
  });

  it("refuses isolation settings it cannot honour, naming the handler and every problem", () => {
    const { store } = tempStore(new FakeClock());
    const make = (def: object) => () =>
      new Worker({ store, handlers: { job: { run: () => null, ...def } } });
    expect(make({ isolation: "process" })).toThrow(
      'invalid isolation settings of handler "job":\n  - module: required with isolation "process": the file: URL of the module whose default export registers this handler (usually import.meta.url)',
    );
    expect(make({ isolation: "thread", module: "handlers.js", killGrace: "soon" })).toThrow(
      [
        'invalid isolation settings of handler "job":',
        '  - isolation: must be "none" or "process", got "thread"',
        '  - module: must be a file: URL or an absolute path, such as import.meta.url; got "handlers.js"',
        '  - killGrace: applies only with isolation "process"',
        '  - killGrace: invalid duration "soon": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h',
      ].join("\n"),
    );
    expect(make({ module: MODULE, killGrace: "1s" })).toThrow(
      'invalid isolation settings of handler "job":\n  - killGrace: applies only with isolation "process"',
    );
    expect(make({ isolation: "process", module: MODULE })).not.toThrow();
  });

  it("refuses to start when an isolated handler's module does not register it by that name", async () => {
    const { store } = tempStore(new FakeClock());
    const worker = new Worker({
      store,
      handlers: { renamed: handlers.echo },
    });
    await expect(worker.start()).rejects.toMatchObject({
      code: "invalid_argument",
      message: `handler "renamed" (isolation "process"): its module ${MODULE} does not register it (it registers echo, exit3, hang, killed, polite, quick, quota, spin, unavailable); module must be the handlers module whose default export registers "renamed" under that name`,
    });
    expect(await store.listWorkers()).toEqual([]);
  });
});
