import { existsSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { systemClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import type { BackupInfo } from "../src/state/backups.js";
import type { ValidationReport } from "../src/state/validate.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import { FIXTURES, json, runCli, spawnCli } from "./helpers/cli.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const ACTOR = "dana@test";

/** A store in a temp dir with some history, and a runner of CLI commands against it. */
async function cliStore() {
  const dir = tmpDir();
  const path = join(dir, "mend.db");
  const store = openSqlite(path, systemClock);
  await store.submit(spec([{ id: "a" }, { id: "b", deps: ["a"] }]));
  await store.close();
  const mend = (...args: string[]) =>
    runCli(["--store", `sqlite:${path}`, ...args], { env: { MEND_ACTOR: ACTOR } });
  return { dir, path, mend };
}

/** Reads the store in-process, closing it after. */
async function reading<T>(path: string, fn: (store: SqliteStore) => Promise<T>): Promise<T> {
  const store = openSqlite(path, systemClock);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const logOf = (path: string) => reading(path, (s) => s.listTransitions());

describe("mend state backup / backups", () => {
  it("takes a backup, prints its id, path and last seq, and logs who asked", async () => {
    const { dir, path, mend } = await cliStore();
    const plain = await mend("state", "backup", "--reason", "before the upgrade");
    expect(plain.code, plain.stderr).toBe(0);
    const [, id, file, seq] = /^backup (bk_\w+): (\S+) \(log up to seq (\d+), /.exec(plain.stdout)!;
    expect(file).toBe(join(dir, "backups", `${id}.db`));
    expect(Number(seq)).toBe((await logOf(path)).length);
    const info = json<BackupInfo>(await mend("--json", "state", "backup"));
    expect(info).toMatchObject({ lastSeq: Number(seq), reason: "manual" });
    expect(existsSync(info.path)).toBe(true);
    const interventions = await reading(path, (s) => s.listInterventions());
    expect(interventions.map((i) => [i.actor, i.target, i.reason])).toEqual([
      [ACTOR, id, "before the upgrade"],
      [ACTOR, info.id, "manual"],
    ]);
    expect(interventions[0]!.command).toMatch(/^mend .*state backup --reason before the upgrade$/);
  });

  it("lists backups newest first: id, time, last seq, size, reason (--json: an array)", async () => {
    const { mend } = await cliStore();
    expect((await mend("state", "backups")).stdout).toMatch(/no backups yet/);
    expect(json<unknown[]>(await mend("--json", "state", "backups"))).toEqual([]);
    const first = json<BackupInfo>(await mend("--json", "state", "backup", "--reason", "one"));
    const second = json<BackupInfo>(await mend("--json", "state", "backup", "--reason", "two"));
    const listed = json<BackupInfo[]>(await mend("--json", "state", "backups"));
    expect(listed.map((b) => b.id)).toEqual([second.id, first.id]);
    const table = (await mend("state", "backups")).stdout.trim().split("\n");
    expect(table[0]).toMatch(/^ID\s+TIME\s+LAST SEQ\s+SIZE\s+REASON$/);
    expect(table[1]).toMatch(
      new RegExp(
        `^${second.id}\\s+\\d{4}-\\d\\d-\\d\\dT\\S+\\s+${second.lastSeq}\\s+[\\d.]+ KiB\\s+two$`,
      ),
    );
    expect(table).toHaveLength(3);
  });

  it("applies --keep and refuses bad retention values", async () => {
    const { mend } = await cliStore();
    for (let i = 0; i < 3; i++) expect((await mend("state", "backup", "--keep", "2")).code).toBe(0);
    expect(json<unknown[]>(await mend("--json", "state", "backups"))).toHaveLength(2);
    expect((await mend("state", "backup", "--keep", "0")).code).toBe(2);
    const badAge = await mend("state", "backup", "--max-age", "soon");
    expect(badAge.code).toBe(2);
    expect(badAge.stderr).toMatch(/invalid duration "soon"/);
  });
});

describe("mend state restore", () => {
  it("restores from the latest backup or an id; --json reports the state_restored event", async () => {
    const { path, mend } = await cliStore();
    const backup = json<BackupInfo>(await mend("--json", "state", "backup"));
    const kept = await logOf(path);
    await reading(path, (s) => s.submit(spec([{ id: "later" }])));
    const r = await mend(
      "state",
      "restore",
      "--from-backup",
      "latest",
      "--yes",
      "--reason",
      "bad deploy",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`restored ${path} in place from backup ${backup.id}`));
    expect(r.stdout).toMatch(/the store as it was is in backup bk_/);
    expect(await logOf(path)).toEqual(kept);
    const restore = (await reading(path, (s) => s.listInterventions())).at(-1)!;
    expect(restore).toMatchObject({ actor: ACTOR, target: backup.id, reason: "bad deploy" });

    const byPrefix = json<Record<string, unknown>>(
      await mend("--json", "state", "restore", "--from-backup", backup.id.slice(0, 16), "--yes"),
    );
    expect(byPrefix).toMatchObject({
      event: "state_restored",
      severity: "warning",
      mode: "in place",
      backup: { id: backup.id },
    });
  });

  it("bad arguments change nothing: no source (2), unknown id (3, with the known ids), no backups (3), no confirmation (2)", async () => {
    const { dir, path, mend } = await cliStore();
    const before = await logOf(path);
    const none = await mend("state", "restore", "--yes");
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--from-backup latest\|ID/);
    const empty = await mend("state", "restore", "--from-backup", "latest", "--yes");
    expect(empty.code).toBe(3);
    expect(empty.stderr).toMatch(/no backups of this store yet.*mend state backup/);
    expect(existsSync(join(dir, "backups"))).toBe(false);

    const backup = json<BackupInfo>(await mend("--json", "state", "backup"));
    const unknown = await mend("state", "restore", "--from-backup", "bk_nope", "--yes");
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toContain(`no backup "bk_nope"; the newest are ${backup.id}`);
    const asked = await mend("state", "restore", "--from-backup", "latest");
    expect(asked.code).toBe(2);
    expect(asked.stderr).toMatch(/--yes/);
    expect(await logOf(path)).toEqual(before);
    expect(json<unknown[]>(await mend("--json", "state", "backups"))).toHaveLength(1);
  });

  it("refuses while a worker holds a live lease (4), naming it; --force restores", async () => {
    const { path, mend } = await cliStore();
    json<BackupInfo>(await mend("--json", "state", "backup"));
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
    const before = await logOf(path);
    const refused = await mend("state", "restore", "--from-backup", "latest", "--yes");
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(
      /1 task\(s\) are running under live leases held by worker\(s\) w-busy.*--force/,
    );
    expect(await logOf(path)).toEqual(before);
    const forced = await mend("state", "restore", "--from-backup", "latest", "--yes", "--force");
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toMatch(/1 lease\(s\) of worker\(s\) w-busy fenced/);
  });

  it("replaces a database file too damaged to open", async () => {
    const { path, mend } = await cliStore();
    json<BackupInfo>(await mend("--json", "state", "backup"));
    const kept = await logOf(path);
    writeFileSync(path, Buffer.alloc(statSync(path).size, 0xee));
    const r = await mend("state", "restore", "--from-backup", "latest", "--yes");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored .* replaced from backup/);
    expect(r.stdout).toMatch(/restart any process that had the old file open/);
    expect(await logOf(path)).toEqual(kept);
  });
});

describe("mend state validate", () => {
  it("prints each check with ✓ and exits 0 on a sound store", async () => {
    const { mend } = await cliStore();
    const r = await mend("state", "validate");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^✓ integrity: /m);
    expect(r.stdout).toMatch(/^✓ completion-once: /m);
    expect(r.stdout).toMatch(/^✓ holders-capacity: /m);
    expect(r.stdout.trim().split("\n").at(-1)).toBe("valid");
    expect(json<ValidationReport>(await mend("--json", "state", "validate")).ok).toBe(true);
  });

  it("prints each violation with its ids and exits 1", async () => {
    const { path, mend } = await cliStore();
    const db = new Database(path);
    db.prepare("UPDATE transitions SET actor = 'mallory' WHERE seq = 2").run();
    db.close();
    const r = await mend("state", "validate");
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^✗ chain: /m);
    expect(r.stdout).toMatch(/^ {4}record 2 is not part of the chain .*\[seq:2, ws_\w+\/a\]$/m);
    expect(r.stdout).toMatch(/^✓ replay: /m);
    const report = await mend("--json", "state", "validate");
    expect(report.code).toBe(1);
    expect(
      (JSON.parse(report.stdout) as ValidationReport).checks.find((c) => c.name === "chain"),
    ).toMatchObject({ ok: false, violations: [{ ids: ["seq:2", expect.stringMatching(/\/a$/)] }] });
  });

  it("a file too damaged to open: exit 1, saying to restore", async () => {
    const { path, mend } = await cliStore();
    truncateSync(path, 2048);
    const r = await mend("state", "validate");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /is damaged .*mend state restore --from-transitions.*--from-backup latest/,
    );
  });
});

describe("mend worker --backup-interval", () => {
  it("the elected monitor backs the store up while the worker runs; a bad value is usage", async () => {
    const { dir, path } = await cliStore();
    const worker = spawnCli([
      "--store",
      `sqlite:${path}`,
      "worker",
      "--handlers",
      join(FIXTURES, "handlers.mjs"),
      "--backup-interval",
      "200ms",
    ]);
    const listed = await waitFor(
      async () => {
        const r = await runCli(["--store", `sqlite:${path}`, "--json", "state", "backups"]);
        const backups = JSON.parse(r.stdout) as BackupInfo[];
        return backups.length > 0 ? backups : null;
      },
      20_000,
      "an automatic backup",
      100,
    );
    expect(listed[0]).toMatchObject({ reason: "scheduled" });
    expect(listed[0]!.path.startsWith(join(dir, "backups"))).toBe(true);
    worker.child.kill("SIGTERM");
    const bad = await runCli([
      "--store",
      `sqlite:${path}`,
      "worker",
      "--handlers",
      join(FIXTURES, "handlers.mjs"),
      "--backup-interval",
      "often",
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid duration "often"/);
  });
});
