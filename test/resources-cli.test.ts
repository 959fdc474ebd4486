/**
 * `mend resources`, `mend resources set-limit|mark`, the resources in `mend status` and
 * `mend describe`, and `mend worker` running a handlers module's resource health checks.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { validateDefinition } from "../src/model/definition.js";
import type { InterventionRecord, ResourceRecord } from "../src/model/records.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import type { ResourceListing } from "../src/cli/commands/resources.js";
import { type CliResult, FIXTURES, json, runCli, spawnCli, waitExit } from "./helpers/cli.js";
import { planner } from "./helpers/recovery.js";
import { openSqlite, tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const ACTOR = "erin@test";

function ok(r: CliResult): string {
  expect(r.code, `stderr: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Claims up to `n` tasks for worker `w1`, under leases that outlive the test. */
async function claim(store: Store, n: number) {
  const { claimed } = await store.exchange({
    workerId: "w1",
    outcomes: [],
    claim: n,
    leaseMs: 600_000,
    handlers: ["work"],
    planner,
  });
  return claimed;
}

/**
 * A store where `a` holds git_repo_write (one holder) and `b` waits for it, and `c` holds api-a,
 * its first choice of api-a and api-b.
 */
async function repo() {
  const path = join(tmpDir(), "mend.db");
  const store = openSqlite(path, new FakeClock(Date.now()));
  const { workstreamId } = await store.submit(
    validateDefinition({
      name: "repo",
      resources: { git_repo_write: { maxHolders: 1 } },
      tasks: [
        { id: "a", handler: "work", resources: ["git_repo_write"], priority: 2 },
        { id: "b", handler: "work", resources: ["git_repo_write"], priority: 1 },
        { id: "c", handler: "work", resources: [{ oneOf: ["api-a", "api-b"] }] },
      ],
    }),
  );
  expect((await claim(store, 3)).map((t) => t.key).sort()).toEqual(["a", "c"]);
  await store.close();
  const mend = (...args: string[]) =>
    runCli(["--store", `sqlite:${path}`, ...args], { env: { MEND_ACTOR: ACTOR } });
  return { mend, path, workstreamId };
}

describe("mend resources", () => {
  it("lists each resource's status, holders, waiting tasks and who holds it; status and describe show them", async () => {
    const { mend, workstreamId } = await repo();
    const [table, listed, status, statusJson, described, help] = await Promise.all([
      mend("resources"),
      mend("--json", "resources"),
      mend("status", "repo"),
      mend("--json", "status", "repo"),
      mend("describe", "repo/c"),
      mend("resources", "--help"),
    ]);
    const text = ok(table);
    expect(text).toMatch(/ID\s+STATUS\s+HOLDERS\s+WAITING\s+HELD BY\s+REASON/);
    expect(text).toMatch(/api-a\s+available\s+1\/1\s+0\s+\S+\/c\s+-/);
    expect(text).toMatch(/api-b\s+available\s+0\/1\s+0\s+-\s+-/);
    expect(text).toMatch(/git_repo_write\s+available\s+1\/1\s+1\s+\S+\/a\s+-/);
    const rows = json<ResourceListing[]>(listed);
    expect(rows.map((r) => [r.id, r.holders, r.maxHolders, r.waiting, r.heldBy])).toEqual([
      ["api-a", 1, 1, 0, [`${workstreamId}/c`]],
      ["api-b", 0, 1, 0, []],
      ["git_repo_write", 1, 1, 1, [`${workstreamId}/a`]],
    ]);

    // The waiting task says what it waits for; the full resource is listed for people.
    const shown = ok(status);
    expect(shown).toMatch(
      /b\s+work\s+queued\s+0\/3\s+waiting for resource git_repo_write \(1\/1 held\)/,
    );
    expect(shown).toContain("resources out of service or full (mend resources):");
    expect(shown).toMatch(/git_repo_write\s+available\s+1\/1\s+1\s+-/);
    expect(json<{ blockedResources: unknown[] }>(statusJson).blockedResources).toEqual([
      {
        id: "git_repo_write",
        status: "available",
        holders: 1,
        maxHolders: 1,
        waiting: 1,
        reason: null,
      },
    ]);
    expect(ok(described)).toMatch(
      /4\s+concurrency\s+workers\s+.*; holds one of api-a \(at most 1 holder, available\), api-b \(at most 1 holder, available\) while it runs/,
    );
    expect(ok(help)).toContain("HOLDERS  running tasks holding it / its limit");
  });

  it("set-limit and mark change a resource, each logged as an intervention; bad input exits 2, an unknown resource 3, no change 4", async () => {
    const { mend, path } = await repo();
    expect(
      ok(
        await mend(
          "resources",
          "set-limit",
          "git_repo_write",
          "--max-holders",
          "2",
          "--reason",
          "two clones",
        ),
      ),
    ).toBe(
      "git_repo_write: at most 2 holders (was 1); 1 holds it now; 1 waiting task may start now\n",
    );
    const store = openSqlite(path, new FakeClock(Date.now()));
    expect((await claim(store, 3)).map((t) => t.key)).toEqual(["b"]);
    await store.close();
    // Lowered below its holders: they keep their holds, and the table says so.
    expect(ok(await mend("resources", "set-limit", "git_repo_write", "--max-holders", "1"))).toBe(
      "git_repo_write: at most 1 holder (was 2); 2 hold it now. They keep their holds; no task takes a new one until its holders drop below the limit\n",
    );
    const listed = ok(await mend("resources"));
    expect(listed).toMatch(/git_repo_write\s+available\s+2\/1\s+0\s+\S+\/a, \S+\/b/);
    expect(listed).toContain("over their limit: git_repo_write (the limit was lowered;");

    expect(
      ok(await mend("resources", "mark", "api-a", "--unavailable", "--reason", "provider outage")),
    ).toBe(
      "api-a: now unavailable (provider outage); tasks that need it wait, or take an alternative their definition allows; the task holding it keeps its hold until it ends\n",
    );
    expect(ok(await mend("resources"))).toMatch(
      /api-a\s+unavailable\s+1\/1\s+0\s+\S+\/c\s+provider outage/,
    );
    expect(ok(await mend("resources", "set-limit", "new-pool", "--max-holders", "3"))).toBe(
      "created resource new-pool (no task names it yet) with at most 3 holders\n",
    );

    const refused = await Promise.all([
      mend("resources", "set-limit", "gpu", "--max-holders", "0"),
      mend("resources", "set-limit", "gpu", "--max-holders", "2000000"),
      mend("resources", "set-limit", "bad name", "--max-holders", "1"),
      mend("resources", "mark", "api-a", "--reason", "which way?"),
      mend("resources", "mark", "api-a", "--available", "--unavailable", "--reason", "both"),
      mend("resources", "mark", "api-a", "--available"),
      mend("resources", "mark", "nope", "--available", "--reason", "back"),
      mend("resources", "mark", "api-a", "--unavailable", "--reason", "provider outage"),
      mend("resources", "mark", "api-b", "--available", "--reason", "it is"),
    ]);
    expect(refused.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2, 3, 4, 4]);
    expect(refused[1]!.stderr).toContain("--max-holders must be at most 1000000, got 2000000");
    expect(refused[2]!.stderr).toContain('resource "bad name" must start with a letter or digit');
    expect(refused[3]!.stderr).toContain("say exactly one of --unavailable");
    expect(refused[6]!.stderr).toContain('no resource "nope" (see mend resources)');
    expect(refused[7]!.stderr).toContain("resource api-a is already unavailable (provider outage)");
    expect(refused[8]!.stderr).toContain("resource api-b is already available");

    const back = json<{ resource: ResourceRecord; created: boolean }>(
      await mend(
        "--json",
        "resources",
        "mark",
        "api-a",
        "--available",
        "--reason",
        "provider back",
      ),
    );
    expect(back).toMatchObject({
      resource: { id: "api-a", status: "available", reason: null },
      created: false,
    });

    const interventions = json<InterventionRecord[]>(await mend("--json", "interventions"));
    expect(interventions.map((i) => [i.actor, i.target, i.reason])).toEqual([
      [ACTOR, "git_repo_write", "two clones"],
      [ACTOR, "git_repo_write", null],
      [ACTOR, "api-a", "provider outage"],
      [ACTOR, "new-pool", null],
      [ACTOR, "api-a", "provider back"],
    ]);
    expect(ok(await mend("interventions"))).toMatch(
      /git_repo_write\s+two clones\s+available; maxHolders 1 → 2/,
    );
  });

  it("mend worker runs the handlers module's resourceChecks: a failing one takes its resource out of service, a passing one puts it back", async () => {
    const dir = tmpDir();
    const url = `sqlite:${join(dir, "mend.db")}`;
    const flag = join(dir, "api-a-healthy");
    const store = await openStore(url);
    try {
      const worker = spawnCli(
        [
          "--store",
          url,
          "worker",
          "--handlers",
          join(FIXTURES, "resource-check-handlers.mjs"),
          "--heartbeat",
          "100ms",
          "--sweep",
          "100ms",
          "--resource-check-interval",
          "100ms",
        ],
        { env: { MEND_TEST_API_A: flag } },
      );
      const resource = async (id: string) => (await store.listResources()).find((r) => r.id === id);
      await waitFor(
        async () => (await resource("api-a"))?.status === "unavailable",
        15_000,
        "api-a to fail its health check",
      );
      expect(await resource("api-a")).toMatchObject({
        reason: "health check failed: it returned false",
      });
      // Submitted now, so that no claim comes before the first check.
      const { workstreamId } = await store.submit(
        validateDefinition({
          name: "apis",
          tasks: ["x", "y"].map((id) => ({
            id,
            handler: "work",
            resources: [{ oneOf: ["api-a", "api-b"] }],
          })),
        }),
      );
      await waitFor(
        async () => (await store.listTasks(workstreamId)).every((t) => t.status === "completed"),
        15_000,
        "both tasks to complete on api-b",
      );
      for (const t of await store.listTasks(workstreamId)) {
        const started = (await store.listTransitions({ entityId: t.id })).find(
          (e) => e.event === "task_started",
        );
        expect(started!.detail).toMatchObject({
          reallocated: [{ to: "api-b", because: "api-a is unavailable" }],
        });
      }
      writeFileSync(flag, "");
      await waitFor(
        async () => (await resource("api-a"))?.status === "available",
        15_000,
        "api-a to pass its health check",
      );
      expect(worker.stderr()).toContain("health checks of api-a, api-b");
      worker.child.kill("SIGTERM");
      expect((await waitExit(worker, 15_000)).code).toBe(0);
    } finally {
      rmSync(flag, { force: true });
      await store.close();
    }
  });

  it("mend worker refuses a handlers module whose resourceChecks is not an object of functions", async () => {
    const dir = tmpDir();
    const module = join(dir, "handlers.mjs");
    writeFileSync(
      module,
      'export default { work: async () => 1 };\nexport const resourceChecks = { "api-a": true, "bad name": () => true };\n',
    );
    const r = await runCli([
      "--store",
      `sqlite:${join(dir, "mend.db")}`,
      "worker",
      "--handlers",
      module,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `resourceChecks of handlers module ${module}: "api-a" must be a function returning true or false (or a promise of it), got a boolean; resource "bad name" must start with a letter or digit`,
    );
  });
});
