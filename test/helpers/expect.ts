/** Assertions shared by the store-level tests. */
import { expect } from "vitest";
import { MendError } from "../../src/errors.js";
import type { Store } from "../../src/store/store.js";

/** Invariant 2 and the hash chain: replay rebuilds exactly the state, and the chain verifies. */
export async function expectReplayable(store: Store): Promise<void> {
  expect(await store.replay()).toEqual(await store.snapshot());
  expect((await store.verifyChain()).ok).toBe(true);
}

/** What a refused operation must leave as it was: the state, the log and the interventions. */
export async function written(store: Store) {
  return {
    snapshot: await store.snapshot(),
    log: (await store.listTransitions()).length,
    interventions: (await store.listInterventions()).length,
  };
}

/** Asserts `p` rejects with a MendError of `code` (and a message matching `message`). */
export async function expectError(
  p: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<MendError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MendError);
  expect((err as MendError).code, (err as MendError).message).toBe(code);
  if (message) expect((err as MendError).message).toMatch(message);
  return err as MendError;
}
