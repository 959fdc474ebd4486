import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock, systemClock } from "../src/engine/clock.js";
import { Monitor } from "../src/engine/Monitor.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import {
  backupFiles,
  DEFAULT_RETENTION,
  expiredBackups,
  listBackupsOf,
  newBackupId,
  ORPHAN_GRACE_MS,
  writeManifest,
} from "../src/state/backups.js";
import { journalDirFor, readJournal } from "../src/state/journal.js";
import { validateStore } from "../src/state/validate.js";
import { GENESIS_HASH } from "../src/store/chain.js";
import { restoreFromBackup } from "../src/store/sqlite/backup.js";
import { SQLITE_MIGRATIONS } from "../src/store/sqlite/migrations.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ClaimedTask, ExchangeRequest } from "../src/store/store.js";
import { spawnCli, waitExit } from "./helpers/cli.js";
import { completionsPerTask, spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const planner = createPlanner({ random: () => 0 });
const LEASE_MS = 5_000;
const HOUR = 3_600_000;
const operator: Actor = { actor: "alice", reason: "testing", command: "mend state restore" };

function request(worker: string, outcomes: ExchangeRequest["outcomes"], claim: number) {
  return { workerId: worker, outcomes, claim, leaseMs: LEASE_MS, handlers: ["work"], planner };
}

async function claimOne(store: SqliteStore, worker: string): Promise<ClaimedTask> {
  const { claimed } = await store.exchange(request(worker, [], 1));
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

async function complete(store: SqliteStore, worker: string, t: ClaimedTask) {
  const { settled } = await store.exchange(
    request(worker, [{ kind: "complete", taskId: t.id, token: t.leaseToken, output: "ok" }], 0),
  );
  return settled[0]!;
}

/** Some history: a workstream, a worker, two tasks run to completion, one left queued. */
async function history(store: SqliteStore, clock: FakeClock): Promise<void> {
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c", deps: ["b"] }]));
  for (let i = 0; i < 2; i++) {
    const t = await claimOne(store, "w1");
    clock.advance(10);
    await complete(store, "w1", t);
  }
}

/** Every record of the log, whole, to compare before and after. */
function logOf(store: SqliteStore) {
  return store.listTransitions();
}

/** Fills a store with about `mb` megabytes (inputs are stored twice: row and record). */
async function fill(store: SqliteStore, mb: number): Promise<void> {
  const perWorkstream = 50;
  const input = 10_000;
  for (let n = 0; n * perWorkstream * input * 2 < mb * 1_000_000; n++) {
    await store.submit(
      spec(
        Array.from({ length: perWorkstream }, (_, i) => ({
          id: `t${i}`,
          input: { blob: `${n}-${i}`.padEnd(input, "x") },
        })),
        { name: `bulk-${n}` },
      ),
    );
  }
}

describe("retention", () => {
  const at = (id: string, hoursAgo: number, now: number) => ({
    id,
    createdAt: now - hoursAgo * HOUR,
  });

  it("keeps the newest maxCount backups", () => {
    const now = new FakeClock().now();
    const backups = ["a", "b", "c", "d"].map((id, i) => at(id, i, now));
    expect(expiredBackups(backups, { maxCount: 2, maxAgeMs: 100 * HOUR }, now)).toEqual(["c", "d"]);
    expect(expiredBackups(backups, DEFAULT_RETENTION, now)).toEqual([]);
  });

  it("deletes backups older than maxAgeMs, but never the newest one", () => {
    const clock = new FakeClock();
    const backups = [at("old", 30, clock.now()), at("day", 23, clock.now())];
    expect(expiredBackups(backups, DEFAULT_RETENTION, clock.now())).toEqual(["old"]);
    clock.advance(2 * HOUR);
    // Both are older than a day now; the newest is kept whatever its age.
    expect(expiredBackups(backups, DEFAULT_RETENTION, clock.now())).toEqual(["old"]);
  });

  it("never deletes a backup it is told to keep", () => {
    const now = new FakeClock().now();
    const backups = [at("new", 0, now), at("restoring", 48, now), at("other", 49, now)];
    expect(expiredBackups(backups, DEFAULT_RETENTION, now, new Set(["restoring"]))).toEqual([
      "other",
    ]);
  });

  it("orders by creation time, not by the order given", () => {
    const now = new FakeClock().now();
    const backups = [at("b", 1, now), at("a", 0, now), at("c", 2, now)];
    expect(expiredBackups(backups, { maxCount: 1, maxAgeMs: HOUR * 10 }, now)).toEqual(["b", "c"]);
  });
});

describe("backup", () => {
  it("copies the whole store, records the last transition the copy holds, lists newest first", async () => {
    const clock = new FakeClock();
    const { dir, store } = tempStore(clock);
    await history(store, clock);
    const first = await store.backup({ reason: "test" });
    const last = (await store.listTransitions({ newestFirst: true, limit: 1 }))[0]!;
    expect(first).toMatchObject({
      path: join(dir, "backups", `${first.id}.db`),
      createdAt: clock.now(),
      lastSeq: last.seq,
      lastHash: last.hash,
      sizeBytes: statSync(first.path).size,
      reason: "test",
    });
    expect(first.id).toMatch(/^bk_[0-9a-z]{18}$/);
    // Published whole: the database file and its manifest, nothing temporary, no WAL beside it.
    expect(readdirSync(join(dir, "backups")).sort()).toEqual([
      `${first.id}.db`,
      `${first.id}.json`,
    ]);

    // The copy is a complete store with the same log.
    const copy = join(dir, "copy.db");
    copyFileSync(first.path, copy);
    const opened = openSqlite(copy, clock);
    expect(await logOf(opened)).toEqual(await logOf(store));
    expect(await opened.replay()).toEqual(await opened.snapshot());

    clock.advance(1000);
    await store.submit(spec([{ id: "later" }]));
    const second = await store.backup({ reason: "again" });
    expect(second.lastSeq).toBeGreaterThan(first.lastSeq);
    expect((await store.listBackups()).map((b) => b.id)).toEqual([second.id, first.id]);
  });

  it("copies in a thread of its own: the store answers while the backup is taken", async () => {
    const { store } = tempStore(new FakeClock());
    await store.submit(spec([{ id: "a" }]));
    let copied = false;
    const backup = store.backup({ reason: "test" }).then((info) => {
      copied = true;
      return info;
    });
    // On the main thread's connection, this read would wait for the whole copy.
    const seq = await store.lastSeq();
    expect(copied).toBe(false);
    expect((await backup).lastSeq).toBe(seq);
  });

  it("is a consistent copy while another connection keeps writing", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await fill(store, 4);
    const writer = openSqlite(path, clock);
    let writing = true;
    let writes = 0;
    const busy = (async () => {
      while (writing) {
        await writer.submit(spec([{ id: "x" }, { id: "y", deps: ["x"] }]));
        writes++;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    })();
    const info = await store.backup({ reason: "busy" });
    writing = false;
    await busy;
    expect(writes).toBeGreaterThan(0);
    const copy = join(dir, "copy.db");
    copyFileSync(info.path, copy);
    const opened = openSqlite(copy, clock);
    expect(await opened.verifyChain()).toMatchObject({ ok: true, checked: info.lastSeq });
    expect(await opened.replay()).toEqual(await opened.snapshot());
  });

  it("is logged as an intervention when a person asks, not when the engine does", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await history(store, clock);
    await store.backup({ reason: "scheduled" });
    expect(await store.listInterventions()).toEqual([]);
    const info = await store.backup({
      reason: "before upgrade",
      actor: "alice",
      command: "mend state backup",
    });
    expect(await store.listInterventions()).toEqual([
      expect.objectContaining({
        actor: "alice",
        command: "mend state backup",
        target: info.id,
        reason: "before upgrade",
        after: { backup: info.id, lastSeq: info.lastSeq },
      }),
    ]);
  });

  it("applies retention after each backup, by count and by age", async () => {
    const clock = new FakeClock();
    const { dir, store } = tempStore(clock);
    await history(store, clock);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await store.backup({ reason: `n${i}`, retention: { maxCount: 2 } })).id);
      clock.advance(1000);
    }
    expect((await store.listBackups()).map((b) => b.id)).toEqual([ids[3], ids[2]]);
    for (const gone of ids.slice(0, 2)) {
      expect(existsSync(join(dir, "backups", `${gone}.db`))).toBe(false);
      expect(existsSync(join(dir, "backups", `${gone}.json`))).toBe(false);
    }
    clock.advance(25 * HOUR);
    const newest = await store.backup({ reason: "a day later" });
    expect((await store.listBackups()).map((b) => b.id)).toEqual([newest.id]);
  });

  it("lists only complete backups of this store, and clears what an interrupted one left", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await history(store, clock);
    const real = await store.backup({ reason: "real" });
    const backups = join(dir, "backups");
    const stale = backupFiles(backups, newBackupId(clock.now() - ORPHAN_GRACE_MS - 1000));
    const recent = backupFiles(backups, newBackupId(clock.now() - 1000));
    writeFileSync(stale.tmpDb, "partial copy");
    writeFileSync(stale.db, "renamed, manifest never written");
    writeFileSync(recent.tmpDb, "another process is still copying");
    writeFileSync(recent.tmpManifest, "{}");
    // A manifest that does not parse, and one of another database in the same directory.
    const odd = backupFiles(backups, newBackupId(clock.now() - 2 * ORPHAN_GRACE_MS));
    writeFileSync(odd.manifest, "{ not json");
    writeFileSync(odd.db, "kept for a person to look at");
    const other = JSON.parse(
      await import("node:fs/promises").then((fs) =>
        fs.readFile(backupFiles(backups, real.id).manifest, "utf8"),
      ),
    ) as Record<string, unknown>;
    const otherId = newBackupId(clock.now() - 5000);
    writeFileSync(
      backupFiles(backups, otherId).manifest,
      JSON.stringify({ ...other, id: otherId, store: "other.db" }),
    );
    copyFileSync(real.path, backupFiles(backups, otherId).db);

    expect((await store.listBackups()).map((b) => b.id)).toEqual([real.id]);
    expect(listBackupsOf(join(dir, "other.db")).map((b) => b.id)).toEqual([otherId]);
    clock.advance(1000);
    const next = await store.backup({ reason: "next" });
    expect(listBackupsOf(path).map((b) => b.id)).toEqual([next.id, real.id]);
    expect(existsSync(stale.tmpDb)).toBe(false);
    expect(existsSync(stale.db)).toBe(false);
    expect(existsSync(recent.tmpDb)).toBe(true);
    expect(existsSync(recent.tmpManifest)).toBe(true);
    expect(existsSync(odd.db)).toBe(true);
    expect(existsSync(backupFiles(backups, otherId).db)).toBe(true);
  });

  it("a process killed mid-backup leaves no listed backup, and the next backup works", async () => {
    const { dir, path, store } = tempStore(systemClock);
    await fill(store, 30);
    await store.close();
    const backups = join(dir, "backups");
    const child = spawnCli(["--store", `sqlite:${path}`, "state", "backup"]);
    const partial = await waitFor(
      () => (existsSync(backups) ? readdirSync(backups).find((f) => f.endsWith(".db.tmp")) : null),
      15_000,
      "the backup's temporary file",
      1,
    );
    child.child.kill("SIGKILL");
    expect((await waitExit(child, 10_000)).signal).toBe("SIGKILL");
    // It left its partial copy behind, and nothing of it is listed.
    const killedId = partial.replace(/\.db\.tmp$/, "");
    expect(readdirSync(backups).some((f) => f.startsWith(killedId))).toBe(true);
    expect(listBackupsOf(path)).toEqual([]);

    const reopened = openSqlite(path, systemClock);
    const info = await reopened.backup({ reason: "after the kill" });
    expect((await reopened.listBackups()).map((b) => b.id)).toEqual([info.id]);
    expect(info.lastSeq).toBe(
      (await reopened.listTransitions({ newestFirst: true, limit: 1 }))[0]!.seq,
    );
    // What the killed backup left is cleared once it is surely abandoned.
    await reopened.close();
    const later = openSqlite(path, new FakeClock(Date.now() + ORPHAN_GRACE_MS + HOUR));
    await later.backup({ reason: "an hour later" });
    expect(readdirSync(backups).filter((f) => f.startsWith(killedId))).toEqual([]);
  });
});

describe("automatic backups (Monitor)", () => {
  it("backs up on the interval when the log advanced, and not otherwise", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const monitor = new Monitor({ store, clock, sweepMs: 1000, backupIntervalMs: 60_000 });
    // An empty log: nothing to back up.
    expect((await monitor.tick())?.backup).toBeNull();
    await store.submit(spec([{ id: "a" }]));
    const first = (await monitor.tick())?.backup;
    expect(first?.reason).toBe("scheduled");
    await store.submit(spec([{ id: "b" }]));
    clock.advance(59_000);
    expect((await monitor.tick())?.backup).toBeNull();
    clock.advance(1000);
    const second = (await monitor.tick())?.backup;
    expect(second?.lastSeq).toBeGreaterThan(first!.lastSeq);
    // Nothing happened since: no backup however long it waits.
    clock.advance(600_000);
    expect((await monitor.tick())?.backup).toBeNull();
    expect((await store.listBackups()).map((b) => b.id)).toEqual([second!.id, first!.id]);
    await monitor.stop();
  });

  it("takes none when disabled, and a failed backup does not stop the sweep", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    await store.submit(spec([{ id: "a" }]));
    const off = new Monitor({ store, clock, backupIntervalMs: 0, id: "off" });
    expect((await off.tick())?.backup).toBeNull();
    expect(await store.listBackups()).toEqual([]);
    await off.stop();

    const failing = Object.assign(Object.create(store) as SqliteStore, {
      backup: () => Promise.reject(new Error("disk full")),
    });
    const monitor = new Monitor({ store: failing, clock, id: "failing" });
    expect(await monitor.tick()).toMatchObject({ requeued: [], workers: [], backup: null });
    await monitor.stop();
  });
});

describe("restore from a backup, in place", () => {
  it("brings back exactly the backup's log and state, after backing up the store as it was", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    const backup = await store.backup({ reason: "good" });
    const kept = await logOf(store);
    clock.advance(1000);
    const t = await claimOne(store, "w1");
    await complete(store, "w1", t);
    await store.submit(spec([{ id: "z" }]));
    const before = await logOf(store);

    const result = await restoreFromBackup(path, backup.id, { who: operator, clock });
    expect(result).toMatchObject({
      mode: "in place",
      damage: null,
      previousSeq: before.at(-1)!.seq,
    });
    expect(await logOf(store)).toEqual(kept);
    expect(await store.replay()).toEqual(await store.snapshot());
    expect((await validateStore(store, clock)).ok).toBe(true);
    // The store as it was is itself a backup now, and the restore is an intervention.
    expect(result.safetyBackup).toMatchObject({
      reason: "before restore",
      lastSeq: before.at(-1)!.seq,
    });
    expect((await store.listInterventions()).at(-1)).toMatchObject({
      actor: "alice",
      target: backup.id,
      before: { lastSeq: before.at(-1)!.seq },
      after: {
        restoredFrom: backup.id,
        lastSeq: backup.lastSeq,
        mode: "in place",
        safetyBackup: result.safetyBackup!.id,
      },
    });
    // And the way back works too.
    await restoreFromBackup(path, result.safetyBackup!.id, { who: operator, clock });
    expect(await logOf(store)).toEqual(before);
  });

  it("keeps the journal in step: writing goes on, and the abandoned records are set aside", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    const backup = await store.backup({ reason: "good" });
    for (const id of ["x", "y", "z"]) await store.submit(spec([{ id }]));
    const abandoned = (await logOf(store)).slice(backup.lastSeq);
    const result = await restoreFromBackup(path, "latest", { who: operator, clock });
    expect(result.journalRestarted).toBe(false);
    await store.submit(spec([{ id: "after" }]));
    const journal = readJournal(journalDirFor(path));
    expect(journal.transitions.map((t) => [t.seq, t.hash])).toEqual(
      (await logOf(store)).map((t) => [t.seq, t.hash]),
    );
    expect(abandoned.length).toBeGreaterThan(2);
    const aside = readdirSync(join(path, "..", "journal")).filter((d) => d.includes(".abandoned-"));
    expect(aside).toHaveLength(1);
  });

  it("a backup from before the journal existed: the journal starts afresh from the restored log", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    const backup = await store.backup({ reason: "old" });
    const db = new Database(backup.path);
    db.exec("DELETE FROM journal_position");
    db.close();
    await store.submit(spec([{ id: "x" }]));
    const result = await restoreFromBackup(path, "latest", { who: operator, clock });
    expect(result.journalRestarted).toBe(true);
    // Processes that had the store open are restarted: their journal writer held the old segment.
    await store.close();
    const restarted = openSqlite(path, clock);
    await restarted.submit(spec([{ id: "after" }]));
    expect(readJournal(journalDirFor(path)).transitions.map((t) => [t.seq, t.hash])).toEqual(
      (await logOf(restarted)).map((t) => [t.seq, t.hash]),
    );
  });

  it("a backup of an older schema version is brought up to date before it is restored", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await history(store, clock);
    const id = newBackupId(clock.now());
    const files = backupFiles(join(dir, "backups"), id);
    mkdirSync(join(dir, "backups"), { recursive: true });
    const old = new Database(files.db);
    for (const m of SQLITE_MIGRATIONS.slice(0, -1)) old.exec(m);
    old.pragma(`user_version = ${SQLITE_MIGRATIONS.length - 1}`);
    old.close();
    const info = {
      id,
      path: files.db,
      createdAt: clock.now(),
      lastSeq: 0,
      lastHash: GENESIS_HASH,
      sizeBytes: statSync(files.db).size,
      reason: "old version",
    };
    writeManifest(path, info, null);
    await store.close();
    await restoreFromBackup(path, id, { who: operator, clock });
    const restored = openSqlite(path, clock);
    expect(await logOf(restored)).toEqual([]);
    expect(await restored.listWorkstreams()).toEqual([]);
    expect(readdirSync(join(dir, "backups")).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    await restored.submit(spec([{ id: "fresh" }]));
    expect((await validateStore(restored, clock)).ok).toBe(true);
  });

  it("refuses while workers hold live leases, naming them, unless forced", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    await store.backup({ reason: "good" });
    await store.registerWorker({ id: "w2", host: "h", pid: 2, concurrency: 1, handlers: ["work"] });
    await claimOne(store, "w2");
    const before = await logOf(store);
    const err = await restoreFromBackup(path, "latest", { who: operator, clock }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MendError);
    expect(err).toMatchObject({ code: "refused", context: { workers: ["w2"] } });
    expect((err as MendError).message).toMatch(/1 task\(s\).*w2.*--force/);
    expect(await logOf(store)).toEqual(before);
    expect(await store.listBackups()).toHaveLength(1);
    // An expired lease does not count: its worker is gone as far as the store knows.
    clock.advance(LEASE_MS + 1);
    await expect(
      restoreFromBackup(path, "latest", { who: operator, clock }),
    ).resolves.toMatchObject({ fencedLeases: [] });
  });

  it("fences a worker whose claim the restore undid: its lease is lost, its outcome refused, the task runs again", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    await store.registerWorker({ id: "w2", host: "h", pid: 2, concurrency: 1, handlers: ["work"] });
    await store.backup({ reason: "before the claim" });
    const held = await claimOne(store, "w1");
    const result = await restoreFromBackup(path, "latest", { who: operator, clock, force: true });
    expect(result.fencedLeases).toEqual([
      { taskId: held.id, workerId: "w1", expiresAt: clock.now() + LEASE_MS },
    ]);
    expect((await store.getTask(held.id))?.status).toBe("queued");

    expect(
      await store.heartbeat("w1", "busy", [{ taskId: held.id, token: held.leaseToken }], LEASE_MS),
    ).toEqual({
      lost: [held.id],
      control: null,
    });
    expect(await complete(store, "w1", held)).toMatchObject({ applied: false });
    const again = await claimOne(store, "w2");
    expect(again).toMatchObject({ id: held.id, attempts: held.attempts });
    expect(await complete(store, "w2", again)).toMatchObject({
      applied: true,
      status: "completed",
    });
    expect(completionsPerTask(await logOf(store)).get(held.id)).toBe(1);
    expect((await validateStore(store, clock)).ok).toBe(true);
  });

  it("leaves a live worker the lease the backup already gave it, with its current expiry", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    const held = await claimOne(store, "w1");
    await store.backup({ reason: "while it runs" });
    await store.submit(spec([{ id: "later" }]));
    clock.advance(LEASE_MS - 1000);
    await store.heartbeat("w1", "busy", [{ taskId: held.id, token: held.leaseToken }], LEASE_MS);
    const renewed = (await store.getTask(held.id))!.leaseExpiresAt;
    clock.advance(2000);
    // The backup's copy of the lease has expired by now; the store's has not.
    await restoreFromBackup(path, "latest", { who: operator, clock, force: true });
    expect(await store.getTask(held.id)).toMatchObject({
      status: "running",
      leaseToken: held.leaseToken,
      leaseExpiresAt: renewed,
    });
    expect(await store.sweepExpiredLeases(planner)).toEqual([]);
    expect(await complete(store, "w1", held)).toMatchObject({ applied: true, status: "completed" });
  });

  it("a process killed mid-restore leaves the old state or the backup's, never a mix", async () => {
    const { path, store } = tempStore(systemClock);
    await fill(store, 10);
    const backup = await store.backup({ reason: "half" });
    const atBackup = (await logOf(store)).map((t) => [t.seq, t.hash]);
    await fill(store, 20);
    const full = (await logOf(store)).map((t) => [t.seq, t.hash]);
    await store.close();

    const outcomes: string[] = [];
    for (const killAtWalBytes of [1_000_000, Infinity]) {
      const child = spawnCli([
        "--store",
        `sqlite:${path}`,
        "state",
        "restore",
        "--from-backup",
        backup.id,
        "--yes",
      ]);
      if (killAtWalBytes !== Infinity) {
        await waitFor(
          () =>
            (statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0) > killAtWalBytes ||
            child.child.exitCode !== null,
          30_000,
          "the restore to write",
          1,
        );
        child.child.kill("SIGKILL");
      }
      await waitExit(child, 30_000);
      const reopened = openSqlite(path, systemClock);
      const log = (await logOf(reopened)).map((t) => [t.seq, t.hash]);
      const outcome =
        JSON.stringify(log) === JSON.stringify(full)
          ? "old"
          : JSON.stringify(log) === JSON.stringify(atBackup)
            ? "backup"
            : "mix";
      outcomes.push(outcome);
      const report = await validateStore(reopened, systemClock);
      expect(report.checks.filter((c) => !c.ok)).toEqual([]);
      await reopened.close();
    }
    // Killed while the copy was being written: the old state. Left to finish: the backup's.
    expect(outcomes).toEqual(["old", "backup"]);
  });
});
