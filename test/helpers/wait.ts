/** Polling instead of fixed sleeps. */

/** Resolves after `ms` of real time. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `predicate` every `intervalMs` until it returns a truthy value, which is returned.
 * Rejects with `message` (and the last error the predicate threw, if any) after `timeoutMs`.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  timeoutMs: number,
  message = "condition",
  intervalMs = 25,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const cause = lastError ? ` (last error: ${String(lastError)})` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}${cause}`);
    }
    await sleep(intervalMs);
  }
}
