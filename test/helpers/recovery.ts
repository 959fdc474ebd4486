/**
 * Store-level helpers for the recovery-strategy tests and the store conformance suite: acting as
 * a worker with any handler names, building outcomes, and checking invariants, through the
 * `Store` interface only (only `setupStore` knows it is SQLite).
 */
import { expect } from "vitest";
import { FakeClock } from "../../src/engine/clock.js";
import { createPlanner } from "../../src/engine/planner.js";
import type { Failure, FailureCategory } from "../../src/model/failure.js";
import { validateStore } from "../../src/state/validate.js";
import type { SqliteStore } from "../../src/store/sqlite/SqliteStore.js";
import type { ClaimedTask, Outcome, Settlement, Store } from "../../src/store/store.js";
import { tempStore } from "./tmp.js";

export const LEASE_MS = 5_000;
/** No jitter: backoffs are exactly what the policy says. */
export const planner = createPlanner({ random: () => 0 });

/** A fresh store on a real SQLite file in a temp dir, on a fake clock. */
export function setupStore(): { clock: FakeClock; store: SqliteStore; path: string } {
  const clock = new FakeClock();
  const { store, path } = tempStore(clock);
  return { clock, store, path };
}

/** One worker round trip: settle `outcomes`, then claim up to `claim` tasks of `handlers`. */
export async function exchange(
  store: Store,
  worker: string,
  handlers: string[],
  claim: number,
  outcomes: Outcome[] = [],
  leaseMs = LEASE_MS,
): Promise<{ settled: Settlement[]; claimed: ClaimedTask[] }> {
  const r = await store.exchange({ workerId: worker, outcomes, claim, leaseMs, handlers, planner });
  return { settled: r.settled, claimed: r.claimed };
}

/** Claims up to `n` tasks of `handlers` for `worker`. */
export async function claimAs(
  store: Store,
  worker: string,
  handlers: string[],
  n: number,
  leaseMs = LEASE_MS,
): Promise<ClaimedTask[]> {
  return (await exchange(store, worker, handlers, n, [], leaseMs)).claimed;
}

/** Reports outcomes for `worker`, claiming nothing; asserts each was applied. */
export async function report(
  store: Store,
  worker: string,
  outcomes: Outcome[],
): Promise<Settlement[]> {
  const { settled } = await exchange(store, worker, [], 0, outcomes);
  for (const s of settled) expect(s, JSON.stringify(s)).toMatchObject({ applied: true });
  return settled;
}

export function completed(t: ClaimedTask, quality?: number): Outcome {
  return {
    kind: "complete",
    taskId: t.id,
    token: t.leaseToken,
    output: { key: t.key },
    ...(quality === undefined ? {} : { quality }),
  };
}

export function failed(
  t: ClaimedTask,
  category: FailureCategory,
  extra: Partial<Failure> = {},
): Outcome {
  const recoverable = !["logic", "data_corruption", "invalid_state", "coordination"].includes(
    category,
  );
  return {
    kind: "fail",
    taskId: t.id,
    token: t.leaseToken,
    failure: { category, recoverable, message: `test ${category} failure`, ...extra },
  };
}

/** The events of one entity's transitions, in order. */
export async function eventsOf(store: Store, entityId: string): Promise<string[]> {
  return (await store.listTransitions({ entityId })).map((t) => t.event);
}

/** Invariant 2 (replay equals state), the hash chain, and every check of `validateStore`. */
export async function expectConsistent(store: Store, clock: FakeClock): Promise<void> {
  expect(await store.replay()).toEqual(await store.snapshot());
  const report = await validateStore(store, clock);
  const failing = report.checks.filter((c) => !c.ok);
  expect(failing, JSON.stringify(failing, null, 2)).toEqual([]);
  expect(report.ok).toBe(true);
}
