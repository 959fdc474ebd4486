/**
 * The monitor's every-second reads of tasks touch only the few they are about: queued ones with
 * a deadline (expiry), queued ones needing resources (the waiting counts), running ones (stall
 * detection). Without their partial indexes the first two read every queued task (100,000
 * queued: 11 and 10 ms a sweep on PostgreSQL); ordered by id, the third walked every task on
 * SQLite (50 ms a sweep).
 */
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { WAITING_NEEDS_SQL } from "../src/store/sql/resources.js";
import { EXPIRED_SQL, type SqlStore } from "../src/store/sql/SqlStore.js";
import { STALL_CANDIDATES_SQL } from "../src/store/sql/stalls.js";
import { planNodes, tempPgStore } from "./helpers/pg.js";
import { spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";

const QUEUED = 2_000;

async function backlog(store: SqlStore): Promise<void> {
  await store.submit(spec(Array.from({ length: QUEUED }, (_, i) => ({ id: `q${i}` }))));
}

describe("the monitor's sweep reads only the tasks it is about", () => {
  it("SQLite: each query searches its partial index", async () => {
    const { store } = tempStore(new FakeClock());
    await backlog(store);
    const plan = async (sql: string, params: unknown[] = []) =>
      (await store.q.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, params)).map(
        (r) => r.detail,
      );
    expect(await plan(EXPIRED_SQL, [0])).toEqual(["SCAN tasks USING INDEX tasks_deadline"]);
    expect(await plan(WAITING_NEEDS_SQL)).toEqual(["SCAN tasks USING INDEX tasks_needing"]);
    expect((await plan(STALL_CANDIDATES_SQL, [0, 0]))[0]).toBe(
      "SCAN tasks USING INDEX tasks_leases",
    );
  });

  it("PostgreSQL: each query reads its partial index, never the whole table", async () => {
    const store = await tempPgStore(new FakeClock());
    await backlog(store);
    // Node types and the indexes they read, of every node on `tasks` (a bitmap scan's index is
    // on its child).
    const reads = async (sql: string, params: unknown[]) =>
      (await planNodes(store, sql, params))
        .filter((n) => n["Relation Name"] === "tasks" || n["Index Name"]?.startsWith("tasks"))
        .map((n) => `${n["Node Type"]}${n["Index Name"] ? ` ${n["Index Name"]}` : ""}`);
    for (const [sql, params, index] of [
      [EXPIRED_SQL, [0], "tasks_deadline"],
      [WAITING_NEEDS_SQL, [], "tasks_needing"],
      [STALL_CANDIDATES_SQL, [0, 0], "tasks_leases"],
    ] as const) {
      const nodes = await reads(sql, [...params]);
      expect(
        nodes.some((n) => n.endsWith(` ${index}`)),
        nodes.join(", "),
      ).toBe(true);
      expect(nodes.filter((n) => n.startsWith("Seq Scan"))).toEqual([]);
    }
  });
});
