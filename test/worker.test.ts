import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Worker } from "../src/engine/Worker.js";
import { validateDefinition } from "../src/model/definition.js";
import type { ExchangeRequest, ExchangeResult, Store } from "../src/store/store.js";
import { planner } from "./helpers/recovery.js";
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

  describe("prefetch", () => {
    /** A worker whose handler holds every task until the test lets it go. */
    async function holding(prefetch: number, tasks: number) {
      const clock = new FakeClock();
      const { store } = tempStore(clock);
      const { workstreamId } = await store.submit(
        spec(Array.from({ length: tasks }, (_, i) => ({ id: `t${i}` }))),
      );
      const started: string[] = [];
      const releases: (() => void)[] = [];
      const worker = new Worker({
        store,
        clock,
        concurrency: 2,
        prefetch,
        heartbeatMs: 500,
        leaseMs: 2_000,
        handlers: {
          work: (ctx) =>
            new Promise<string>((resolve) => {
              started.push(ctx.taskId);
              releases.push(() => resolve("done"));
            }),
        },
      });
      const statuses = async () =>
        (await store.listTasks(workstreamId)).reduce<Record<string, number>>((n, t) => {
          n[t.status] = (n[t.status] ?? 0) + 1;
          return n;
        }, {});
      return { clock, store, worker, started, releases, statuses };
    }

    it("claims up to concurrency + prefetch but runs at most concurrency handlers at once", async () => {
      const { worker, started, releases, statuses } = await holding(3, 8);
      await worker.start();
      await waitFor(async () => (await statuses()).running === 5, 5_000, "five claims");
      expect(started).toHaveLength(2);
      // A slot freed starts a prefetched task at once, without waiting for the store.
      releases.shift()!();
      await waitFor(() => started.length === 3, 5_000, "a prefetched task to start");
      while (started.length < 8 || releases.length > 0) {
        releases.shift()?.();
        await new Promise((r) => setImmediate(r));
        expect(worker.inFlight).toBeLessThanOrEqual(2);
      }
      await waitFor(async () => (await statuses()).completed === 8, 5_000, "all eight done");
      await worker.stop(0);
    });

    it("keeps prefetched tasks' leases alive while they wait", async () => {
      const { clock, store, worker, started, releases, statuses } = await holding(2, 4);
      await worker.start();
      await waitFor(async () => (await statuses()).running === 4, 5_000, "four claims");
      // Three lease lengths pass: heartbeats renew the two waiting tasks' leases too.
      await clock.advanceAsync(6_000, 250);
      expect(await store.sweepExpiredLeases(planner)).toEqual([]);
      while (started.length < 4 || releases.length > 0) {
        releases.shift()?.();
        await new Promise((r) => setImmediate(r));
      }
      await waitFor(async () => (await statuses()).completed === 4, 5_000, "all four done");
      await worker.stop(0);
    });

    it("gives prefetched tasks back at once when it stops", async () => {
      const { worker, started, releases, statuses } = await holding(3, 5);
      await worker.start();
      await waitFor(async () => (await statuses()).running === 5, 5_000, "five claims");
      const stopped = worker.stop(60_000);
      // The three waiting are queued again while the two running may still finish.
      await waitFor(
        async () => (await statuses()).queued === 3,
        5_000,
        "the prefetched tasks to be released",
      );
      expect(started).toHaveLength(2);
      for (const release of releases) release();
      await stopped;
      expect(await statuses()).toEqual({ completed: 2, queued: 3 });
    });
  });
});
