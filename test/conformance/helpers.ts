/**
 * Store-agnostic helpers for the conformance suite, beside the shared ones it re-exports from
 * test/helpers/recovery.ts: everything goes through the `Store` interface only.
 */
import { expect } from "vitest";
import { MendError } from "../../src/errors.js";
import type { TaskRecord } from "../../src/model/records.js";
import type { Actor, ClaimedTask, Outcome, Store } from "../../src/store/store.js";
import { expectError } from "../helpers/expect.js";
import { claimAs, exchange } from "../helpers/recovery.js";

export {
  claimAs,
  eventsOf,
  expectConsistent,
  failed,
  LEASE_MS,
  planner,
  report,
} from "../helpers/recovery.js";
export const operator: Actor = { actor: "alice", reason: "testing", command: "mend test" };

/** Claims exactly one task, asserting its key. */
export async function claimKey(
  store: Store,
  key: string,
  worker = "w1",
  handlers: string[] = ["work"],
): Promise<ClaimedTask> {
  const [t] = await claimAs(store, worker, handlers, 1);
  expect(t?.key, `${worker} claims ${key}`).toBe(key);
  return t!;
}

/** Reports outcomes for `worker`, claiming nothing (settlements returned, not asserted). */
export async function settle(store: Store, worker: string, outcomes: Outcome[]) {
  return (await exchange(store, worker, [], 0, outcomes)).settled;
}

/** A completion of `t` with the given output. */
export function completed(t: ClaimedTask, output: unknown = { key: t.key }): Outcome {
  return { kind: "complete", taskId: t.id, token: t.leaseToken, output };
}

export async function byKey(store: Store, ws: string): Promise<Record<string, TaskRecord>> {
  return Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t]));
}

export async function wsStatus(store: Store, ws: string): Promise<string | undefined> {
  return (await store.getWorkstream(ws))?.status;
}

export function expectRefused(p: Promise<unknown>, code = "refused"): Promise<MendError> {
  return expectError(p, code);
}
