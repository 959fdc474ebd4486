/**
 * Store-agnostic helpers for the conformance suite: acting as a worker through the `Store`
 * interface only (no SQL, no file paths, no implementation types), and checking invariants.
 */
import { expect } from "vitest";
import type { FakeClock } from "../../src/engine/clock.js";
import { createPlanner } from "../../src/engine/planner.js";
import { MendError } from "../../src/errors.js";
import type { Failure, FailureCategory } from "../../src/model/failure.js";
import type { TaskRecord } from "../../src/model/records.js";
import { validateStore } from "../../src/state/validate.js";
import type {
  Actor,
  ClaimedTask,
  FailurePlanner,
  Outcome,
  Settlement,
  Store,
} from "../../src/store/store.js";

export const LEASE_MS = 5_000;
/** No jitter: backoffs are exactly what the policy says. */
export const planner: FailurePlanner = createPlanner({ random: () => 0 });
export const operator: Actor = { actor: "alice", reason: "testing", command: "mend test" };

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

/** Claims up to `n` tasks of `handlers` (default `work`) for `worker`. */
export async function claimAs(
  store: Store,
  worker: string,
  n: number,
  handlers: string[] = ["work"],
  leaseMs = LEASE_MS,
): Promise<ClaimedTask[]> {
  return (await exchange(store, worker, handlers, n, [], leaseMs)).claimed;
}

/** Claims exactly one task, asserting its key. */
export async function claimKey(
  store: Store,
  key: string,
  worker = "w1",
  handlers: string[] = ["work"],
): Promise<ClaimedTask> {
  const [t] = await claimAs(store, worker, 1, handlers);
  expect(t?.key, `${worker} claims ${key}`).toBe(key);
  return t!;
}

/** Reports outcomes for `worker`, claiming nothing (settlements returned, not asserted). */
export async function settle(store: Store, worker: string, outcomes: Outcome[]) {
  return (await exchange(store, worker, [], 0, outcomes)).settled;
}

/** Reports outcomes for `worker`, asserting each was applied. */
export async function report(store: Store, worker: string, outcomes: Outcome[]) {
  const settled = await settle(store, worker, outcomes);
  for (const s of settled) expect(s, JSON.stringify(s)).toMatchObject({ applied: true });
  return settled;
}

export function completed(t: ClaimedTask, output: unknown = { key: t.key }): Outcome {
  return { kind: "complete", taskId: t.id, token: t.leaseToken, output };
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

export async function byKey(store: Store, ws: string): Promise<Record<string, TaskRecord>> {
  return Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t]));
}

export async function wsStatus(store: Store, ws: string): Promise<string | undefined> {
  return (await store.getWorkstream(ws))?.status;
}

export async function expectRefused(p: Promise<unknown>, code = "refused"): Promise<MendError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MendError);
  expect((err as MendError).code).toBe(code);
  return err as MendError;
}

/** Invariant 2 (replay equals state), the hash chain, and every check of `validateStore`. */
export async function expectConsistent(store: Store, clock: FakeClock): Promise<void> {
  expect(await store.replay()).toEqual(await store.snapshot());
  expect((await store.verifyChain()).ok).toBe(true);
  const validation = await validateStore(store, clock);
  const failing = validation.checks.filter((c) => !c.ok);
  expect(failing, JSON.stringify(failing, null, 2)).toEqual([]);
}
