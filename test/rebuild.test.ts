import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { rebuildFromJournal } from "../src/store/sqlite/rebuild.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor } from "../src/store/store.js";
import { journalDirFor } from "../src/state/journal.js";
import { spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });
const operator: Actor = { actor: "alice", reason: "testing", command: "mend test" };

/** A log with creations, claims, completions, a retried failure, a running task and an intervention. */
async function workload(store: SqliteStore, clock: FakeClock): Promise<void> {
  const { taskIds } = await store.submit(
    spec([
      { id: "a" },
      { id: "b", deps: ["a"] },
      { id: "c", deps: ["a"] },
      { id: "d", deps: ["b", "c"] },
    ]),
  );
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 2, handlers: ["work"] });
  const ex = (outcomes: Parameters<SqliteStore["exchange"]>[0]["outcomes"], claim: number) =>
    store.exchange({
      workerId: "w1",
      outcomes,
      claim,
      leaseMs: 5_000,
      handlers: ["work"],
      planner,
    });
  const [a] = (await ex([], 1)).claimed;
  clock.advance(5);
  const { claimed } = await ex(
    [{ kind: "complete", taskId: a!.id, token: a!.leaseToken, output: { ok: 1 } }],
    2,
  );
  clock.advance(5);
  const [b, c] = claimed;
  await ex(
    [
      { kind: "complete", taskId: b!.id, token: b!.leaseToken, output: "é ✓ unicode" },
      {
        kind: "fail",
        taskId: c!.id,
        token: c!.leaseToken,
        failure: {
          category: "network",
          recoverable: true,
          message: "ECONNRESET",
          code: "ECONNRESET",
        },
      },
    ],
    0,
  );
  clock.advance(2_000);
  await ex([], 1);
  await store.skipTask(taskIds[3]!, operator).catch(() => undefined);
}

describe("rebuild from the journal", () => {
  it("produces the same log, state and interventions as the database it journals", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await workload(store, clock);
    const target = join(dir, "rebuilt.db");
    const result = await rebuildFromJournal(journalDirFor(path), target, { now: clock.now() });
    const rebuilt = openSqlite(target, clock);
    const log = await store.listTransitions({ limit: 100_000 });
    expect(await rebuilt.listTransitions({ limit: 100_000 })).toEqual(log);
    expect(await rebuilt.snapshot()).toEqual(await store.snapshot());
    expect(await rebuilt.listInterventions()).toEqual(await store.listInterventions());
    expect((await rebuilt.verifyChain()).ok).toBe(true);
    expect(result).toMatchObject({
      transitions: log.length,
      lastSeq: log.at(-1)!.seq,
      tornRecords: 0,
    });
    // The running task has a lease again, so its worker can renew it or the monitor can sweep it.
    const running = (await rebuilt.listTasks(log[0]!.entityId)).filter(
      (t) => t.status === "running",
    );
    expect(running.every((t) => t.leaseExpiresAt === clock.now() + 5_000)).toBe(true);
  });

  it("stops at a point in time: a seq or a time, at a transaction boundary", async () => {
    const clock = new FakeClock();
    const { dir, path, store } = tempStore(clock);
    await workload(store, clock);
    const log = await store.listTransitions({ limit: 100_000 });
    const cut = log[7]!;
    const bySeq = await rebuildFromJournal(journalDirFor(path), join(dir, "seq.db"), {
      now: clock.now(),
      limit: { toSeq: cut.seq },
    });
    expect(bySeq.lastSeq).toBeGreaterThanOrEqual(cut.seq);
    const atSeq = openSqlite(join(dir, "seq.db"), clock);
    expect((await atSeq.listTransitions({ limit: 100_000 })).map((t) => t.seq)).toEqual(
      log.filter((t) => t.seq <= bySeq.lastSeq).map((t) => t.seq),
    );
    const byTime = await rebuildFromJournal(journalDirFor(path), join(dir, "time.db"), {
      now: clock.now(),
      limit: { toTime: log[0]!.at },
    });
    expect(byTime.lastSeq).toBeLessThan(log.at(-1)!.seq);
    expect(
      (await openSqlite(join(dir, "time.db"), clock).listTransitions({ limit: 100_000 })).every(
        (t) => t.at <= log[0]!.at || t.seq <= byTime.lastSeq,
      ),
    ).toBe(true);
  });
});
