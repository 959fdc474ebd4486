import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Worker } from "../src/engine/Worker.js";
import { validateDefinition } from "../src/model/definition.js";
import type { ExchangeRequest, ExchangeResult, Store } from "../src/store/store.js";
import { spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

describe("Worker", () => {
  it("registers again when the store no longer knows it (restored from an older backup)", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    const worker = new Worker({ store, clock, heartbeatMs: 200, handlers: { work: () => "ok" } });
    await worker.start();
    const db = new Database(path);
    db.prepare("DELETE FROM workers WHERE id = ?").run(worker.id);
    db.close();
    await clock.advanceAsync(250, 50);
    await waitFor(
      async () => (await store.listWorkers()).some((w) => w.id === worker.id),
      5_000,
      "the worker to register again",
    );
    await worker.stop(0);
  });

  it("keeps its outcomes when the store fails an exchange, and settles them on the retry", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { workstreamId } = await store.submit(spec([{ id: "a" }]));
    let failNext = false;
    let failures = 0;
    const flaky = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === "exchange") {
          return async (req: ExchangeRequest): Promise<ExchangeResult> => {
            if (failNext && req.outcomes.length > 0) {
              failNext = false;
              failures++;
              throw new Error("database is locked");
            }
            return target.exchange(req);
          };
        }
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Store;
    let release!: () => void;
    const worker = new Worker({
      store: flaky,
      clock,
      heartbeatMs: 200,
      handlers: {
        work: () =>
          new Promise<string>((resolve) => {
            release = () => resolve("done");
          }),
      },
    });
    await worker.start();
    await waitFor(() => release !== undefined, 5_000, "the task to start");
    failNext = true;
    release();
    await waitFor(() => failures === 1, 5_000, "the failed exchange");
    expect((await store.getTask(`${workstreamId}/a`))!.status).toBe("running");
    await clock.advanceAsync(250, 50);
    await waitFor(
      async () => (await store.getTask(`${workstreamId}/a`))!.status === "completed",
      5_000,
      "the retried exchange to complete the task",
    );
    expect((await store.getTask(`${workstreamId}/a`))!.output).toBe("done");
    await worker.stop(0);
  });

  it("refuses a worker id that could be mistaken for a workstream or task id", () => {
    const { store } = tempStore(new FakeClock());
    for (const id of ["ws_abc", "a/b", ""]) {
      expect(() => new Worker({ store, handlers: { work: () => null }, id })).toThrow(
        expect.objectContaining({ code: "invalid_argument" }),
      );
    }
  });

  it("aborts a handler's signal when its timeout passes and records a timeout failure", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { taskIds } = await store.submit(
      validateDefinition({ name: "t", tasks: [{ id: "slow", handler: "work", timeout: "2s" }] }),
    );
    let signal: AbortSignal | undefined;
    const worker = new Worker({
      store,
      clock,
      heartbeatMs: 500,
      handlers: {
        // Ignores its signal on purpose: the worker must still free the slot and record it.
        work: (ctx) => {
          signal = ctx.signal;
          return new Promise(() => {});
        },
      },
    });
    await worker.start();
    await waitFor(() => signal !== undefined, 5_000, "the task to start");
    await clock.advanceAsync(2_001, 250);
    expect(signal!.aborted).toBe(true);
    await waitFor(
      async () => (await store.getTask(taskIds[0]!))!.lastError?.category === "timeout",
      5_000,
      "the timeout to be recorded",
    );
    const events = (await store.listTransitions({ entityId: taskIds[0]! })).map((t) => t.event);
    expect(events).toContain("task_timeout");
    await worker.stop(0);
  });
});
