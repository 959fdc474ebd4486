/**
 * Model-based property test of resources (DESIGN.md invariant 6) on both stores: random
 * workstreams of tasks needing random resources (some with `oneOf` alternatives) under random
 * limits; random interleavings of several workers' round trips (claims, completions, retried and
 * permanent failures, releases), lease expiry sweeps on a fake clock, cancellations, limits set
 * by people and by definitions, resources taken out of service and put back, the monitor's
 * exhaustion flags; on PostgreSQL also round trips run at once, in parallel transactions.
 *
 * After every step:
 * - the transition log, walked in order, never starts an attempt that takes a hold on an
 *   unavailable resource, or one that puts a resource over its limit at that moment: a limit
 *   lowered below its holders lets them keep their holds, and no new hold is taken until fewer
 *   hold it than the limit;
 * - every attempt's end gives its holds back in the transition that ends it;
 * - a task that is not running holds nothing; a running one holds one resource per need, from
 *   that need's choices;
 * - the holders the store reports are the running tasks' holds, and the log's.
 * At the end, replay equals the state and the store validates.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { createPlanner } from "../src/engine/planner.js";
import { MendError } from "../src/errors.js";
import { validateDefinition } from "../src/model/definition.js";
import type { TaskRecord, TransitionRecord } from "../src/model/records.js";
import { openStore } from "../src/store/open.js";
import { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ExchangeRequest, Outcome, Store } from "../src/store/store.js";
import { expectConsistent } from "./helpers/recovery.js";
import { freshSchema } from "./helpers/pg.js";

const RESOURCES = ["r0", "r1", "r2", "r3"] as const;
const WORKERS = ["w0", "w1", "w2", "w3"] as const;
const LEASE_MS = 1_000;
/** No jitter: a retried task is due again at once, so it competes for its resources at once. */
const planner = createPlanner({ random: () => 0 });
const operator: Actor = { actor: "alice", reason: "property test", command: "mend test" };

// ------------------------------------------------------------------ operations

type Need = string | { oneOf: string[] };
interface TaskGen {
  needs: Need[];
  priority: number;
  maxAttempts: number;
}
interface OutcomeGen {
  pick: number;
  kind: "complete" | "retry" | "fail" | "release";
}
interface ExchangeGen {
  worker: number;
  claim: number;
  outcomes: OutcomeGen[];
}
type Op =
  | { k: "submit"; tasks: TaskGen[]; limits: { name: string; maxHolders: number }[] }
  | ({ k: "exchange" } & ExchangeGen)
  | { k: "concurrent"; exchanges: ExchangeGen[] }
  | { k: "advance"; ms: number }
  | { k: "sweep" }
  | { k: "cancel"; pick: number }
  | { k: "setLimit"; resource: string; maxHolders: number }
  | { k: "mark"; resource: string; available: boolean; person: boolean }
  | { k: "refresh" };

const resourceArb = fc.constantFrom(...RESOURCES);
const needArb: fc.Arbitrary<Need> = fc.oneof(
  resourceArb,
  fc
    .uniqueArray(resourceArb, { minLength: 2, maxLength: 3 })
    .map((oneOf) => ({ oneOf: [...oneOf] })),
);
const submitArb = fc.record({
  k: fc.constant("submit" as const),
  tasks: fc.array(
    fc.record({
      needs: fc.array(needArb, { maxLength: 2 }),
      priority: fc.integer({ min: 0, max: 2 }),
      maxAttempts: fc.integer({ min: 1, max: 3 }),
    }),
    { minLength: 1, maxLength: 5 },
  ),
  limits: fc.uniqueArray(
    fc.record({ name: resourceArb, maxHolders: fc.integer({ min: 1, max: 3 }) }),
    { maxLength: 2, selector: (l) => l.name },
  ),
});
const outcomeArb = fc.record({
  pick: fc.nat(),
  kind: fc.constantFrom(
    "complete" as const,
    "complete" as const,
    "retry" as const,
    "fail" as const,
    "release" as const,
  ),
});
const exchangeArb = fc.record({
  worker: fc.nat({ max: WORKERS.length - 1 }),
  claim: fc.integer({ min: 0, max: 3 }),
  outcomes: fc.array(outcomeArb, { maxLength: 3 }),
});
/**
 * Round trips run at once: mostly completions and claims, which the PostgreSQL store runs in
 * parallel transactions (anything else takes its exclusive lock, which is contention too).
 */
const concurrentArb = fc.record({
  k: fc.constant("concurrent" as const),
  exchanges: fc.uniqueArray(
    fc.record({
      worker: fc.nat({ max: WORKERS.length - 1 }),
      claim: fc.integer({ min: 1, max: 3 }),
      outcomes: fc.array(
        fc.record({
          pick: fc.nat(),
          kind: fc.constantFrom(
            "complete" as const,
            "complete" as const,
            "complete" as const,
            "retry" as const,
          ),
        }),
        { maxLength: 2 },
      ),
    }),
    { minLength: 2, maxLength: WORKERS.length, selector: (e) => e.worker },
  ),
});

function opArb(concurrent: boolean): fc.Arbitrary<Op> {
  return fc.oneof(
    { arbitrary: submitArb, weight: 2 },
    { arbitrary: exchangeArb.map((e) => ({ k: "exchange" as const, ...e })), weight: 8 },
    { arbitrary: concurrentArb, weight: concurrent ? 4 : 1 },
    {
      arbitrary: fc.record({ k: fc.constant("advance" as const), ms: fc.nat({ max: 1_500 }) }),
      weight: 2,
    },
    { arbitrary: fc.constant({ k: "sweep" as const }), weight: 2 },
    { arbitrary: fc.record({ k: fc.constant("cancel" as const), pick: fc.nat() }), weight: 1 },
    {
      arbitrary: fc.record({
        k: fc.constant("setLimit" as const),
        resource: resourceArb,
        maxHolders: fc.integer({ min: 1, max: 3 }),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        k: fc.constant("mark" as const),
        resource: resourceArb,
        available: fc.boolean(),
        person: fc.boolean(),
      }),
      weight: 2,
    },
    { arbitrary: fc.constant({ k: "refresh" as const }), weight: 1 },
  );
}

function opsArb(concurrent: boolean): fc.Arbitrary<Op[]> {
  // Always something to claim from the start.
  return fc
    .tuple(submitArb, fc.array(opArb(concurrent), { minLength: 5, maxLength: 40 }))
    .map(([first, rest]) => [first, ...rest]);
}

// ------------------------------------------------------------------ the model

/** What the log says about resources and holds, walked in order; the checks fail loudly. */
class LogWalk {
  private seq = 0;
  private readonly limits = new Map<string, { maxHolders: number; status: string }>();
  readonly holders = new Map<string, number>();
  private readonly held = new Map<string, string[]>();

  async advance(store: Store): Promise<void> {
    for (const t of await store.listTransitions({ afterSeq: this.seq })) {
      this.apply(t);
      this.seq = t.seq;
    }
  }

  private apply(t: TransitionRecord): void {
    const where = `seq ${t.seq} (${t.event} ${t.entityId})`;
    if (t.entity === "resource") {
      const before = this.limits.get(t.entityId);
      const maxHolders = (t.data.maxHolders as number | undefined) ?? before?.maxHolders;
      expect(maxHolders, `${where}: a resource's limit`).toBeTypeOf("number");
      this.limits.set(t.entityId, { maxHolders: maxHolders!, status: t.to });
      return;
    }
    if (t.entity !== "task") return;
    if (t.from !== "running" && t.to === "running") {
      const held = (t.data.held as string[] | undefined) ?? [];
      for (const r of held) {
        expect(this.limits.has(r), `${where}: holds ${r}, which does not exist`).toBe(true);
        expect(this.limits.get(r)!.status, `${where}: takes a hold on ${r}`).not.toBe(
          "unavailable",
        );
        this.holders.set(r, (this.holders.get(r) ?? 0) + 1);
      }
      for (const r of new Set(held)) {
        expect(
          this.holders.get(r),
          `${where}: ${r} holders after this claim (limit ${this.limits.get(r)!.maxHolders})`,
        ).toBeLessThanOrEqual(this.limits.get(r)!.maxHolders);
      }
      this.held.set(t.entityId, held);
    } else if (t.from === "running" && t.to !== "running") {
      expect(t.data, `${where}: an attempt's end gives its holds back`).toHaveProperty(
        "held",
        null,
      );
      for (const r of this.held.get(t.entityId) ?? []) {
        this.holders.set(r, this.holders.get(r)! - 1);
      }
      this.held.delete(t.entityId);
    }
  }
}

/** Every task of the run's workstreams. */
async function allTasks(store: Store, workstreams: readonly string[]): Promise<TaskRecord[]> {
  return (await Promise.all(workstreams.map((ws) => store.listTasks(ws)))).flat();
}

/** The state's checks, and that the state, the log and `listResources` agree on holders. */
async function checkState(store: Store, tasks: readonly TaskRecord[], walk: LogWalk) {
  const holders = new Map<string, number>();
  for (const t of tasks) {
    if (t.status !== "running") {
      expect(t.held, `${t.id} is ${t.status} and holds nothing`).toBeNull();
      continue;
    }
    if (t.resources === null) {
      expect(t.held, `${t.id} needs nothing and holds nothing`).toBeNull();
      continue;
    }
    expect(
      t.held,
      `${t.id} holds one resource per need of ${JSON.stringify(t.resources)}`,
    ).toHaveLength(t.resources.length);
    t.resources.forEach((need, i) => {
      expect(need, `${t.id}'s hold for need ${i}`).toContain(t.held![i]);
    });
    for (const r of t.held!) holders.set(r, (holders.get(r) ?? 0) + 1);
  }
  for (const r of await store.listResources()) {
    expect(r.holders, `${r.id}: holders reported`).toBe(holders.get(r.id) ?? 0);
    expect(walk.holders.get(r.id) ?? 0, `${r.id}: holders by the log`).toBe(r.holders);
  }
}

// ------------------------------------------------------------------ running it

function definition(op: Extract<Op, { k: "submit" }>, n: number) {
  return validateDefinition({
    name: `ws${n}`,
    ...(op.limits.length === 0
      ? {}
      : {
          resources: Object.fromEntries(
            op.limits.map((l) => [l.name, { maxHolders: l.maxHolders }]),
          ),
        }),
    tasks: op.tasks.map((t, i) => ({
      id: `t${i}`,
      handler: "work",
      priority: t.priority,
      retry: { maxAttempts: t.maxAttempts, backoff: "constant", initial: 0, jitter: "none" },
      ...(t.needs.length === 0 ? {} : { resources: t.needs }),
    })),
  });
}

function outcomesFor(worker: string, gens: readonly OutcomeGen[], tasks: readonly TaskRecord[]) {
  const mine = tasks.filter((t) => t.status === "running" && t.leaseWorker === worker);
  const outcomes: Outcome[] = [];
  const used = new Set<string>();
  for (const g of gens) {
    if (mine.length === 0) break;
    const t = mine[g.pick % mine.length]!;
    if (used.has(t.id)) continue;
    used.add(t.id);
    const fenced = { taskId: t.id, token: t.leaseToken! };
    if (g.kind === "complete") outcomes.push({ kind: "complete", ...fenced, output: null });
    else if (g.kind === "release") outcomes.push({ kind: "release", ...fenced, reason: "test" });
    else {
      const recoverable = g.kind === "retry";
      outcomes.push({
        kind: "fail",
        ...fenced,
        failure: {
          category: recoverable ? "network" : "logic",
          recoverable,
          message: `test ${g.kind}`,
        },
      });
    }
  }
  return outcomes;
}

function request(e: ExchangeGen, tasks: readonly TaskRecord[]): ExchangeRequest {
  const worker = WORKERS[e.worker]!;
  return {
    workerId: worker,
    outcomes: outcomesFor(worker, e.outcomes, tasks),
    claim: e.claim,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    planner,
  };
}

/** Operations a store may refuse (a task already ended, an unknown resource): not failures. */
async function refusable(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof MendError)) throw err;
  }
}

async function step(store: Store, clock: FakeClock, op: Op, workstreams: string[]) {
  const tasks = await allTasks(store, workstreams);
  switch (op.k) {
    case "submit": {
      const { workstreamId } = await store.submit(definition(op, workstreams.length));
      workstreams.push(workstreamId);
      return;
    }
    case "exchange":
      await store.exchange(request(op, tasks));
      return;
    case "concurrent": {
      // One round trip per worker, all at once; on PostgreSQL in parallel transactions.
      await Promise.all(op.exchanges.map((e) => store.exchange(request(e, tasks))));
      return;
    }
    case "advance":
      clock.advance(op.ms);
      return;
    case "sweep":
      await store.sweepExpiredLeases(planner);
      return;
    case "cancel": {
      const open = tasks.filter((t) => t.status === "queued" || t.status === "running");
      if (open.length > 0)
        await refusable(store.cancelTask(open[op.pick % open.length]!.id, operator));
      return;
    }
    case "setLimit":
      await store.setResourceLimit(op.resource, op.maxHolders, operator);
      return;
    case "mark":
      await refusable(
        store.markResource(
          op.resource,
          op.available,
          "property test",
          op.person ? operator : { actor: "monitor" },
        ),
      );
      return;
    case "refresh":
      await store.refreshResources();
      return;
  }
}

async function run(store: Store, clock: FakeClock, ops: readonly Op[]): Promise<void> {
  const workstreams: string[] = [];
  const walk = new LogWalk();
  for (const op of ops) {
    await step(store, clock, op, workstreams);
    await walk.advance(store);
    await checkState(store, await allTasks(store, workstreams), walk);
  }
  await expectConsistent(store, clock);
}

describe("resources under contention (invariant 6)", () => {
  it("a task whose needs share a resource takes no more of it than its limit", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mend-resources-"));
    const clock = new FakeClock();
    const store = new SqliteStore(join(dir, "mend.db"), { clock });
    try {
      const { workstreamId } = await store.submit(
        validateDefinition({
          name: "overlap",
          resources: { r0: { maxHolders: 1 } },
          tasks: [{ id: "a", handler: "work", resources: ["r0", { oneOf: ["r0", "r1"] }] }],
        }),
      );
      await store.exchange(request({ worker: 0, claim: 1, outcomes: [] }, []));
      const [a] = await store.listTasks(workstreamId);
      // It holds r0 and r1, or waits; r0 held twice would be two holders of a one-holder resource.
      expect((await store.listResources()).find((r) => r.id === "r0")!.holders).toBeLessThanOrEqual(
        1,
      );
      expect(a!.held === null || a!.held.join() === "r0,r1").toBe(true);
      await expectConsistent(store, clock);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("SQLite: capacity is never exceeded, holds never leak, replay equals state", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb(false), async (ops) => {
        const dir = mkdtempSync(join(tmpdir(), "mend-resources-"));
        const clock = new FakeClock();
        const store = new SqliteStore(join(dir, "mend.db"), { clock });
        try {
          await run(store, clock, ops);
        } finally {
          await store.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 50 },
    );
  });

  it("PostgreSQL: the same, with round trips in parallel transactions", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb(true), async (ops) => {
        const { url, drop } = await freshSchema();
        const clock = new FakeClock();
        const store = await openStore(url, { clock });
        try {
          await run(store, clock, ops);
        } finally {
          await store.close();
          await drop();
        }
      }),
      { numRuns: 20 },
    );
  });
});
