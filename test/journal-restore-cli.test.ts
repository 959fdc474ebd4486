import { createHash } from "node:crypto";
import {
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { systemClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import type { InterventionRecord } from "../src/model/records.js";
import type { BackupInfo } from "../src/state/backups.js";
import { journalDirFor, listSegments, readJournal } from "../src/state/journal.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import { json, runCli } from "./helpers/cli.js";
import { complete, fail, settle, start } from "./helpers/exchange.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tmpDir } from "./helpers/tmp.js";
import { sleep } from "./helpers/wait.js";

const ACTOR = "erin@test";

/** A temp dir for a store, and a runner of CLI commands against it. */
function cliStore() {
  const dir = tmpDir();
  const path = join(dir, "mend.db");
  const mend = (...args: string[]) =>
    runCli(["--store", `sqlite:${path}`, ...args], { env: { MEND_ACTOR: ACTOR } });
  return { dir, path, mend };
}

/** Works on the store in-process, closing it after. */
async function reading<T>(path: string, fn: (store: SqliteStore) => Promise<T>): Promise<T> {
  const store = openSqlite(path, systemClock);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const logOf = (path: string) =>
  reading(path, async (s) =>
    (await s.listTransitions()).map((t): [number, string] => [t.seq, t.hash]),
  );

/** Every file under the store's `journal/` directory with a digest of its bytes. */
function journalFiles(path: string): Record<string, string> {
  const root = join(path, "..", "journal");
  const out: Record<string, string> = {};
  if (!existsSync(root)) return out;
  for (const name of readdirSync(root, { recursive: true, encoding: "utf8" }).sort()) {
    const file = join(root, name);
    if (statSync(file).isDirectory()) continue;
    out[name] = createHash("sha256").update(readFileSync(file)).digest("hex");
  }
  return out;
}

/** Everything a restore could change: the log, the state, the journal's files, the backups. */
async function everything(path: string) {
  return {
    ...(await reading(path, async (s) => ({
      log: await s.listTransitions(),
      snapshot: await s.snapshot(),
      interventions: await s.listInterventions(),
    }))),
    journal: journalFiles(path),
    backups: existsSync(join(path, "..", "backups"))
      ? readdirSync(join(path, "..", "backups"))
      : [],
  };
}

/** The `.abandoned-…` directories beside the store's journal. */
function abandonedDirs(path: string): string[] {
  const root = join(path, "..", "journal");
  return readdirSync(root)
    .filter((d) => d.startsWith("mend.abandoned-"))
    .map((d) => join(root, d));
}

/** Changes the case of one letter in the data of transition `seq` in the journal (its status). */
function flipInData(path: string, seq: number): void {
  const dir = journalDirFor(path);
  const file = join(dir, listSegments(dir).at(-1)!);
  const bytes = readFileSync(file);
  const text = bytes.toString("latin1");
  const line = text.indexOf(`\nT\t[${seq},`) + 1;
  expect(line).toBeGreaterThan(0);
  const data = text.indexOf("]\t", line) + 2;
  const status = text.indexOf('"status":"', data) + '"status":"'.length;
  expect(status).toBeLessThan(text.indexOf("\t", data));
  bytes[status] = bytes[status]! ^ 0x20;
  writeFileSync(file, bytes);
}

/**
 * A real workload, written in this process: a diamond run by a worker through `exchange` (claims,
 * completions, a permanent failure), a second workstream where a person skips a task and cancels
 * another. Each transaction is a few milliseconds after the one before. Returns
 * the last seq of each transaction, in order.
 */
async function workload(path: string): Promise<number[]> {
  return reading(path, async (store) => {
    const ends: number[] = [];
    const done = async () => {
      ends.push((await store.listTransitions({ newestFirst: true, limit: 1 }))[0]!.seq);
      await sleep(5);
    };
    const operator = { actor: ACTOR, reason: "not needed", command: "mend skip" };
    await store.submit(
      spec(
        [
          { id: "a" },
          { id: "b", deps: ["a"] },
          { id: "c", deps: ["a"] },
          { id: "d", deps: ["b", "c"] },
        ],
        { name: "diamond" },
      ),
    );
    await done();
    const [a] = await start(store, ["a"]);
    await done();
    await settle(store, [complete(a!)]);
    await done();
    const [b, c] = await start(store, ["b", "c"]);
    await done();
    await settle(store, [complete(b!), fail(c!)]);
    await done();
    const manual = await store.submit(
      spec([{ id: "m1" }, { id: "m2", deps: ["m1"] }, { id: "m3" }], { name: "manual" }),
    );
    await done();
    await store.skipTask(manual.taskIds[0]!, operator);
    await done();
    await store.cancelTask(manual.taskIds[2]!, operator);
    await done();
    return ends;
  });
}

describe("mend state restore --from-transitions", () => {
  it("brings back a deleted database: the same log, the interventions, state that replays; validate exits 0", async () => {
    const { path, mend } = cliStore();
    await workload(path);
    // A backup taken before the accident, by a person (so logged as an intervention too).
    const backup = json<BackupInfo>(await mend("--json", "state", "backup", "--reason", "nightly"));
    const before = await everything(path);
    expect(before.interventions).toHaveLength(3);
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });

    const r = await mend("state", "restore", "--from-transitions", "--yes", "--reason", "disk");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `rebuilt from the journal: ${before.log.length} transitions and 3 interventions`,
    );
    expect(r.stdout).toMatch(
      new RegExp(
        `restored ${path} replaced from the journal .*log up to seq ${before.log.at(-1)!.seq}`,
      ),
    );
    expect(r.stdout).toMatch(/replaced because: .*does not exist/);

    expect(await logOf(path)).toEqual(before.log.map((t) => [t.seq, t.hash]));
    const interventions = json<InterventionRecord[]>(await mend("--json", "interventions"));
    expect(interventions.slice(0, -1)).toEqual(before.interventions);
    expect(interventions.at(-1)).toMatchObject({
      actor: ACTOR,
      reason: "disk",
      after: { restoredFrom: `journal@${before.log.at(-1)!.seq}`, mode: "replaced" },
    });
    await reading(path, async (s) => {
      expect(await s.snapshot()).toEqual(before.snapshot);
      expect(await s.snapshot()).toEqual(await s.replay());
    });
    // The backup from before the deletion still lists, and the restored log holds its last record.
    expect(json<BackupInfo[]>(await mend("--json", "state", "backups"))).toEqual([backup]);
    expect(before.log.find((t) => t.seq === backup.lastSeq)?.hash).toBe(backup.lastHash);
    const valid = await mend("state", "validate");
    expect(valid.code, valid.stdout).toBe(0);
    expect(valid.stdout).toMatch(/^✓ backups: /m);
    expect(valid.stdout).toMatch(/^✓ replay: /m);
  });

  it("replaces a database file cut to half its size, with every committed transition", async () => {
    const { path, mend } = cliStore();
    await workload(path);
    const log = await logOf(path);
    truncateSync(path, statSync(path).size / 2);
    const r = await mend("state", "restore", "--from-transitions", "--yes");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored .* replaced from the journal/);
    expect(r.stdout).toMatch(/replaced because: .*restart any process that had the old file open/);
    expect(await logOf(path)).toEqual(log);
    expect((await mend("state", "validate")).code).toBe(0);
  });

  it("--to-seq: the transactions up to the one holding it; the rest set aside; new writes continue the chain", async () => {
    const { path, mend } = cliStore();
    const ends = await workload(path);
    json<BackupInfo>(await mend("--json", "state", "backup"));
    const full = await logOf(path);
    const segment = join(journalDirFor(path), listSegments(journalDirFor(path))[0]!);
    const journalBefore = readFileSync(segment);
    // A seq inside the second workstream's submission (one transaction of four records).
    const end = ends[5]!;
    const r = await mend("state", "restore", "--from-transitions", "--to-seq", `${end - 2}`, "-y");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`in place from the journal .*log up to seq ${end}\\b`));
    expect(r.stdout).toMatch(new RegExp(`the store's log was at seq ${full.at(-1)![0]}`));
    expect(r.stdout).toMatch(/the store as it was is in backup bk_/);
    expect(await logOf(path)).toEqual(full.filter(([seq]) => seq <= end));

    // Set aside, byte for byte: what the journal held after the point is in .abandoned-….
    const [aside, ...more] = abandonedDirs(path);
    expect(more).toEqual([]);
    const [piece, ...others] = readdirSync(aside!);
    expect(others).toEqual([]);
    const offset = Number(/\.after-(\d+)$/.exec(piece!)![1]);
    expect(readFileSync(join(aside!, piece!))).toEqual(
      journalBefore.subarray(offset, journalBefore.indexOf(0)),
    );
    expect(readFileSync(join(aside!, piece!)).toString("utf8")).toContain(
      `T\t[${full.at(-1)![0]},`,
    );

    await reading(path, async (s) => {
      await s.submit(spec([{ id: "new" }], { name: "after the restore" }));
      const log = await s.listTransitions();
      expect(log.at(-1)!.seq).toBe(end + 2);
      expect(await s.verifyChain()).toMatchObject({ ok: true, checked: end + 2 });
      expect(readJournal(journalDirFor(path)).transitions.map((t) => [t.seq, t.hash])).toEqual(
        log.map((t) => [t.seq, t.hash]),
      );
    });
    // The backup holding the abandoned history was taken before the restore: not held against it.
    const valid = await mend("state", "validate");
    expect(valid.code, valid.stdout).toBe(0);
  });

  it("--to-time: the transactions at or before a time between two of them", async () => {
    const { path, mend } = cliStore();
    const ends = await workload(path);
    const full = await reading(path, (s) => s.listTransitions());
    // Between the first completion (a's) and the next claim.
    const last = full.find((t) => t.seq === ends[2])!.at;
    const next = full.find((t) => t.seq === ends[2]! + 1)!.at;
    expect(next).toBeGreaterThan(last + 1);
    const at = new Date(Math.floor((last + next) / 2)).toISOString();
    const r = await mend("state", "restore", "--from-transitions", "--to-time", at, "--yes");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`log up to seq ${ends[2]}\\b`));
    expect(await logOf(path)).toEqual(
      full.filter((t) => t.seq <= ends[2]!).map((t) => [t.seq, t.hash]),
    );
    expect(abandonedDirs(path)).toHaveLength(1);
    await reading(path, async (s) => {
      await s.submit(spec([{ id: "new" }], { name: "after the restore" }));
      expect((await s.verifyChain()).ok).toBe(true);
    });
    expect((await mend("state", "validate")).code).toBe(0);
  });

  it("bad arguments change nothing: a time in the future or not a time, a seq past the end, two sources (2); no journal (3)", async () => {
    const { path, mend } = cliStore();
    await workload(path);
    json<BackupInfo>(await mend("--json", "state", "backup"));
    const before = await everything(path);
    const last = before.log.at(-1)!.seq;
    const cases: [string[], number, RegExp][] = [
      [["--from-transitions", "--to-time", "2999-01-01T00:00:00Z"], 2, /is in the future/],
      [["--from-transitions", "--to-time", "garbage"], 2, /"garbage" is not a time/],
      [["--from-transitions", "--to-seq", `${last + 1}`], 2, /past it \(nothing was changed\)/],
      [["--from-backup", "latest", "--from-transitions"], 2, /one of: --from-backup/],
      [["--from-backup", "latest", "--to-seq", "3"], 2, /go with --from-transitions/],
      [["--from-transitions", "--to-seq", "2", "--to-time", "2020-01-01T00:00:00Z"], 2, /not both/],
    ];
    for (const [args, code, message] of cases) {
      const r = await mend("state", "restore", ...args, "--yes");
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toMatch(message);
    }
    const unconfirmed = await mend("state", "restore", "--from-transitions");
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toMatch(/--yes/);
    expect(await everything(path)).toEqual(before);
    expect(existsSync(`${path}.rebuild.tmp`)).toBe(false);

    rmSync(journalDirFor(path), { recursive: true });
    const none = await mend("state", "restore", "--from-transitions", "--yes");
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/no transition journal at .*restore a backup instead/);
    const after = await everything(path);
    expect({ ...after, journal: before.journal }).toEqual(before);
  });

  it("a flipped byte in the journal: exit 1 naming the seq and --to-seq before it, nothing changed; that works", async () => {
    const { path, mend } = cliStore();
    const ends = await workload(path);
    // The first record of the second workstream's submission.
    const broken = ends[4]! + 1;
    flipInData(path, broken);
    const before = await everything(path);
    const r = await mend("state", "restore", "--from-transitions", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`chain breaks at seq ${broken}\\b`));
    expect(r.stderr).toContain(`--to-seq ${broken - 1}`);
    expect(await everything(path)).toEqual(before);
    const json1 = await mend("--json", "state", "restore", "--from-transitions", "--yes");
    expect(json1.code).toBe(1);
    expect(JSON.parse(json1.stdout)).toMatchObject({
      error: { code: "store_corrupt", context: { seq: broken } },
    });

    const cut = await mend(
      "state",
      "restore",
      "--from-transitions",
      "--to-seq",
      `${broken - 1}`,
      "-y",
    );
    expect(cut.code, cut.stderr).toBe(0);
    expect(await logOf(path)).toEqual(
      before.log.filter((t) => t.seq < broken).map((t) => [t.seq, t.hash]),
    );
    expect((await mend("state", "validate")).code).toBe(0);
  });

  it("refuses while a worker holds a live lease (4), naming it and --force; --force restores", async () => {
    const { path, mend } = cliStore();
    await workload(path);
    await reading(path, (s) =>
      s.exchange({
        workerId: "w-busy",
        outcomes: [],
        claim: 1,
        leaseMs: 600_000,
        handlers: ["work"],
        planner: createPlanner(),
      }),
    );
    const before = await everything(path);
    const refused = await mend("state", "restore", "--from-transitions", "--yes");
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(
      /1 task\(s\) are running under live leases held by worker\(s\) w-busy.*--force/,
    );
    expect(await everything(path)).toEqual(before);
    const forced = await mend("state", "restore", "--from-transitions", "--yes", "--force");
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toMatch(/1 lease\(s\) of worker\(s\) w-busy fenced/);
    expect(await logOf(path)).toEqual(before.log.map((t) => [t.seq, t.hash]));
  });
});

describe("mend state repair", () => {
  /** A store with two tasks running under long leases, one queued; then its rows damaged. */
  async function damaged() {
    const store = cliStore();
    const ids = await reading(store.path, async (s) => {
      const { workstreamId, taskIds } = await s.submit(
        spec([{ id: "a" }, { id: "b" }, { id: "c" }]),
      );
      await s.exchange({
        workerId: "w1",
        outcomes: [],
        claim: 2,
        leaseMs: 600_000,
        handlers: ["work"],
        planner: createPlanner({ random: () => 0 }),
      });
      return { workstreamId, taskIds };
    });
    return { ...store, ...ids };
  }

  it("--dry-run lists what it would fix and changes nothing; --yes fixes it after a backup and logs it", async () => {
    const { path, mend, workstreamId, taskIds } = await damaged();
    const db = new Database(path);
    // Behind the log's back: a queued task marked done, a running task's lease gone, a workstream failed.
    db.prepare("UPDATE tasks SET status = 'completed', output = '42' WHERE id = ?").run(taskIds[2]);
    db.prepare("UPDATE tasks SET lease_expires_at = NULL WHERE id = ?").run(taskIds[1]);
    db.prepare("UPDATE workstreams SET status = 'failed' WHERE id = ?").run(workstreamId);
    db.close();
    expect((await mend("state", "validate")).code).toBe(1);
    const before = await everything(path);

    const dry = await mend("state", "repair", "--dry-run");
    expect(dry.code, dry.stderr + dry.stdout).toBe(0);
    expect(dry.stdout).toContain(`would rewrite task ${taskIds[2]} from the log (output, status)`);
    expect(dry.stdout).toContain(`would rewrite workstream ${workstreamId} from the log (status)`);
    expect(dry.stdout).toContain(
      `would hand ${taskIds[1]} to its retry policy: running without a live lease`,
    );
    expect(dry.stdout).not.toMatch(/needs a person/);
    expect(await everything(path)).toEqual(before);

    const r = await mend("state", "repair", "--yes", "--reason", "rows edited by hand");
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [, backupId] = /^backup (bk_\w+) taken first$/m.exec(r.stdout)!;
    expect(r.stdout).toContain(`did rewrite task ${taskIds[2]} from the log (output, status)`);
    expect(r.stdout).toContain(`did hand ${taskIds[1]} to its retry policy`);
    expect(json<BackupInfo[]>(await mend("--json", "state", "backups"))).toEqual([
      expect.objectContaining({ id: backupId, reason: "before repair" }),
    ]);
    const interventions = json<InterventionRecord[]>(await mend("--json", "interventions"));
    expect(interventions).toEqual([
      expect.objectContaining({
        actor: ACTOR,
        target: "store",
        reason: "rows edited by hand",
        command: expect.stringMatching(/state repair --yes/),
      }),
    ]);
    const valid = await mend("state", "validate");
    expect(valid.code, valid.stdout).toBe(0);
    await reading(path, async (s) => {
      expect((await s.getTask(taskIds[2]!))!.status).toBe("queued");
      expect((await s.getTask(taskIds[1]!))!.status).toBe("queued");
      expect((await s.getTask(taskIds[0]!))!.status).toBe("running");
    });
  });

  it("with a broken hash chain: exit 1, nothing changed, and it says to restore", async () => {
    const { path, mend } = await damaged();
    const db = new Database(path);
    db.prepare("UPDATE transitions SET data = replace(data, 'work', 'WORK') WHERE seq = 2").run();
    db.close();
    const before = await everything(path);
    const r = await mend("state", "repair", "--yes");
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^needs a person — chain:\n {4}record 2 is not part of the chain/m);
    expect(r.stdout).toMatch(
      /^needs a person — restore:\n.*mend state restore --from-transitions/m,
    );
    expect(r.stdout).not.toMatch(/^did /m);
    expect(await everything(path)).toEqual(before);
    expect(json<unknown[]>(await mend("--json", "state", "backups"))).toEqual([]);
  });
});
