import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import type { Actor } from "../src/store/store.js";
import { repairStore } from "../src/state/repair.js";
import { validateStore } from "../src/state/validate.js";
import { spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });
const operator: Actor = {
  actor: "alice",
  reason: "state looked wrong",
  command: "mend state repair",
};

/** A store with two running tasks, one queued, and a workstream; plus raw damage to its rows. */
async function damaged() {
  const clock = new FakeClock();
  const { path, store } = tempStore(clock);
  const { workstreamId, taskIds } = await store.submit(
    spec([{ id: "a" }, { id: "b" }, { id: "c" }]),
  );
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  await store.exchange({
    workerId: "w1",
    outcomes: [],
    claim: 2,
    leaseMs: 5_000,
    handlers: ["work"],
    planner,
  });
  const db = new Database(path);
  // A row that says what the log never did, a lease that vanished, a workstream status made up.
  db.prepare("UPDATE tasks SET status = 'completed', output = '42' WHERE id = ?").run(taskIds[2]);
  db.prepare("UPDATE tasks SET lease_expires_at = NULL WHERE id = ?").run(taskIds[1]);
  db.prepare("UPDATE workstreams SET status = 'failed' WHERE id = ?").run(workstreamId);
  db.close();
  return { clock, path, store, workstreamId, taskIds };
}

describe("state repair", () => {
  it("lists in a dry run exactly what it would fix, changing nothing", async () => {
    const { clock, store, taskIds, workstreamId } = await damaged();
    const before = await store.snapshot();
    const report = await repairStore(store, { clock, who: operator, planner, dryRun: true });
    expect(report.backup).toBeNull();
    expect(report.outcome!.rows.map((r) => [r.id, r.fields.sort()])).toEqual([
      [workstreamId, ["status"]],
      [taskIds[2], ["output", "status"]],
    ]);
    expect(report.outcome!.requeued).toEqual([taskIds[1]]);
    expect(await store.snapshot()).toEqual(before);
    expect(await store.listInterventions()).toHaveLength(0);
  });

  it("rewrites rows from the log, requeues a task without a lease, backs up first, and logs it", async () => {
    const { clock, store, taskIds } = await damaged();
    expect((await validateStore(store, clock)).ok).toBe(false);
    const report = await repairStore(store, { clock, who: operator, planner, dryRun: false });
    expect(report.backup?.reason).toBe("before repair");
    expect(report.needsPerson).toEqual([]);
    expect((await store.getTask(taskIds[2]!))!.status).toBe("queued");
    expect((await store.getTask(taskIds[1]!))!.status).toBe("queued");
    expect((await store.getTask(taskIds[0]!))!.status).toBe("running");
    const after = await validateStore(store, clock);
    expect(after.checks.filter((c) => !c.ok)).toEqual([]);
    const [iv] = await store.listInterventions();
    expect(iv).toMatchObject({
      actor: "alice",
      command: "mend state repair",
      reason: "state looked wrong",
    });
    expect(await store.snapshot()).toEqual(await store.replay());
  });

  it("changes nothing when the chain is broken, and says to restore", async () => {
    const { clock, path, store } = await damaged();
    const db = new Database(path);
    db.prepare("UPDATE transitions SET data = replace(data, 'work', 'WORK') WHERE seq = 2").run();
    db.close();
    const before = await store.snapshot();
    const report = await repairStore(store, { clock, who: operator, planner, dryRun: false });
    expect(report.outcome).toBeNull();
    expect(report.backup).toBeNull();
    expect(report.needsPerson.map((n) => n.check)).toEqual(["chain", "restore"]);
    expect(report.needsPerson.at(-1)!.violations[0]!.message).toMatch(/--from-transitions/);
    expect(await store.snapshot()).toEqual(before);
  });
});
