import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it, onTestFinished } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import type { TransitionRecord } from "../src/model/records.js";
import { TASK_STATUSES } from "../src/model/states.js";
import {
  type Checkpoint,
  decodeFold,
  encodeFold,
  foldRecord,
  isCheckpoint,
  isSnapshotPoint,
  snapshotInterval,
  startFold,
  toCheckpoint,
} from "../src/state/checkpoints.js";
import {
  checkpointAt,
  latestQuietCheckpoint,
  openCheckpointLog,
} from "../src/store/sql/checkpoints.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor } from "../src/store/store.js";
import { runToCompletion, start } from "./helpers/exchange.js";
import { spec } from "./helpers/specs.js";
import { tempStore, tmpDir } from "./helpers/tmp.js";

const operator: Actor = { actor: "op", reason: null, command: "mend test" };

/** A store without an fsync per commit: these tests write thousands of small transactions. */
function fastStore(): SqliteStore {
  const store = new SqliteStore(join(tmpDir(), "mend.db"), {
    clock: new FakeClock(),
    synchronous: "NORMAL",
  });
  onTestFinished(() => store.close());
  return store;
}

/** `rounds` cancel-and-retry pairs on a task that cannot run yet: two records each. */
async function churn(store: SqliteStore, taskId: string, rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await store.cancelTask(taskId, operator);
    await store.retryTask(taskId, {}, operator);
  }
}

function snapshotRows(store: SqliteStore, ws: string) {
  return store.db
    .prepare("SELECT seq, state FROM checkpoint_snapshots WHERE workstream_id = ? ORDER BY seq")
    .all(ws) as { seq: number; state: string }[];
}

function recordsOf(store: SqliteStore, ws: string): number {
  return (
    store.db.prepare("SELECT COUNT(*) AS n FROM transitions WHERE workstream_id = ?").get(ws) as {
      n: number;
    }
  ).n;
}

describe("listing checkpoints", () => {
  it("one per task transition once every task exists, newest first, in the seed's terms", async () => {
    const { store } = tempStore(new FakeClock());
    const { workstreamId: ws } = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await runToCompletion(store, ["a"]);
    const all = await store.listCheckpoints(ws);
    // Records: 1 workstream_created, 2 a created, 3 b created, 4 a started, 5 a completed, 6 b ready.
    expect(all.map((c) => [c.seq, c.event, c.task])).toEqual([
      [6, "task_ready", "b"],
      [5, "task_completed", "a"],
      [4, "task_started", "a"],
      [3, "task_created", "b"],
    ]);
    expect(all[0]).toEqual({
      workstreamId: ws,
      seq: 6,
      at: expect.any(Number),
      event: "task_ready",
      task: "b",
      tasks: [
        { key: "a", status: "completed", attempts: 1 },
        { key: "b", status: "queued", attempts: 0 },
      ],
    });
    expect(all[2]!.tasks).toEqual([
      { key: "a", status: "running", attempts: 1 },
      { key: "b", status: "pending", attempts: 0 },
    ]);
    expect(all.at(-1)!.tasks).toEqual([
      { key: "a", status: "queued", attempts: 0 },
      { key: "b", status: "pending", attempts: 0 },
    ]);
    expect(await store.listCheckpoints(ws, 2)).toEqual(all.slice(0, 2));
    expect(await store.listCheckpoints(ws, 100)).toEqual(all);
  });

  it("keeps workstreams apart and keeps task ids in definition order, numeric ones too", async () => {
    const { store } = tempStore(new FakeClock());
    const one = await store.submit(spec([{ id: "b" }, { id: "10" }, { id: "2" }]));
    const two = await store.submit(spec([{ id: "x" }]));
    await runToCompletion(store, ["b", "10", "2", "x"]);
    const first = await store.listCheckpoints(one.workstreamId);
    expect(first.every((c) => c.workstreamId === one.workstreamId)).toBe(true);
    expect(first[0]!.tasks.map((t) => t.key)).toEqual(["b", "10", "2"]);
    expect((await store.listCheckpoints(two.workstreamId)).map((c) => c.task)).toEqual([
      "x",
      "x",
      "x",
    ]);
  });

  it("adds no work to the hot path: submitting and running tasks writes no snapshot", async () => {
    const store = fastStore();
    const { workstreamId: ws } = await store.submit(
      spec(Array.from({ length: 150 }, (_, i) => ({ id: `t${i}` }))),
    );
    for (let i = 0; i < 150; i += 50) {
      await runToCompletion(
        store,
        Array.from({ length: 50 }, (_, j) => `t${i + j}`),
      );
    }
    expect(recordsOf(store, ws)).toBeGreaterThan(400);
    expect(snapshotRows(store, ws)).toEqual([]);
    // Reading them is what materializes snapshots.
    await store.listCheckpoints(ws, 1);
    expect(snapshotRows(store, ws).length).toBeGreaterThan(0);
  });
});

describe("snapshots", () => {
  it("give the same checkpoints as folding the whole log, listed or one at a time", async () => {
    const store = fastStore();
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }]),
    );
    await churn(store, `${ws}/b`, 120);
    await runToCompletion(store, ["a", "c"]);
    await churn(store, `${ws}/b`, 130);
    const records = recordsOf(store, ws);
    expect(records).toBeGreaterThan(500);

    const fromLog = await store.listCheckpoints(ws);
    const rows = snapshotRows(store, ws);
    expect(rows.length).toBe(Math.floor(records / snapshotInterval(3)));
    const withSnapshots = await store.listCheckpoints(ws);
    expect(withSnapshots).toEqual(fromLog);
    for (const limit of [1, 7, 99, 100, 101, 250]) {
      expect(await store.listCheckpoints(ws, limit)).toEqual(fromLog.slice(0, limit));
    }
    const log = await openCheckpointLog(store.q, ws);
    for (const c of fromLog.filter((_, i) => i % 13 === 0)) {
      expect(await checkpointAt(log, c.seq)).toEqual(c);
    }
    // No snapshot written twice.
    expect(snapshotRows(store, ws)).toEqual(rows);
  });

  it("ignore a snapshot that no longer matches the log, or does not parse", async () => {
    const store = fastStore();
    const { workstreamId: ws } = await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await churn(store, `${ws}/b`, 160);
    const truth = await store.listCheckpoints(ws);
    const [first, second] = snapshotRows(store, ws);
    // A lie that parses, under a hash that does not match: ignored.
    const lie = JSON.stringify({
      position: 100,
      tasks: [
        ["a", "completed", 9],
        ["b", "failed", 9],
      ],
    });
    store.db
      .prepare("UPDATE checkpoint_snapshots SET state = ?, hash = 'x' WHERE seq = ?")
      .run(lie, first!.seq);
    // Unreadable: ignored and replaced.
    store.db.prepare("UPDATE checkpoint_snapshots SET state = '{' WHERE seq = ?").run(second!.seq);
    expect(await store.listCheckpoints(ws)).toEqual(truth);
    // A reader starting just after the unreadable one falls back to the beginning, and both are
    // written again from the log.
    const after = truth.filter((c) => c.seq > second!.seq + 5);
    expect(await store.listCheckpoints(ws, after.length)).toEqual(after);
    expect(snapshotRows(store, ws).slice(0, 2)).toEqual([first, second]);
  });

  it("grow linearly with the number of transitions, whatever the number of tasks", async () => {
    const store = fastStore();
    const tasks = 150;
    const { workstreamId: ws } = await store.submit(
      spec([
        { id: "gate" },
        ...Array.from({ length: tasks - 1 }, (_, i) => ({ id: `t${i}`, deps: ["gate"] })),
      ]),
    );
    const sizes: { records: number; snapshots: number; bytes: number }[] = [];
    for (const rounds of [300, 300, 600]) {
      await churn(store, `${ws}/t0`, rounds);
      await store.listCheckpoints(ws, 1);
      const rows = snapshotRows(store, ws);
      sizes.push({
        records: recordsOf(store, ws),
        snapshots: rows.length,
        bytes: rows.reduce((n, r) => n + r.state.length, 0),
      });
    }
    for (const s of sizes) {
      expect(s.snapshots).toBe(Math.floor(s.records / snapshotInterval(tasks)));
      // One entry per task per snapshot, one snapshot per `tasks` records: bytes per record stay
      // bounded (a copy per transition would be ~tasks × 20 bytes per record).
      expect(s.bytes / s.records).toBeLessThan(30);
    }
    // Doubling the records doubles the storage, not quadruples it.
    const [, twice, fourTimes] = sizes;
    expect(fourTimes!.bytes / twice!.bytes).toBeCloseTo(fourTimes!.records / twice!.records, 0);
  });

  it("latest searches back past snapshots to the last quiet point", async () => {
    const store = fastStore();
    const { workstreamId: ws } = await store.submit(
      spec([{ id: "long" }, { id: "gate" }, { id: "b", deps: ["gate"] }]),
    );
    const [quiet] = await store.listCheckpoints(ws, 1);
    await start(store, ["long", "gate"]);
    // From here on `long` runs throughout: no quiet point in the next ~600 records.
    await churn(store, `${ws}/b`, 300);
    const expected = (await store.listCheckpoints(ws)).find((c) =>
      c.tasks.every((t) => t.status !== "running"),
    );
    expect(expected!.seq).toBe(quiet!.seq);
    expect(snapshotRows(store, ws).length).toBeGreaterThan(4);
    expect(await latestQuietCheckpoint(await openCheckpointLog(store.q, ws))).toEqual(expected);
    store.db.prepare("DELETE FROM checkpoint_snapshots").run();
    expect(await latestQuietCheckpoint(await openCheckpointLog(store.q, ws))).toEqual(expected);
  });
});

// ------------------------------------------------------------------ the fold, SQL-free

/** Random records of one workstream: some task changes, some workstream changes. */
const recordsArb = fc
  .array(
    fc.record({
      task: fc.nat({ max: 4 }),
      entity: fc.constantFrom("task", "task", "task", "workstream"),
      to: fc.constantFrom(...TASK_STATUSES),
      attempts: fc.option(fc.nat({ max: 5 })),
    }),
    { minLength: 1, maxLength: 80 },
  )
  .map((steps) =>
    steps.map((s, i): TransitionRecord => {
      const key = ["a", "1", "0", "b-2", "c"][s.task]!;
      return {
        seq: 10 + i * 3,
        at: 1_000 + i,
        entity: s.entity as "task" | "workstream",
        entityId: s.entity === "task" ? `ws_x/${key}` : "ws_x",
        workstreamId: "ws_x",
        from: null,
        to: s.entity === "task" ? s.to : "active",
        event: "e",
        severity: "info",
        data: s.attempts === null ? {} : { attempts: s.attempts },
        detail: null,
        actor: "t",
        hash: `h${i}`,
      };
    }),
  );

/** Every checkpoint of `records`, folding from the start, or resuming from saved snapshots. */
function checkpointsOf(records: TransitionRecord[], interval: number | null): Checkpoint[] {
  const taskCount = new Set(records.filter((r) => r.entity === "task").map((r) => r.entityId)).size;
  let fold = startFold("ws_x");
  const out: Checkpoint[] = [];
  for (const r of records) {
    foldRecord(fold, r);
    if (isCheckpoint(fold, r, taskCount)) out.push(toCheckpoint(fold, r));
    if (interval !== null && isSnapshotPoint(fold, interval)) {
      // Continue from the saved form, as a later reader would.
      fold = decodeFold("ws_x", fold.seq, encodeFold(fold))!;
    }
  }
  return out;
}

describe("the checkpoint fold", () => {
  it("continued from a snapshot is identical to folding from the start", () => {
    fc.assert(
      fc.property(recordsArb, fc.integer({ min: 1, max: 9 }), (records, interval) => {
        expect(checkpointsOf(records, interval)).toEqual(checkpointsOf(records, null));
      }),
      { numRuns: 300 },
    );
  });

  it("counts running tasks as it goes, including in a decoded snapshot", () => {
    fc.assert(
      fc.property(recordsArb, (records) => {
        const fold = startFold("ws_x");
        for (const r of records) foldRecord(fold, r);
        const running = [...fold.tasks.values()].filter((t) => t.status === "running").length;
        expect(fold.running).toBe(running);
        expect(decodeFold("ws_x", fold.seq, encodeFold(fold))!.running).toBe(running);
      }),
    );
  });

  it("snapshots are spaced at least 100 records and one per task apart", () => {
    expect(snapshotInterval(1)).toBe(100);
    expect(snapshotInterval(100)).toBe(100);
    expect(snapshotInterval(5000)).toBe(5000);
  });

  it("a snapshot that does not parse is refused as null, not trusted", () => {
    expect(decodeFold("ws_x", 1, "{")).toBeNull();
    expect(
      decodeFold("ws_x", 1, JSON.stringify({ position: 1, tasks: [["a", "done", 0]] })),
    ).toBeNull();
    expect(decodeFold("ws_x", 1, JSON.stringify({ position: -1, tasks: [] }))).toBeNull();
  });
});
