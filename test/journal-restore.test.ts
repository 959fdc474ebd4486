import { createHash } from "node:crypto";
import {
  copyFileSync,
  cpSync,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock, systemClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { Worker } from "../src/engine/Worker.js";
import { MendError } from "../src/errors.js";
import { isRestoreRecord } from "../src/state/backups.js";
import { journalDirFor, listSegments, readJournal, segmentName } from "../src/state/journal.js";
import { validateStore } from "../src/state/validate.js";
import { restoreFromJournal } from "../src/store/sqlite/backup.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ClaimedTask, ExchangeRequest } from "../src/store/store.js";
import { spawnCli, waitExit } from "./helpers/cli.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tempStore, tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const planner = createPlanner({ random: () => 0 });
const LEASE_MS = 5_000;
const operator: Actor = {
  actor: "alice",
  reason: "testing",
  command: "mend state restore --from-transitions",
};

function request(worker: string, outcomes: ExchangeRequest["outcomes"], claim: number) {
  return { workerId: worker, outcomes, claim, leaseMs: LEASE_MS, handlers: ["work"], planner };
}

/** The log as `[seq, hash]` pairs: what a restore must bring back exactly. */
async function logOf(store: SqliteStore): Promise<[number, string][]> {
  return (await store.listTransitions()).map((t) => [t.seq, t.hash]);
}

/** Whether two logs hold the same records (compared whole, without printing 20,000 of them). */
function same(a: unknown[], b: unknown[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Every file under the store's `journal/` directory with a digest of its bytes. */
function journalFiles(dbPath: string): Record<string, string> {
  const root = join(dbPath, "..", "journal");
  const out: Record<string, string> = {};
  if (!existsSync(root)) return out;
  for (const name of readdirSync(root, { recursive: true, encoding: "utf8" }).sort()) {
    const file = join(root, name);
    if (statSync(file).isDirectory()) continue;
    out[name] = createHash("sha256").update(readFileSync(file)).digest("hex");
  }
  return out;
}

/** The `.abandoned-…` directories beside the store's journal. */
function abandonedDirs(dbPath: string): string[] {
  const root = join(dbPath, "..", "journal");
  return readdirSync(root)
    .filter((d) => d.startsWith("mend.abandoned-"))
    .map((d) => join(root, d));
}

/**
 * Reads what a restore set aside as a journal of its own: each `<segment>.after-<offset>` piece
 * holds whole transactions from the seq after the restore point, so it reads back as a segment.
 */
function readAbandoned(dir: string, firstSeq: number) {
  const copy = tmpDir("mend-abandoned-");
  for (const [i, name] of readdirSync(dir).sort().entries()) {
    const target = i === 0 ? segmentName(firstSeq) : name.replace(/\.after-\d+$/, "");
    copyFileSync(join(dir, name), join(copy, target));
  }
  return readJournal(copy);
}

/**
 * Changes one character inside the data of the transition `seq` in the journal, keeping the line
 * readable: the first letter of its status value changes case (`"status":"queued"` → `"Queued"`).
 */
function flipInData(dbPath: string, seq: number): void {
  const dir = journalDirFor(dbPath);
  for (const segment of listSegments(dir)) {
    const file = join(dir, segment);
    const bytes = readFileSync(file);
    const text = bytes.toString("latin1");
    const marker = `T\t[${seq},`;
    const line = text.startsWith(marker) ? 0 : text.indexOf(`\n${marker}`) + 1;
    if (line === 0 && !text.startsWith(marker)) continue; // not in this segment
    const data = text.indexOf("]\t", line) + 2;
    const status = text.indexOf('"status":"', data) + '"status":"'.length;
    expect(status).toBeLessThan(text.indexOf("\t", data));
    bytes[status] = bytes[status]! ^ 0x20;
    writeFileSync(file, bytes);
    return;
  }
  throw new Error(`seq ${seq} is not in the journal`);
}

/** A number generator with a fixed seed, so the "random" damage is the same on every run. */
function noise(length: number, seed = 0x2545f491): Buffer {
  const out = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Three workstreams, each submitted in its own transaction a second apart, two tasks of the first
 * run to completion, one cancelled by a person. Returns the last seq of each transaction in order.
 */
async function history(store: SqliteStore, clock: FakeClock): Promise<number[]> {
  const ends: number[] = [];
  const last = async () => ends.push((await store.listTransitions()).at(-1)!.seq);
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  await last();
  const first = await store.submit(
    spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c", deps: ["b"] }]),
  );
  await last();
  for (let i = 0; i < 2; i++) {
    clock.advance(1000);
    const { claimed } = await store.exchange(request("w1", [], 1));
    await last();
    clock.advance(1000);
    const t = claimed[0]!;
    await store.exchange(
      request("w1", [{ kind: "complete", taskId: t.id, token: t.leaseToken, output: i }], 0),
    );
    await last();
  }
  clock.advance(1000);
  await store.cancelTask(first.taskIds[2]!, operator);
  await last();
  for (const name of ["second", "third"]) {
    clock.advance(1000);
    await store.submit(spec([{ id: "x" }, { id: "y" }, { id: "z" }], { name }));
    await last();
  }
  return ends;
}

describe("restore from the journal: a destroyed database", () => {
  it("a deleted database comes back with every transition, the interventions, and state that replays", async () => {
    const { path, store } = tempStore(systemClock);
    // A real worker runs one workstream: completions, a permanent failure, dependencies.
    const ran = await store.submit(
      spec([
        { id: "a" },
        { id: "b", deps: ["a"] },
        { id: "c", deps: ["a"] },
        { id: "d", deps: ["b", "c"] },
        { id: "bad", handler: "broken", critical: false, maxAttempts: 1 },
      ]),
    );
    const manual = await store.submit(
      spec(
        [
          { id: "m1", handler: "manual" },
          { id: "m2", handler: "manual", deps: ["m1"] },
          { id: "m3", handler: "manual" },
        ],
        { name: "manual" },
      ),
    );
    const worker = new Worker({
      store,
      heartbeatMs: 100,
      pollMs: 20,
      handlers: {
        work: (ctx) => ({ done: ctx.taskId }),
        broken: () => {
          throw new TypeError("cannot read the input");
        },
      },
    });
    await worker.start();
    await waitFor(
      async () =>
        (await store.listTasks(ran.workstreamId)).every((t) =>
          ["completed", "failed"].includes(t.status),
        ),
      10_000,
      "the worker to finish the workstream",
    );
    await worker.stop(0);
    // A person steps in on the workstream no worker can run.
    await store.skipTask(manual.taskIds[0]!, operator);
    await store.cancelTask(manual.taskIds[2]!, operator);
    // A backup taken before the accident. Validate does not hold backups taken before a restore
    // against the store, so whether the restored log still holds it is checked here directly.
    const backup = await store.backup({ reason: "before the accident" });

    const log = await logOf(store);
    const interventions = await store.listInterventions();
    const snapshot = await store.snapshot();
    expect(interventions).toHaveLength(2);
    expect(Object.values(snapshot.tasks).map((t) => t.status)).toEqual(
      expect.arrayContaining(["completed", "failed", "skipped", "cancelled", "queued"]),
    );
    await store.close();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });

    const result = await restoreFromJournal(path, { who: operator, clock: systemClock });
    expect(result).toMatchObject({
      mode: "replaced",
      damage: expect.stringMatching(/does not exist/),
      previousSeq: null,
      safetyBackup: null,
      journalRestarted: false,
      rebuilt: { transitions: log.length, interventions: 2, lastSeq: log.at(-1)![0] },
    });
    const restored = openSqlite(path, systemClock);
    expect(await logOf(restored)).toEqual(log);
    const after = await restored.listInterventions();
    expect(after.slice(0, -1)).toEqual(interventions);
    expect(after.at(-1)).toMatchObject({
      actor: "alice",
      after: { restoredFrom: `journal@${log.at(-1)![0]}`, mode: "replaced" },
    });
    expect(await restored.snapshot()).toEqual(snapshot);
    expect(await restored.snapshot()).toEqual(await restored.replay());
    // The backup taken before the deletion is history the restored log still holds, unchanged.
    expect(log).toContainEqual([backup.lastSeq, backup.lastHash]);
    const report = await validateStore(restored, systemClock);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    // The journal goes on from where it was: it holds the log and the restore's intervention.
    await restored.submit(spec([{ id: "later" }], { name: "later" }));
    const journal = readJournal(journalDirFor(path));
    expect(journal.transitions.map((t) => [t.seq, t.hash])).toEqual(await logOf(restored));
    expect(journal.interventions.map((i) => i.id)).toEqual(
      (await restored.listInterventions()).map((i) => i.id),
    );
  });

  it.each([
    ["cut to half its size", (path: string) => truncateSync(path, statSync(path).size / 2)],
    [
      "16 KiB of random bytes written over its middle",
      (path: string) => {
        const bytes = readFileSync(path);
        noise(16 * 1024).copy(bytes, Math.floor(bytes.length / 2 / 4096) * 4096);
        writeFileSync(path, bytes);
      },
    ],
  ])("a database file %s is replaced, with every committed transition", async (_label, damage) => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    // Enough rows that the middle of the file is tables and indexes, not the header.
    for (let n = 0; n < 4; n++) {
      await store.submit(
        spec(
          Array.from({ length: 40 }, (_, i) => ({ id: `t${i}`, input: "x".repeat(500) })),
          { name: `bulk-${n}` },
        ),
      );
    }
    const log = await logOf(store);
    const snapshot = await store.snapshot();
    await store.close();
    expect(existsSync(`${path}-wal`)).toBe(false);
    damage(path);

    const result = await restoreFromJournal(path, { who: operator, clock });
    expect(result.mode).toBe("replaced");
    expect(result.damage).toBeTruthy();
    const restored = openSqlite(path, clock);
    expect(await logOf(restored)).toEqual(log);
    expect(await restored.snapshot()).toEqual(snapshot);
    expect((await validateStore(restored, clock)).checks.filter((c) => !c.ok)).toEqual([]);
    expect(existsSync(`${path}.rebuild.tmp`)).toBe(false);
  });
});

describe("restore from the journal to a point in time", () => {
  it("toSeq: exactly the transactions up to the one holding it; the rest set aside, writing goes on", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    const ends = await history(store, clock);
    await store.backup({ reason: "holds the whole log" });
    const full = await store.listTransitions();
    const interventions = await store.listInterventions();
    // A seq in the middle of the second workstream's submission: its whole transaction is kept.
    const secondSubmit = ends.at(-2)!;
    const toSeq = secondSubmit - 2;
    const before = readFileSync(join(journalDirFor(path), listSegments(journalDirFor(path))[0]!));

    const result = await restoreFromJournal(path, {
      who: operator,
      clock,
      limit: { toSeq },
    });
    expect(result).toMatchObject({
      mode: "in place",
      previousSeq: full.at(-1)!.seq,
      safetyBackup: { reason: "before restore", lastSeq: full.at(-1)!.seq },
      rebuilt: { lastSeq: secondSubmit },
    });
    const kept = full.filter((t) => t.seq <= secondSubmit);
    expect(await store.listTransitions()).toEqual(kept);
    // The cancellation came before the point and stays; then the restore itself.
    const after = await store.listInterventions();
    expect(after.slice(0, -1)).toEqual(interventions);
    expect(isRestoreRecord(after.at(-1)!.after)).toBe(true);
    expect(await store.snapshot()).toEqual(await store.replay());

    // The records after the point are moved aside whole, not deleted.
    const [aside, ...more] = abandonedDirs(path);
    expect(more).toEqual([]);
    const abandoned = readAbandoned(aside!, secondSubmit + 1);
    expect(abandoned.transitions.map((t) => [t.seq, t.hash])).toEqual(
      full.filter((t) => t.seq > secondSubmit).map((t) => [t.seq, t.hash]),
    );
    const pieces = readdirSync(aside!);
    const offset = Number(/\.after-(\d+)$/.exec(pieces[0]!)![1]);
    const end = before.indexOf(0);
    expect(
      Buffer.concat([before.subarray(0, offset), readFileSync(join(aside!, pieces[0]!))]),
    ).toEqual(before.subarray(0, end));

    // New writes continue the chain, in the database and in the journal.
    const next = await store.submit(spec([{ id: "new" }], { name: "after the restore" }));
    const log = await store.listTransitions();
    expect(log.at(-1)!.entityId).toBe(next.taskIds[0]);
    expect(log.at(-1)!.seq).toBe(secondSubmit + 2);
    expect(await store.verifyChain()).toMatchObject({ ok: true, checked: log.length });
    expect(readJournal(journalDirFor(path)).transitions.map((t) => [t.seq, t.hash])).toEqual(
      log.map((t) => [t.seq, t.hash]),
    );
    // The backup holding the abandoned history predates the restore: validate does not count it.
    expect((await validateStore(store, clock)).checks.filter((c) => !c.ok)).toEqual([]);
  });

  it("toTime: every transaction at or before the time, none after", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    const ends = await history(store, clock);
    const full = await store.listTransitions();
    // Between the cancellation (a second after the last completion) and the next submission.
    const cancelled = full.find((t) => t.seq === ends[6])!;
    const nextAt = full.find((t) => t.seq === ends[6]! + 1)!.at;
    expect(nextAt - cancelled.at).toBe(1000);
    const result = await restoreFromJournal(path, {
      who: operator,
      clock,
      limit: { toTime: cancelled.at + 500 },
    });
    expect(result.rebuilt.lastSeq).toBe(ends[6]);
    expect(await store.listTransitions()).toEqual(full.filter((t) => t.seq <= ends[6]!));
    expect(await store.snapshot()).toEqual(await store.replay());
    await store.submit(spec([{ id: "new" }], { name: "after the restore" }));
    expect((await store.verifyChain()).ok).toBe(true);
    expect(abandonedDirs(path)).toHaveLength(1);
  });

  it("a point past the journal's end, or no journal at all, changes nothing", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    const log = await logOf(store);
    const snapshot = await store.snapshot();
    const files = journalFiles(path);
    const past = await restoreFromJournal(path, {
      who: operator,
      clock,
      limit: { toSeq: log.at(-1)![0] + 1 },
    }).catch((e: unknown) => e);
    expect(past).toBeInstanceOf(MendError);
    expect(past).toMatchObject({ code: "invalid_argument" });
    expect((past as MendError).message).toMatch(/past it \(nothing was changed\)/);
    expect(await logOf(store)).toEqual(log);
    expect(await store.snapshot()).toEqual(snapshot);
    expect(journalFiles(path)).toEqual(files);
    expect(await store.listBackups()).toEqual([]);
    expect(existsSync(`${path}.rebuild.tmp`)).toBe(false);

    rmSync(journalDirFor(path), { recursive: true });
    const none = await restoreFromJournal(path, { who: operator, clock }).catch((e: unknown) => e);
    expect(none).toMatchObject({ code: "not_found" });
    expect((none as MendError).message).toMatch(/no transition journal/);
    expect(await logOf(store)).toEqual(log);
    expect(await store.snapshot()).toEqual(snapshot);
  });
});

describe("restore from a damaged journal", () => {
  /** Three submissions: seqs 1-3, 4-5 and 6-7, one transaction each. */
  async function threeSubmissions() {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
    await store.submit(spec([{ id: "x" }], { name: "second" }));
    await store.submit(spec([{ id: "y" }], { name: "third" }));
    const log = await logOf(store);
    expect(log.map(([seq]) => seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    return { clock, path, store, log };
  }

  /** Restores the whole journal, expecting the chain to break at `seq`; returns the suggested seq. */
  async function brokenAt(path: string, clock: FakeClock, seq: number): Promise<number> {
    const err = await restoreFromJournal(path, { who: operator, clock }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MendError);
    expect(err).toMatchObject({ code: "store_corrupt", context: { seq } });
    const message = (err as MendError).message;
    expect(message).toMatch(new RegExp(`chain breaks at seq ${seq}\\b`));
    return Number(/--to-seq (\d+)/.exec(message)![1]);
  }

  it("a flipped byte: refused naming the seq, nothing changed; --to-seq the one before works", async () => {
    const { clock, path, store, log } = await threeSubmissions();
    const snapshot = await store.snapshot();
    flipInData(path, 4);
    const files = journalFiles(path);
    expect(await brokenAt(path, clock, 4)).toBe(3);
    expect(await logOf(store)).toEqual(log);
    expect(await store.snapshot()).toEqual(snapshot);
    expect(journalFiles(path)).toEqual(files);
    expect(await store.listBackups()).toEqual([]);

    await restoreFromJournal(path, { who: operator, clock, limit: { toSeq: 3 } });
    expect(await logOf(store)).toEqual(log.slice(0, 3));
    expect((await validateStore(store, clock)).checks.filter((c) => !c.ok)).toEqual([]);
  });

  it("a flipped byte inside a transaction: the --to-seq it suggests restores the transactions before", async () => {
    const { clock, path, store, log } = await threeSubmissions();
    // Seq 5 is the second record of the transaction 4-5: the last sound transaction ends at 3.
    flipInData(path, 5);
    const suggested = await brokenAt(path, clock, 5);
    // --to-seq 4 would include seq 5 (a restore stops after the whole transaction holding it).
    expect(suggested, "the suggested --to-seq must end before the broken transaction").toBe(3);
    await restoreFromJournal(path, { who: operator, clock, limit: { toSeq: suggested } });
    expect(await logOf(store)).toEqual(log.slice(0, 3));
  });
});

describe("restore from the journal under live leases", () => {
  it("is refused while a worker holds a live lease, naming it; forced, the worker keeps its lease", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    await history(store, clock);
    await store.registerWorker({ id: "w2", host: "h", pid: 2, concurrency: 1, handlers: ["work"] });
    const { claimed } = await store.exchange({ ...request("w2", [], 1), leaseMs: 600_000 });
    const held: ClaimedTask = claimed[0]!;
    const log = await logOf(store);
    const files = journalFiles(path);
    const err = await restoreFromJournal(path, { who: operator, clock }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MendError);
    expect(err).toMatchObject({ code: "refused", context: { workers: ["w2"] } });
    expect((err as MendError).message).toMatch(/1 task\(s\).*w2.*--force/);
    expect(await logOf(store)).toEqual(log);
    expect(journalFiles(path)).toEqual(files);
    expect(await store.listBackups()).toEqual([]);

    const result = await restoreFromJournal(path, { who: operator, clock, force: true });
    expect(result.fencedLeases).toEqual([
      { taskId: held.id, workerId: "w2", expiresAt: clock.now() + 600_000 },
    ]);
    expect(await logOf(store)).toEqual(log);
    // The journal holds the claim, so the restored state still grants it, with its expiry.
    expect(await store.getTask(held.id)).toMatchObject({
      status: "running",
      leaseToken: held.leaseToken,
      leaseWorker: "w2",
      leaseExpiresAt: clock.now() + 600_000,
    });
    const { settled } = await store.exchange(
      request("w2", [{ kind: "complete", taskId: held.id, token: held.leaseToken, output: 1 }], 0),
    );
    expect(settled[0]).toMatchObject({ applied: true, status: "completed" });
  });
});

describe("a restore from the journal killed mid-way", () => {
  it("leaves the old state or the restored one, never a mix; validate passes; the restore runs again", async () => {
    const dir = tmpDir();
    const pristine = join(dir, "pristine");
    const work = join(dir, "store");
    const path = join(work, "mend.db");
    const store = openSqlite(join(pristine, "mend.db"), systemClock);
    // 20 submissions of 1,000 tasks: 20,020 transitions, most of a second to rebuild.
    for (let n = 0; n < 20; n++) {
      await store.submit(
        spec(
          Array.from({ length: 1000 }, (_, i) => ({ id: `t${i}` })),
          { name: `bulk-${n}` },
        ),
      );
    }
    const full = await logOf(store);
    expect(full).toHaveLength(20_020);
    await store.close();
    // Restoring to a point, so the old log and the restored one differ.
    const toSeq = 10_000;
    const restored = full.filter(([seq]) => seq <= 10_010);
    const tmp = `${path}.rebuild.tmp`;

    /** Runs the restore; kills it once `when` holds, or lets it finish. Returns what it left. */
    async function restore(label: string, when: (() => boolean) | null): Promise<string> {
      const child = spawnCli([
        "--store",
        `sqlite:${path}`,
        "state",
        "restore",
        "--from-transitions",
        "--to-seq",
        String(toSeq),
        "--yes",
      ]);
      if (when) {
        await waitFor(() => when() || child.child.exitCode !== null, 30_000, label, 1);
        child.child.kill("SIGKILL");
        expect((await waitExit(child, 10_000)).signal, label).toBe("SIGKILL");
      } else {
        expect((await waitExit(child, 30_000)).code, child.stderr()).toBe(0);
      }
      const reopened = openSqlite(path, systemClock);
      try {
        const log = await logOf(reopened);
        const outcome = same(log, full) ? "old" : same(log, restored) ? "restored" : "mix";
        expect(outcome, label).not.toBe("mix");
        // The journal still holds exactly the store's log, so a later restore loses nothing.
        const journal = readJournal(journalDirFor(path)).transitions.map((t) => [t.seq, t.hash]);
        expect
          .soft(
            same(journal, log),
            `${label}: the store is ${outcome} (log up to seq ${log.at(-1)![0]}) but its journal ends at seq ${journal.at(-1)?.[0]}`,
          )
          .toBe(true);
        const report = await validateStore(reopened, systemClock);
        expect(
          report.checks.filter((c) => !c.ok),
          label,
        ).toEqual([]);
        // A half-built file is never taken for the store, nor listed as a backup.
        expect((await reopened.listBackups()).every((b) => !b.path.endsWith(".tmp"))).toBe(true);
        return outcome;
      } finally {
        await reopened.close();
      }
    }

    const kills: [string, () => boolean][] = [
      ["while rebuilding", () => (statSync(tmp, { throwIfNoEntry: false })?.size ?? 0) > 0],
      [
        "while the in-place copy commits",
        () => (statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0) > 1_000_000,
      ],
    ];
    for (const [label, when] of kills) {
      rmSync(work, { recursive: true, force: true });
      cpSync(pristine, work, { recursive: true });
      expect(await restore(label, when)).toMatch(/^(old|restored)$/);
    }
    // Run again over what the last kill left: it finishes, and leaves no temporary file.
    expect(await restore("again", null)).toBe("restored");
    expect(existsSync(tmp)).toBe(false);
    expect(abandonedDirs(path).length).toBeGreaterThan(0);
  });
});
