import { closeSync, openSync, rmSync, statSync, truncateSync, writeSync } from "node:fs";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import { type ValidationReport, validateStore } from "../src/state/validate.js";
import { damagedStoreError, restoreFromBackup } from "../src/store/sqlite/backup.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ClaimedTask, Outcome } from "../src/store/store.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });
const operator: Actor = { actor: "alice", reason: "damage", command: "mend state restore" };

async function exchange(store: SqliteStore, outcomes: Outcome[], claim: number) {
  return store.exchange({
    workerId: "w1",
    outcomes,
    claim,
    leaseMs: 5_000,
    handlers: ["work"],
    planner,
  });
}

function completion(t: ClaimedTask): Outcome {
  return { kind: "complete", taskId: t.id, token: t.leaseToken, output: { done: t.key } };
}

/** A store with a chain of three tasks, the first completed and the second running. */
async function running(clock = new FakeClock()) {
  const t = tempStore(clock);
  await t.store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  const { workstreamId } = await t.store.submit(
    spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c", deps: ["b"] }]),
  );
  const [a] = (await exchange(t.store, [], 1)).claimed;
  clock.advance(10);
  const [b] = (await exchange(t.store, [completion(a!)], 1)).claimed;
  return { ...t, clock, workstreamId, a: a!, b: b! };
}

/** Changes the file through a separate connection, as a bad disk or a careless person would. */
function tamper(path: string, sql: string, ...args: unknown[]): void {
  const db = new Database(path);
  try {
    expect(db.prepare(sql).run(...args).changes).toBeGreaterThan(0);
  } finally {
    db.close();
  }
}

function failing(report: ValidationReport): Record<string, string[][]> {
  return Object.fromEntries(
    report.checks.filter((c) => !c.ok).map((c) => [c.name, c.violations.map((v) => v.ids)]),
  );
}

describe("validateStore", () => {
  it("passes a sound store, and names what it cannot check yet", async () => {
    const { store, clock } = await running();
    await store.backup({ reason: "test" });
    const report = await validateStore(store, clock);
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => c.name)).toEqual([
      "integrity",
      "chain",
      "backups",
      "replay",
      "leases",
      "dependencies",
      "cycles",
      "terminal-holds-nothing",
      "completion-once",
      "holders-capacity",
    ]);
  });

  it("passes after a varied history: failures, retries, a non-critical failure, skip, operator retry, cancel", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 9, handlers: ["work"] });
    await store.submit(
      spec([
        { id: "soft", critical: false, maxAttempts: 1 },
        { id: "after-soft", deps: ["soft"] },
        { id: "skipped" },
        { id: "after-skip", deps: ["skipped"] },
        { id: "flaky" },
        { id: "doomed", deps: ["flaky"] },
      ]),
    );
    const fail = (t: ClaimedTask, recoverable: boolean): Outcome => ({
      kind: "fail",
      taskId: t.id,
      token: t.leaseToken,
      failure: { category: recoverable ? "network" : "logic", recoverable, message: "x" },
    });
    const person: Actor = { actor: "bob", reason: "test", command: "mend test" };
    const ws = (await store.listWorkstreams())[0]!.id;
    const id = (key: string) => `${ws}/${key}`;
    const byKey = (ts: ClaimedTask[], key: string) => ts.find((t) => t.key === key)!;
    await store.skipTask(id("skipped"), person);
    const first = (await exchange(store, [], 9)).claimed;
    expect(first.map((t) => t.key).sort()).toEqual(["after-skip", "flaky", "soft"]);
    const second = (
      await exchange(
        store,
        [
          fail(byKey(first, "soft"), false),
          fail(byKey(first, "flaky"), true),
          completion(byKey(first, "after-skip")),
        ],
        9,
      )
    ).claimed;
    expect(second.map((t) => t.key)).toEqual(["after-soft"]);
    clock.advance(1000);
    const third = (await exchange(store, second.map(completion), 9)).claimed;
    expect(third.map((t) => t.key)).toEqual(["flaky"]);
    await exchange(store, third.map(completion), 0);
    await store.cancelTask(id("doomed"), person);
    await store.retryTask(id("doomed"), {}, person);
    await store.retryTask(id("skipped"), {}, person);
    const last = (await exchange(store, [], 9)).claimed;
    expect(last.map((t) => t.key).sort()).toEqual(["doomed", "skipped"]);
    await exchange(store, last.map(completion), 0);
    const statuses = Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t.status]));
    expect(statuses).toEqual({
      soft: "failed",
      "after-soft": "completed",
      skipped: "completed",
      "after-skip": "completed",
      flaky: "completed",
      doomed: "completed",
    });
    const report = await validateStore(store, clock);
    expect(failing(report)).toEqual({});
  });

  it("reports a changed record (chain) and a changed row (replay) with their ids", async () => {
    const { store, path, clock, a } = await running();
    const created = (await store.listTransitions({ entityId: a.id }))[0]!;
    tamper(
      path,
      "UPDATE transitions SET data = replace(data, '\"priority\":0', '\"priority\":1') WHERE seq = ?",
      created.seq,
    );
    tamper(path, "UPDATE tasks SET attempts = 7 WHERE id = ?", a.id);
    const report = await validateStore(store, clock);
    expect(report.ok).toBe(false);
    expect(failing(report)).toEqual({
      chain: [[`seq:${created.seq}`, a.id]],
      replay: [[a.id], [a.id]],
    });
    const replay = report.checks.find((c) => c.name === "replay")!;
    expect(replay.violations.map((v) => v.message).sort()).toEqual([
      `task ${a.id}: attempts is 7 in the state, 1 by replay`,
      `task ${a.id}: priority is 0 in the state, 1 by replay`,
    ]);
  });

  it("reports a running task whose lease the reaper missed, and one without a lease", async () => {
    const { store, path, clock, b } = await running();
    clock.advance(5_000 + 10_001);
    const report = await validateStore(store, clock);
    expect(failing(report)).toEqual({ leases: [[b.id, "w1"]] });
    expect(report.checks.find((c) => c.name === "leases")!.violations[0]!.message).toMatch(
      /expired 10 s ago and was not reaped/,
    );
    tamper(path, "UPDATE tasks SET lease_worker = NULL WHERE id = ?", b.id);
    const again = await validateStore(store, clock);
    expect(failing(again).leases).toEqual([[b.id]]);
  });

  it("reports a terminal task that still holds a lease, and a dependency cycle", async () => {
    const { store, path, clock, a, workstreamId } = await running();
    tamper(path, "UPDATE tasks SET lease_worker = 'w9', lease_token = 3 WHERE id = ?", a.id);
    tamper(path, `UPDATE tasks SET deps = '["c"]' WHERE id = ?`, a.id);
    const report = await validateStore(store, clock);
    const found = failing(report);
    expect(found["terminal-holds-nothing"]).toEqual([[a.id, "w9"]]);
    expect(found.cycles).toEqual([["a", "c", "b"].map((k) => `${workstreamId}/${k}`)]);
    expect(report.checks.find((c) => c.name === "cycles")!.violations[0]!.message).toMatch(
      /a → c → b → a/,
    );
  });

  it("reports a task that started before its dependency was done, from the log", async () => {
    const { store, clock, workstreamId } = await running();
    const c = `${workstreamId}/c`;
    // Forged through the write path itself, so chain and replay still hold.
    await store.write(async (tx) => {
      for (const [from, to, event] of [
        ["pending", "queued", "task_ready"],
        ["queued", "running", "task_started"],
      ] as const) {
        await tx.transition({
          kind: "task",
          id: c,
          from,
          to,
          patch: {},
          event,
          actor: "engine",
          workstreamId,
        });
      }
    });
    const report = await validateStore(store, clock);
    const deps = report.checks.find((c) => c.name === "dependencies")!;
    expect(deps.ok).toBe(false);
    expect(deps.violations).toEqual([
      {
        message: expect.stringMatching(
          /started \(record \d+\) while its dependency .*\/b was running/,
        ),
        ids: [c, `${workstreamId}/b`, expect.stringMatching(/^seq:\d+$/)],
      },
    ]);
  });

  it("reports a completion recorded twice", async () => {
    const { store, path, clock, b } = await running();
    await exchange(store, [completion(b)], 0);
    tamper(path, "UPDATE tasks SET status = 'running' WHERE id = ?", b.id);
    await store.write((tx) =>
      tx.transition({
        kind: "task",
        id: b.id,
        from: "running",
        to: "completed",
        patch: {},
        event: "task_completed",
        actor: "worker:w1",
        workstreamId: b.workstreamId,
      }),
    );
    const found = failing(await validateStore(store, clock));
    expect(found["completion-once"]).toEqual([[b.id, expect.stringMatching(/^seq:\d+$/)]]);
  });

  it("reports each check that cannot run, and runs the others", async () => {
    const { store, clock } = await running();
    const broken = Object.assign(Object.create(store) as SqliteStore, {
      verifyChain: () => Promise.reject(new Error("disk I/O error")),
    });
    const report = await validateStore(broken, clock);
    expect(failing(report)).toEqual({ chain: [[]] });
    expect(report.checks.find((c) => c.name === "chain")!.violations[0]!.message).toBe(
      "could not run: disk I/O error",
    );
  });
});

/**
 * Real damage to real files. Each case: a store with history, a backup, more history; the damage;
 * `validate` reports it (or opening fails with a typed error saying to restore); then a restore
 * brings back every transition up to the backup's last seq.
 */
describe("damage, found and repaired", () => {
  async function damaged(damage: (path: string) => void) {
    const { store, path, clock } = await running();
    const backup = await store.backup({ reason: "good" });
    const kept = await store.listTransitions();
    clock.advance(1000);
    await store.submit(spec([{ id: "later" }]));
    await store.close();
    damage(path);
    return { path, clock, backup, kept };
  }

  /** Opens and validates the store; an open that fails must be the typed "restore it" error. */
  async function validateAt(path: string, clock: FakeClock): Promise<ValidationReport | MendError> {
    let store: SqliteStore | null = null;
    try {
      store = new SqliteStore(path, { clock });
      return await validateStore(store, clock);
    } catch (err) {
      const typed = damagedStoreError(err, path);
      expect(typed, String(err)).not.toBeNull();
      return typed!;
    } finally {
      await store?.close();
    }
  }

  async function expectRestored(path: string, clock: FakeClock, backupId: string, kept: unknown) {
    // Forced: the store's second task is still running under its lease.
    const result = await restoreFromBackup(path, "latest", { who: operator, clock, force: true });
    expect(result.backup.id).toBe(backupId);
    const store = openSqlite(path, clock);
    expect(await store.listTransitions()).toEqual(kept);
    expect((await validateStore(store, clock)).ok).toBe(true);
    return result;
  }

  function overwrite(path: string, offset: number, bytes: Buffer): void {
    const fd = openSync(path, "r+");
    try {
      writeSync(fd, bytes, 0, bytes.length, offset);
    } finally {
      closeSync(fd);
    }
  }

  /** Either the typed error on opening, or `validate` failing its integrity check. */
  function expectFound(found: ValidationReport | MendError): void {
    if (found instanceof MendError) {
      expect(found).toMatchObject({ code: "store_corrupt" });
      expect(found.message).toMatch(/restore --from-transitions.*--from-backup/);
    } else {
      expect(found.ok).toBe(false);
      expect(failing(found)).toHaveProperty("integrity");
    }
  }

  it("a truncated database file", async () => {
    const { path, clock, backup, kept } = await damaged((p) =>
      truncateSync(p, Math.floor(statSync(p).size / 2)),
    );
    expectFound(await validateAt(path, clock));
    const result = await expectRestored(path, clock, backup.id, kept);
    expect(result).toMatchObject({ mode: "replaced", damage: expect.any(String) });
  });

  it("pages in the middle overwritten with garbage", async () => {
    const { path, clock, backup, kept } = await damaged((p) => {
      // The pages where the log and the tasks start: in use, wherever they fall in the file.
      const db = new Database(p, { readonly: true });
      const roots = db
        .prepare("SELECT rootpage FROM sqlite_schema WHERE name IN ('transitions', 'tasks')")
        .all() as { rootpage: number }[];
      const pageSize = db.pragma("page_size", { simple: true }) as number;
      db.close();
      const garbage = Buffer.alloc(pageSize);
      for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 7919 + 13) % 251;
      for (const { rootpage } of roots) overwrite(p, (rootpage - 1) * pageSize, garbage);
    });
    expectFound(await validateAt(path, clock));
    const result = await expectRestored(path, clock, backup.id, kept);
    expect(result.mode).toBe("replaced");
  });

  it("a deleted database file", async () => {
    const { path, clock, backup, kept } = await damaged((p) => {
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${p}${suffix}`, { force: true });
    });
    // Opening makes an empty store: only the backups show what was lost.
    const found = await validateAt(path, clock);
    expect(found).not.toBeInstanceOf(MendError);
    expect(failing(found as ValidationReport)).toEqual({
      backups: [[backup.id, `seq:${backup.lastSeq}`]],
    });
    await expectRestored(path, clock, backup.id, kept);
  });

  it("a byte flipped in a transition's data, the file still sound", async () => {
    const { path, clock, backup, kept } = await damaged((p) => {
      const db = new Database(p);
      const row = db.prepare("SELECT seq, data FROM transitions WHERE seq = 3").get() as {
        seq: number;
        data: string;
      };
      const i = row.data.indexOf('"priority":0') + '"priority":'.length;
      const flipped = `${row.data.slice(0, i)}1${row.data.slice(i + 1)}`;
      db.prepare("UPDATE transitions SET data = ? WHERE seq = ?").run(flipped, row.seq);
      db.close();
    });
    const found = (await validateAt(path, clock)) as ValidationReport;
    expect(found.ok).toBe(false);
    expect(failing(found).chain).toEqual([["seq:3", kept[2]!.entityId]]);
    const result = await expectRestored(path, clock, backup.id, kept);
    // The store opened and passed its quick check: restored in place, the damaged one kept.
    expect(result.mode).toBe("in place");
    expect(result.safetyBackup?.reason).toBe("before restore");
  });
});
