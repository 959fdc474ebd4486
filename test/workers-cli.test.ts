/**
 * `mend workers`, `mend worker check|shutdown|restart` against a store written in this process:
 * workers registered and heartbeating on a clock that the CLI, on the real clock, sees as now.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { validateDefinition } from "../src/model/definition.js";
import type { InterventionRecord, TaskRecord } from "../src/model/records.js";
import type { WorkerCheck } from "../src/recovery/worker-check.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { WorkerShutdown } from "../src/store/store.js";
import { type CliResult, json, runCli } from "./helpers/cli.js";
import { LEASE_MS, planner } from "./helpers/recovery.js";
import { openSqlite, tmpDir } from "./helpers/tmp.js";

const ACTOR = "erin@test";

function ok(r: CliResult): string {
  expect(r.code, `stderr: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/**
 * A store with three workers: `live` (supervised, gpu, heartbeating now, running two tasks),
 * `plain` (heartbeating now, nothing running) and `stale` (last heard from 90 s ago).
 */
async function registry() {
  const path = join(tmpDir(), "mend.db");
  const clock = new FakeClock(Date.now() - 90_000);
  const store: SqliteStore = openSqlite(path, clock);
  const base = { host: "h1", concurrency: 4, handlers: ["work"] };
  await store.registerWorker({ id: "stale", pid: 11, ...base });
  clock.advance(90_000);
  await store.registerWorker({
    id: "live",
    pid: 12,
    ...base,
    capabilities: ["gpu", "net"],
    supervised: true,
  });
  await store.registerWorker({ id: "plain", pid: 13, ...base });
  const { workstreamId } = await store.submit(
    validateDefinition({
      name: "jobs",
      tasks: [
        { id: "a", handler: "work", requires: ["gpu"] },
        { id: "b", handler: "work" },
      ],
    }),
  );
  const { claimed } = await store.exchange({
    workerId: "live",
    outcomes: [],
    claim: 2,
    leaseMs: 60_000,
    handlers: ["work"],
    capabilities: ["gpu", "net"],
    planner,
  });
  expect(claimed).toHaveLength(2);
  await store.heartbeat("live", "busy", [], LEASE_MS);
  await store.close();
  const mend = (...args: string[]) =>
    runCli(["--store", `sqlite:${path}`, ...args], { env: { MEND_ACTOR: ACTOR } });
  return { mend, workstreamId };
}

describe("mend workers / mend worker check|shutdown|restart", () => {
  it("lists the registry and checks one worker's health against the thresholds", async () => {
    const { mend } = await registry();
    const [table, listed, live, liveJson, stale, missing] = await Promise.all([
      mend("workers"),
      mend("--json", "workers"),
      mend("worker", "check", "live"),
      mend("--json", "worker", "check", "live"),
      mend("worker", "check", "stale"),
      mend("worker", "check", "nope"),
    ]);
    const text = ok(table);
    expect(text).toMatch(
      /ID\s+HOST\s+PID\s+STATUS\s+CAPABILITIES\s+CONCURRENCY\s+RUNNING\s+HEARTBEAT\s+REQUEST/,
    );
    expect(text).toMatch(/live\s+h1\s+12\s+busy \(supervised\)\s+gpu,net\s+4\s+2\s+\S+ ago\s+-/);
    expect(text).toMatch(/plain\s+h1\s+13\s+idle\s+-\s+4\s+0\s+/);
    expect(text).toMatch(/stale\s+h1\s+11\s+idle\s+-\s+4\s+0\s+1m\d+s ago/);
    const rows = json<{ id: string; running: number; heartbeatAgeMs: number }[]>(listed);
    expect(rows.map((r) => [r.id, r.running])).toEqual([
      ["live", 2],
      ["plain", 0],
      ["stale", 0],
    ]);

    const healthy = ok(live);
    expect(healthy).toContain("worker live: busy, healthy");
    expect(healthy).toContain("(supervised), concurrency 4, capabilities gpu,net");
    expect(healthy).toMatch(
      /last heartbeat \S+ ago \(unresponsive after 30s, presumed dead after 3m\)/,
    );
    expect(healthy).toMatch(/work {2}attempt 1 {2}token \d+ {2}expires in \S+/);
    expect(healthy).toContain("next:\n  - nothing to do: it is heartbeating");
    const check = json<WorkerCheck>(liveJson);
    expect(check).toMatchObject({ phase: "healthy", healthy: true, unresponsiveMs: 30_000 });
    expect(check.leases).toHaveLength(2);

    // Silent for 90 s: unresponsive, still inside the 3 minutes.
    expect(stale.code, stale.stderr).toBe(1);
    expect(stale.stdout).toContain("worker stale: idle, unresponsive");
    expect(stale.stdout).toMatch(
      /- wait: if it heartbeats again it resumes .* after 3m of silence \(in 1m\d+s\)/,
    );
    expect(stale.stdout).toContain(
      "it holds no tasks; to take it out now: mend worker shutdown stale",
    );
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('no worker "nope" (see mend workers)');
  });

  it("shutdown --reassign requeues the worker's tasks at once; restart is refused without a supervisor", async () => {
    const { mend, workstreamId } = await registry();
    const [unconfirmed, noReason, unsupervised] = await Promise.all([
      mend("worker", "shutdown", "live", "--reassign", "--reason", "drain h1"),
      mend("worker", "shutdown", "live", "--reassign", "--yes"),
      mend("worker", "restart", "plain", "--reason", "upgrade", "--yes"),
    ]);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toContain("refusing without a terminal; pass --yes to confirm");
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("required option '--reason <text>'");
    expect(unsupervised.code).toBe(4);
    expect(unsupervised.stderr).toContain(
      "worker plain has no supervisor to start it again (it was not started with mend worker --supervise)",
    );
    expect(json(await mend("--json", "interventions"))).toEqual([]);

    const done = json<WorkerShutdown>(
      await mend(
        "--json",
        "worker",
        "shutdown",
        "live",
        "--reassign",
        "--reason",
        "drain h1",
        "--yes",
      ),
    );
    expect(done).toMatchObject({
      immediate: false,
      worker: {
        id: "live",
        status: "busy",
        control: { action: "shutdown", reassign: true, actor: ACTOR },
      },
    });
    expect(done.released).toHaveLength(2);
    const status = json<{ tasks: Pick<TaskRecord, "status" | "attempts">[] }>(
      await mend("--json", "status", workstreamId),
    );
    expect(status.tasks.map((t) => [t.status, t.attempts])).toEqual([
      ["queued", 0],
      ["queued", 0],
    ]);
    const after = ok(await mend("worker", "check", "live"));
    expect(after).toContain("request: shutdown --reassign by erin@test (drain h1)");
    expect(after).toContain("leases: none");
    expect(after).toContain(
      "- shutdown requested by erin@test: it stops at its next heartbeat (its tasks were reassigned)",
    );
    expect(ok(await mend("workers"))).toMatch(
      /live\s+.*\s0\s+\S+ ago\s+shutdown --reassign by erin@test/,
    );

    // The stale worker is not heartbeating: shut down at once.
    expect(ok(await mend("worker", "shutdown", "stale", "--reason", "gone", "--yes"))).toBe(
      "worker stale: shut down now (it was not heartbeating)\n",
    );
    const again = await mend("worker", "shutdown", "stale", "--reason", "twice", "--yes");
    expect(again.code).toBe(4);
    expect(again.stderr).toContain("worker stale is already shut down and holds no tasks");

    const interventions = json<InterventionRecord[]>(await mend("--json", "interventions"));
    expect(interventions.map((i) => [i.actor, i.target, i.reason])).toEqual([
      [ACTOR, "worker:live", "drain h1"],
      [ACTOR, "worker:stale", "gone"],
    ]);
    expect(interventions[0]!.command).toMatch(
      /worker shutdown live --reassign --reason drain h1 --yes$/,
    );
  });
});
