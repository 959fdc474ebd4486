/**
 * The claim's plan on both stores: a worker's claim walks the ready tasks of its own handlers
 * only. A backlog queued for other workers' handlers once made every claim, an idle worker's
 * too, step over all of it (100,000 such tasks: 35 ms a claim on SQLite, holding the write lock).
 */
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import type { SqlStore } from "../src/store/sql/SqlStore.js";
import type { ExchangeRequest } from "../src/store/store.js";
import { planNodes, tempPgStore } from "./helpers/pg.js";
import { spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";

const BACKLOG = 2_000;

/** `BACKLOG` tasks for `other`, of a higher priority, queued ahead of two for `work`. */
async function backlog(store: SqlStore): Promise<void> {
  await store.submit(
    spec(
      Array.from({ length: BACKLOG }, (_, i) => ({ id: `o${i}`, handler: "other", priority: 5 })),
    ),
  );
  await store.submit(spec([{ id: "w1" }, { id: "w2" }]));
}

/** The claim of a worker with handlers `work` and `idle`, for up to 10 tasks. */
function claimFor(store: SqlStore, lock = "") {
  const req = { handlers: ["work", "idle"], capabilities: [] } as unknown as ExchangeRequest;
  return store.claimQuery(req, store.clock.now(), null, 10, [], "", lock);
}

describe("a claim reads only the ready tasks of its worker's handlers", () => {
  it("SQLite: each handler's tasks are searched in the claim index", async () => {
    const { store } = tempStore(new FakeClock());
    await backlog(store);
    const q = claimFor(store);
    const plan = await store.q.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${q.sql}`, q.params);
    const reads = plan.map((r) => r.detail).filter((d) => /^(SCAN|SEARCH) tasks\b/.test(d));
    expect(reads).toEqual([
      "SEARCH tasks USING INDEX tasks_claim (handler=?)",
      "SEARCH tasks USING INDEX tasks_claim (handler=?)",
    ]);
    expect(await store.q.all(q.sql, q.params)).toHaveLength(2);
  });

  it("PostgreSQL: no row of the backlog is read, and the claimed rows are locked", async () => {
    const store = await tempPgStore(new FakeClock());
    await backlog(store);
    const q = claimFor(store, " FOR UPDATE SKIP LOCKED");
    const reads = (await planNodes(store, q.sql, q.params))
      .filter((n) => n["Relation Name"] === "tasks" && n["Index Name"] !== "tasks_pkey")
      .map((n) => ({ index: String(n["Index Name"]), rows: n["Actual Rows"] }));
    expect(reads).toEqual([
      { index: "tasks_claim", rows: 2 },
      { index: "tasks_claim", rows: 0 },
    ]);
  });
});
