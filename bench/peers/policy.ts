/**
 * The cost of a call policy: a no-op async call wrapped in retry + circuit breaker + timeout,
 * Mend's CallPolicy against cockatiel's `wrap(retry, circuitBreaker, timeout)`, in nanoseconds per
 * call. Both are configured alike: up to 4 attempts (cockatiel's `maxAttempts: 3` counts retries)
 * with exponential backoff, a breaker opening after 5 failures in a row and probing after 10 s,
 * and a 1 s timeout. Cockatiel's cooperative timeout only aborts the signal; Mend's also rejects,
 * which is more work, not less.
 *
 * Run on its own for a quick look: `npx tsx bench/peers/policy.ts [--calls N] [--rounds N]`
 * (after `npm run build`: Mend comes from dist/).
 */
import {
  circuitBreaker,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleAll,
  retry,
  timeout,
  TimeoutStrategy,
  wrap,
} from "cockatiel";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CallPolicy } from "../../dist/index.js";
import { median } from "../stats.js";

const { version: COCKATIEL_VERSION } = createRequire(import.meta.url)("cockatiel/package.json") as {
  version: string;
};

/** Calls per round and rounds, unless the caller says otherwise. */
const CALLS = 200_000;
const ROUNDS = 5;
/** Calls each implementation makes before any round is timed, so both run optimized code. */
const WARM_UP = 50_000;

/** Median ns per call of each implementation, over rounds of `calls` calls each. */
export interface PolicyOverhead {
  mend: number;
  cockatiel: number;
  /** The same for a call that reads its abort signal (which costs Mend an `AbortController`). */
  withSignal: { mend: number; cockatiel: number };
  /** Calls per round. */
  calls: number;
  /** The peer's version, e.g. `cockatiel 3.2.1`. */
  version: string;
}

const noop = async (): Promise<void> => undefined;
/** A no-op that, like any call that can be cancelled, reads its signal. */
const reads = async ({ signal }: { signal: AbortSignal }): Promise<void> => void signal.aborted;

function mendPolicy(fn: typeof reads = noop): () => Promise<void> {
  const policy = new CallPolicy({
    retry: {
      maxAttempts: 4,
      backoff: "exponential",
      initial: "128ms",
      max: "30s",
      jitter: "decorrelated",
    },
    breaker: { failureThreshold: 5, open: "10s", halfOpenMaxCalls: 1, successThreshold: 1 },
    timeout: 1000,
  });
  return () => policy.run(fn);
}

function cockatielPolicy(fn: typeof reads = noop): () => Promise<void> {
  const policy = wrap(
    retry(handleAll, { maxAttempts: 3, backoff: new ExponentialBackoff() }),
    circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
    timeout(1000, TimeoutStrategy.Cooperative),
  );
  return () => policy.execute(fn);
}

/** Nanoseconds per call of `n` sequential calls. */
async function timeCalls(call: () => Promise<void>, n: number): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await call();
  return Number(process.hrtime.bigint() - start) / n;
}

/**
 * Measures both policies, each for a call that ignores its signal and one that reads it, in the
 * same process: a warm-up, then `rounds` rounds in which each runs `calls` calls, taking turns at
 * going first.
 */
export async function policyOverhead(
  options: { calls?: number; rounds?: number } = {},
): Promise<PolicyOverhead> {
  const calls = options.calls ?? CALLS;
  const rounds = options.rounds ?? ROUNDS;
  const subjects = {
    mend: mendPolicy(),
    cockatiel: cockatielPolicy(),
    mendSignal: mendPolicy(reads),
    cockatielSignal: cockatielPolicy(reads),
  };
  type Name = keyof typeof subjects;
  const names = Object.keys(subjects) as Name[];
  for (const name of names) await timeCalls(subjects[name], WARM_UP);
  const times = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
  for (let round = 0; round < rounds; round++) {
    // Each round starts with the next one, so none always runs first.
    const order = names.map((_, i) => names[(i + round) % names.length]!);
    for (const name of order) times[name].push(await timeCalls(subjects[name], calls));
  }
  return {
    mend: median(times.mend),
    cockatiel: median(times.cockatiel),
    withSignal: { mend: median(times.mendSignal), cockatiel: median(times.cockatielSignal) },
    calls,
    version: `cockatiel ${COCKATIEL_VERSION}`,
  };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      calls: { type: "string", default: String(CALLS) },
      rounds: { type: "string", default: String(ROUNDS) },
    },
  });
  const result = await policyOverhead({
    calls: Number(values.calls),
    rounds: Number(values.rounds),
  });
  const ns = (n: number) => `${n.toFixed(0)} ns`;
  console.log(
    `no-op call under retry + breaker + timeout, median of ${values.rounds} rounds of ${result.calls} calls:\n` +
      `  Mend ${ns(result.mend)} per call, ${result.version} ${ns(result.cockatiel)} per call: ` +
      `Mend takes ${(result.mend / result.cockatiel).toFixed(3)}× cockatiel's time\n` +
      `  reading its signal: Mend ${ns(result.withSignal.mend)}, cockatiel ${ns(result.withSignal.cockatiel)}`,
  );
}
