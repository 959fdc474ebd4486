import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { ChainVerifier, GENESIS_HASH, transitionHash } from "../src/store/chain.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import { failureOf, spec } from "./helpers/specs.js";
import { openSqlite, tempStore } from "./helpers/tmp.js";

const planner = createPlanner({ random: () => 0 });

/** A store with some history: submit, claims, completions, a retry, a sweep and an intervention. */
async function busyStore() {
  const clock = new FakeClock();
  const t = tempStore(clock);
  const { store } = t;
  await store.registerWorker({ id: "w1", host: "h", pid: 1, concurrency: 4, handlers: ["work"] });
  const { taskIds } = await store.submit(
    spec([{ id: "a" }, { id: "b", deps: ["a"] }, { id: "c" }, { id: "d" }]),
  );
  const xchg = (outcomes: Parameters<SqliteStore["exchange"]>[0]["outcomes"], claim: number) =>
    store.exchange({ workerId: "w1", outcomes, claim, leaseMs: 1000, handlers: ["work"], planner });
  const { claimed } = await xchg([], 3);
  const [a, c, d] = claimed;
  clock.advance(10);
  await xchg(
    [
      { kind: "complete", taskId: a!.id, token: a!.leaseToken!, output: { x: 1 } },
      { kind: "fail", taskId: c!.id, token: c!.leaseToken!, failure: failureOf("network") },
    ],
    1,
  );
  clock.advance(2000); // d's lease expires
  await store.sweepExpiredLeases(planner);
  await store.cancelTask(taskIds[2]!, { actor: "op", reason: "enough", command: "test" });
  expect(d).toBeDefined();
  return { clock, ...t };
}

/** Runs `sql` on the store's file through a separate connection, as an attacker or a bad disk would. */
function tamper(path: string, sql: string, ...args: unknown[]): number {
  const db = new Database(path);
  try {
    return db.prepare(sql).run(...args).changes;
  } finally {
    db.close();
  }
}

describe("hash chain", () => {
  it("verifies after activity and across reopen", async () => {
    const { store, path, clock } = await busyStore();
    const total = (await store.listTransitions()).length;
    expect(total).toBeGreaterThan(12);
    expect(await store.verifyChain()).toEqual({ ok: true, checked: total });
    await store.close();
    const reopened = openSqlite(path, clock);
    expect(await reopened.verifyChain()).toEqual({ ok: true, checked: total });
  });

  it("each record's hash chains to its predecessor", async () => {
    const { store } = await busyStore();
    const log = await store.listTransitions();
    let prev = GENESIS_HASH;
    for (const t of log) {
      const { hash, data, detail, ...rest } = t;
      const expected = transitionHash(prev, {
        ...rest,
        dataJson: JSON.stringify(data),
        detailJson: detail ? JSON.stringify(detail) : null,
      });
      expect(hash, `seq ${t.seq}`).toBe(expected);
      prev = hash;
    }
  });

  it("detects a record whose data was changed, naming its seq", async () => {
    const { store, path } = await busyStore();
    const log = await store.listTransitions();
    const victim = log.find((t) => t.event === "task_completed")!;
    const changed = tamper(
      path,
      "UPDATE transitions SET data = ? WHERE seq = ?",
      JSON.stringify({ ...victim.data, output: { x: 2 } }),
      victim.seq,
    );
    expect(changed).toBe(1);
    const report = await store.verifyChain();
    expect(report.ok).toBe(false);
    expect(report.brokenAt?.seq).toBe(victim.seq);
    expect(report.checked).toBe(victim.seq - 1);
    expect(report.brokenAt?.reason).toMatch(/hash/);
  });

  it("detects changes to any other covered field", async () => {
    for (const [column, value] of [
      ["actor", "mallory"],
      ["to_state", "completed"],
      ["event", "task_completed"],
      ["at", 1],
      ["detail", '{"forged":true}'],
      ["entity_id", "ws_x/other"],
      ["severity", "critical"],
    ] as const) {
      const { store, path } = await busyStore();
      const seq = 5;
      expect(tamper(path, `UPDATE transitions SET ${column} = ? WHERE seq = ?`, value, seq)).toBe(
        1,
      );
      const report = await store.verifyChain();
      expect(report, column).toMatchObject({ ok: false, brokenAt: { seq } });
    }
  });

  it("detects a deleted record at the record after the gap", async () => {
    const { store, path } = await busyStore();
    const total = (await store.listTransitions()).length;
    const gone = 7;
    expect(tamper(path, "DELETE FROM transitions WHERE seq = ?", gone)).toBe(1);
    const report = await store.verifyChain();
    expect(report.ok).toBe(false);
    expect(report.brokenAt?.seq).toBe(gone + 1);
    expect(report.brokenAt?.reason).toMatch(new RegExp(`expected seq ${gone}`));
    expect(report.checked).toBe(gone - 1);
    expect(total).toBeGreaterThan(gone + 1);
  });

  it("detects a deleted record even when the seqs are renumbered to hide the gap", async () => {
    const { store, path } = await busyStore();
    const db = new Database(path);
    try {
      db.exec(
        "DELETE FROM transitions WHERE seq = 4; UPDATE transitions SET seq = seq - 1 WHERE seq > 4;",
      );
    } finally {
      db.close();
    }
    const report = await store.verifyChain();
    expect(report).toMatchObject({ ok: false, brokenAt: { seq: 4 } });
  });

  it("detects a recomputed hash (the next record no longer chains to it)", async () => {
    const { store, path } = await busyStore();
    const log = await store.listTransitions();
    const victim = log[5]!;
    const prev = log[4]!;
    const forgedData = JSON.stringify({ ...victim.data, forged: true });
    const forgedHash = transitionHash(prev.hash, {
      seq: victim.seq,
      at: victim.at,
      entity: victim.entity,
      entityId: victim.entityId,
      workstreamId: victim.workstreamId,
      from: victim.from,
      to: victim.to,
      event: victim.event,
      severity: victim.severity,
      actor: victim.actor,
      dataJson: forgedData,
      detailJson: victim.detail ? JSON.stringify(victim.detail) : null,
    });
    tamper(
      path,
      "UPDATE transitions SET data = ?, hash = ? WHERE seq = ?",
      forgedData,
      forgedHash,
      victim.seq,
    );
    const report = await store.verifyChain();
    expect(report).toMatchObject({ ok: false, brokenAt: { seq: victim.seq + 1 } });
  });

  it("reports the first broken record when several are", async () => {
    const { store, path } = await busyStore();
    tamper(path, "UPDATE transitions SET actor = 'x' WHERE seq IN (9, 4, 11)");
    expect(await store.verifyChain()).toMatchObject({
      ok: false,
      checked: 3,
      brokenAt: { seq: 4 },
    });
  });

  it("new records written after tampering do not repair the chain", async () => {
    const { store, path } = await busyStore();
    tamper(path, "UPDATE transitions SET actor = 'x' WHERE seq = 3");
    await store.submit(spec([{ id: "z" }]));
    expect(await store.verifyChain()).toMatchObject({ ok: false, brokenAt: { seq: 3 } });
  });

  it("ChainVerifier stops at the first break", () => {
    const v = new ChainVerifier();
    const base = {
      at: 1,
      entity: "task" as const,
      entityId: "t",
      workstreamId: null,
      from: null,
      to: "queued",
      event: "task_created",
      severity: "info" as const,
      actor: "engine",
      dataJson: "{}",
      detailJson: null,
    };
    const h1 = transitionHash(GENESIS_HASH, { ...base, seq: 1 });
    expect(v.push({ ...base, seq: 1, hash: h1 })).toBe(true);
    expect(v.push({ ...base, seq: 2, hash: "bad" })).toBe(false);
    const h3 = transitionHash(h1, { ...base, seq: 3 });
    expect(v.push({ ...base, seq: 3, hash: h3 })).toBe(false);
    expect(v.report()).toMatchObject({ ok: false, checked: 1, brokenAt: { seq: 2 } });
  });
});
