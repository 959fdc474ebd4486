import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor } from "../src/store/store.js";
import { journalDirFor, readJournal } from "../src/state/journal.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });
const operator: Actor = { actor: "alice", reason: "testing", command: "mend test" };

/** Submits a workstream, runs some of it and records an intervention: a log with some of everything. */
async function workload(store: SqliteStore, clock: FakeClock, tasks = 6): Promise<string> {
  const { workstreamId, taskIds } = await store.submit(
    spec(
      Array.from({ length: tasks }, (_, i) => ({
        id: `t${i}`,
        ...(i > 0 ? { deps: [`t${i - 1}`] } : {}),
      })),
    ),
  );
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  for (let i = 0; i < tasks - 2; i++) {
    const { claimed } = await store.exchange({
      workerId: "w1",
      outcomes: [],
      claim: 1,
      leaseMs: 5_000,
      handlers: ["work"],
      planner,
    });
    clock.advance(10);
    await store.exchange({
      workerId: "w1",
      outcomes: claimed.map((t) => ({
        kind: "complete" as const,
        taskId: t.id,
        token: t.leaseToken,
        output: { i },
      })),
      claim: 0,
      leaseMs: 5_000,
      handlers: ["work"],
      planner,
    });
  }
  await store.cancelTask(taskIds.at(-1)!, operator);
  return workstreamId;
}

async function logOf(store: SqliteStore) {
  return (await store.listTransitions({ limit: 1_000_000 })).map((t) => [t.seq, t.hash]);
}

describe("transition journal", () => {
  it("holds every committed transition and intervention, durable beside the database", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await workload(store, clock);
    const journal = readJournal(journalDirFor(path));
    expect(journal.transitions.map((t) => [t.seq, t.hash])).toEqual(await logOf(store));
    expect(journal.interventions.map((i) => i.id)).toEqual(
      (await store.listInterventions()).map((i) => i.id),
    );
    expect(journal.tornRecords).toBe(0);
    expect(journalDirFor(path)).toBe(join(path, "..", "journal", "mend"));
  });

  it("rolls over to new segments and reads across them", async () => {
    const clock = new FakeClock();
    const { dir } = tempStore(clock);
    const path = join(dir, "small.db");
    const store = new SqliteStore(path, { clock, journalSegmentBytes: 2_000 });
    await workload(store, clock, 12);
    expect(readdirSync(journalDirFor(path)).length).toBeGreaterThan(3);
    expect(readJournal(journalDirFor(path)).transitions.map((t) => [t.seq, t.hash])).toEqual(
      await logOf(store),
    );
    await store.close();
  });

  it("overwrites a transaction whose commit never happened, and leaves out one cut short", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await workload(store, clock);
    const dir = journalDirFor(path);
    const [segment] = readdirSync(dir);
    const file = join(dir, segment!);
    const committed = readFileSync(file);
    const end = committed.indexOf(0);
    // A writer died after writing its journal lines (one whole transaction) but before COMMIT.
    const phantom =
      'T\t[999,1,"task","x",null,null,"queued","task_created","info","ghost","00"]\t{}\tnull\tE\n\0';
    const bytes = Buffer.from(committed);
    bytes.write(phantom, end);
    writeFileSync(file, bytes);
    expect(readJournal(dir).transitions.at(-1)!.seq).toBe(999);
    await store.submit(spec([{ id: "after" }]));
    const log = await logOf(store);
    expect(readJournal(dir).transitions.map((t) => [t.seq, t.hash])).toEqual(log);

    // A crash in the middle of writing: a line without its transaction's end marker.
    const again = readFileSync(file);
    const stop = again.indexOf(0);
    again.write('T\t[12345,1,"ta', stop);
    writeFileSync(file, again);
    const read = readJournal(dir);
    expect(read.transitions.map((t) => [t.seq, t.hash])).toEqual(log);
  });

  it("refuses to write when the database is older than its journal, naming the way out", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await store.submit(spec([{ id: "a" }]));
    await store.close();
    copyFileSync(path, join(dir, "old.db"));
    const current = openSqlite(path, clock);
    await current.submit(spec([{ id: "b" }]));
    await current.submit(spec([{ id: "c" }]));
    const committed = (await current.listTransitions()).length;
    await current.close();
    copyFileSync(join(dir, "old.db"), path);
    const old = openSqlite(path, clock);
    const err = await old.submit(spec([{ id: "d" }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MendError);
    expect((err as MendError).code).toBe("refused");
    expect((err as MendError).message).toMatch(/restore --from-transitions/);
    expect(readJournal(journalDirFor(path)).transitions).toHaveLength(committed);
  });

  it("refuses to write to a new database while a journal holds history it lacks", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await store.submit(spec([{ id: "a" }]));
    await store.close();
    for (const suffix of ["", "-wal", "-shm"]) {
      writeFileSync(`${path}${suffix}`, "");
    }
    const fresh = openSqlite(path, clock);
    await expect(fresh.submit(spec([{ id: "b" }]))).rejects.toThrow(/restore --from-transitions/);
  });

  it("starts a journal with the whole log for a store made before the journal existed", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await workload(store, clock);
    await store.close();
    // What a store from the previous version looks like: no journal, no position.
    const db = new Database(path);
    db.exec("DELETE FROM journal_position");
    db.close();
    const dir = journalDirFor(path);
    rmSync(dir, { recursive: true });
    const reopened = openSqlite(path, clock);
    await reopened.submit(spec([{ id: "later" }]));
    expect(readJournal(dir).transitions.map((t) => [t.seq, t.hash])).toEqual(await logOf(reopened));
  });
});

describe("transition journal after a machine crash", () => {
  it("writes again from the log the transactions whose journal bytes never reached the disk", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await workload(store, clock);
    await store.submit(spec([{ id: "x" }, { id: "y" }]));
    await store.submit(spec([{ id: "z" }]));
    const log = await logOf(store);
    await store.close();
    // What the disk keeps when the database's sync finished and the journal's did not: the
    // preallocated zeros where the last two transactions' lines were.
    const dir = journalDirFor(path);
    const file = join(dir, readdirSync(dir)[0]!);
    const bytes = readFileSync(file);
    const end = bytes.indexOf(0);
    const cut = bytes.lastIndexOf("\tE\n", bytes.lastIndexOf("\tE\n", end - 4) - 1) + 3;
    bytes.fill(0, cut, end);
    writeFileSync(file, bytes);
    expect(readJournal(dir).transitions.length).toBeLessThan(log.length);
    const reopened = openSqlite(path, clock);
    expect(readJournal(dir).transitions.map((t) => [t.seq, t.hash])).toEqual(log);
    await reopened.submit(spec([{ id: "after" }]));
    expect(readJournal(dir).transitions.map((t) => [t.seq, t.hash])).toEqual(await logOf(reopened));
  });
});

describe("a database without the history its journal holds", () => {
  it("says so, naming the command that rebuilds it", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await store.submit(spec([{ id: "a" }]));
    expect(store.journalWarning()).toBeNull();
    await store.close();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
    const fresh = openSqlite(path, clock);
    expect(fresh.journalWarning()).toMatch(/restore --from-transitions/);
  });
});
