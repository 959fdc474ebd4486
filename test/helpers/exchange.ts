/** Acting as a worker against a store: claiming tasks and reporting their outcomes. */
import { expect } from "vitest";
import { createPlanner } from "../../src/engine/planner.js";
import type { ClaimedTask, Outcome, Settlement, Store } from "../../src/store/store.js";
import { failureOf } from "./specs.js";

export const LEASE_MS = 5_000;
const planner = createPlanner({ random: () => 0 });

/** Claims up to `n` ready tasks for `worker`. */
export async function claim(store: Store, n: number, worker = "w1"): Promise<ClaimedTask[]> {
  const r = await store.exchange({
    workerId: worker,
    outcomes: [],
    claim: n,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    planner,
  });
  return r.claimed;
}

/** Claims exactly the ready tasks with these keys (asserting they are the ones claimed). */
export async function start(store: Store, keys: string[], worker = "w1"): Promise<ClaimedTask[]> {
  const claimed = await claim(store, keys.length, worker);
  expect(claimed.map((t) => t.key).sort()).toEqual([...keys].sort());
  return keys.map((k) => claimed.find((t) => t.key === k)!);
}

/** Reports outcomes for `worker`, claiming nothing. */
export async function settle(
  store: Store,
  outcomes: Outcome[],
  worker = "w1",
): Promise<Settlement[]> {
  const r = await store.exchange({
    workerId: worker,
    outcomes,
    claim: 0,
    leaseMs: LEASE_MS,
    handlers: ["work"],
    planner,
  });
  return r.settled;
}

export function complete(t: ClaimedTask): Outcome {
  return { kind: "complete", taskId: t.id, token: t.leaseToken, output: { ok: t.key } };
}

/** A permanent (not recoverable) failure, so the task ends `failed` at once. */
export function fail(t: ClaimedTask): Outcome {
  return { kind: "fail", taskId: t.id, token: t.leaseToken, failure: failureOf("logic", false) };
}

/** Claims the tasks with these keys and completes them. */
export async function runToCompletion(store: Store, keys: string[]): Promise<void> {
  const claimed = await start(store, keys);
  const settled = await settle(store, claimed.map(complete));
  expect(settled.every((s) => s.applied)).toBe(true);
}
