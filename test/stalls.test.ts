import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Monitor } from "../src/engine/Monitor.js";
import { Worker } from "../src/engine/Worker.js";
import { submitWorkstream } from "../src/engine/submit.js";
import { defineTask, type TaskContext } from "../src/model/handler.js";
import { json, runCli } from "./helpers/cli.js";
import { start } from "./helpers/exchange.js";
import { expectError } from "./helpers/expect.js";
import { spec } from "./helpers/specs.js";
import { expectConsistent } from "./helpers/recovery.js";
import { openSqlite, tempStore, tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const STALL_MS = 10_000;

describe("stalls, end to end", () => {
  it("progress (ctx.progress or heartbeat details) keeps a long task from stalling; a silent one is reported, and its progress afterwards too", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { workstreamId } = await store.submit(
      spec([
        { id: "chatty", handler: "chatty" },
        { id: "alive", handler: "alive" },
        { id: "silent", handler: "silent" },
      ]),
    );
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    let done = false;
    /** Calls `report` every 2 s of the fake clock until the test finishes. */
    const every2s = async (report: () => void) => {
      while (!done) {
        report();
        await new Promise((resolve) => clock.setTimeout(() => resolve(null), 2_000));
      }
      return "ok";
    };
    const worker = new Worker({
      store,
      clock,
      heartbeatMs: 1_000,
      handlers: {
        chatty: (ctx: TaskContext) => every2s(() => ctx.heartbeat({ page: 1 })),
        // Only proves it is alive: no details, so no progress.
        alive: (ctx: TaskContext) => every2s(() => ctx.heartbeat()),
        silent: async (ctx: TaskContext) => {
          await woken;
          ctx.progress();
          await finished;
          return "ok";
        },
      },
    });
    const monitor = new Monitor({
      store,
      clock,
      stallAfterMs: STALL_MS,
      revival: false,
      patterns: false,
      backupIntervalMs: 0,
    });
    const id = (key: string) => `${workstreamId}/${key}`;
    await worker.start();
    await waitFor(
      async () => (await store.listTasks(workstreamId)).every((t) => t.status === "running"),
      5_000,
      "every task to start",
    );

    await clock.advanceAsync(STALL_MS - 1_000, 250);
    expect((await monitor.tick())!.stalls).toEqual([]);
    await clock.advanceAsync(5_000, 250);
    const { stalls } = (await monitor.tick())!;
    expect(stalls.map((s) => [s.taskId, s.status]).sort()).toEqual([
      [id("alive"), "stalled"],
      [id("silent"), "stalled"],
    ]);
    expect(stalls[0]).toMatchObject({ workerId: worker.id, attempt: 1, stallAfterMs: STALL_MS });
    expect((await store.getTask(id("chatty")))!.stalledAt).toBeNull();
    expect((await store.getTask(id("silent")))!.stalledAt).toBe(clock.now());

    // The silent task reports progress: its next heartbeat carries it, the next sweep records it.
    wake();
    await clock.advanceAsync(1_500, 250);
    expect((await monitor.tick())!.stalls).toMatchObject([
      { taskId: id("silent"), status: "progressing" },
    ]);
    expect((await store.getTask(id("silent")))!.stalledAt).toBeNull();
    expect((await monitor.tick())!.stalls).toEqual([]);

    done = true;
    finish();
    await clock.advanceAsync(2_500, 250);
    await waitFor(
      async () => (await store.listTasks(workstreamId)).every((t) => t.status === "completed"),
      5_000,
      "every task to complete",
    );
    const events = async (key: string) =>
      (await store.listTransitions({ entityId: id(key) })).map((t) => t.event);
    expect(await events("chatty")).toEqual(["task_created", "task_started", "task_completed"]);
    expect(await events("silent")).toEqual([
      "task_created",
      "task_started",
      "task_stalled",
      "task_progressing",
      "task_completed",
    ]);
    expect((await store.getTask(id("alive")))!.stalledAt).toBeNull();
    await worker.stop(0);
    await expectConsistent(store, clock);
  });
});

describe("stallAfter from defineTask", () => {
  it("applies where the definition sets none, and is validated like the file's", async () => {
    const { store } = tempStore(new FakeClock());
    const handlers = { work: defineTask({ run: () => "ok", stallAfter: "2h" }) };
    const { taskIds } = await submitWorkstream(
      store,
      {
        name: "handler defaults",
        tasks: [
          { id: "a", handler: "work" },
          { id: "b", handler: "work", stallAfter: "5m" },
        ],
      },
      { handlers },
    );
    const stallAfter = await Promise.all(
      taskIds.map(async (id) => (await store.getTask(id))!.stallAfterMs),
    );
    expect(stallAfter).toEqual([7_200_000, 300_000]);
    const bad = { work: defineTask({ run: () => "ok", stallAfter: "soon" }) };
    const err = await expectError(
      submitWorkstream(
        store,
        { name: "bad", tasks: [{ id: "a", handler: "work" }] },
        {
          handlers: bad,
        },
      ),
      "invalid_argument",
    );
    expect(err.message).toContain("stallAfter: invalid duration");
  });
});

describe("mend status, diagnose and metrics: stalled tasks", () => {
  it("lists a stalled running task, says so in its diagnosis, and counts it", async () => {
    const path = join(tmpDir(), "mend.db");
    // Ten minutes behind: the CLI, on the real clock, sees it all in the past.
    const clock = new FakeClock(Date.now() - 600_000);
    const store = openSqlite(path, clock);
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "slow" }, { id: "later", deps: ["slow"] }], { name: "stuck" }),
    );
    await start(store, ["slow"]);
    clock.advance(60_000);
    expect(await store.detectStalls(60_000)).toHaveLength(1);
    const stalledAt = clock.now();
    await store.close();
    const mend = (...args: string[]) => runCli(["--store", `sqlite:${path}`, ...args]);

    const overview = await mend("status");
    expect(overview.code, overview.stderr).toBe(0);
    expect(overview.stdout).toMatch(
      new RegExp(
        `stalled: running without progress \\(mend diagnose TASK\\):\nTASK\\s+WORKER\\s+ATTEMPT\\s+STALLED SINCE\n${ws}/slow\\s+w1\\s+1\\s+\\S+`,
      ),
    );
    const rows = json<{ id: string; stalled: unknown[] }[]>(await mend("--json", "status"));
    expect(rows.find((r) => r.id === ws)!.stalled).toEqual([
      { task: `${ws}/slow`, key: "slow", worker: "w1", attempt: 1, stalledAt },
    ]);
    const one = await mend("status", ws);
    expect(one.stdout).toMatch(
      /slow\s+work\s+running\s+1\/3\s+stalled: no progress \(reported \S+/,
    );
    expect(
      json<{ tasks: { id: string; stalledAt: number | null }[] }>(
        await mend("--json", "status", ws),
      ).tasks.map((t) => [t.id, t.stalledAt]),
    ).toEqual([
      ["slow", stalledAt],
      ["later", null],
    ]);

    const d = json<{ level: number; summary: string; next: { command: string } }>(
      await mend("--json", "diagnose", `${ws}/slow`),
    );
    expect(d.level).toBe(3);
    expect(d.summary).toMatch(/^slow is running attempt 1 of 3 on worker w1, but stalled: /);
    expect(d.next.command).toBe(`mend show ${ws}/slow`);
    const text = await mend("diagnose", `${ws}/slow`);
    expect(text.stdout).toMatch(/task_stalled\s+running → running/);

    const m = json<{ stalls: { count: number; tasks: number } }>(await mend("--json", "metrics"));
    expect(m.stalls).toEqual({ count: 1, tasks: 1 });
  });
});
