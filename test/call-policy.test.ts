/**
 * The in-process call policy (src/recovery/call-policy.ts): retries with Mend's backoff, the
 * in-memory breaker's state machine, timeouts on a fake clock, the caller's signal, option
 * validation, and a property test of half-open probes. No test sleeps: time moves on a FakeClock.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { MendError } from "../src/errors.js";
import type { RetryRule } from "../src/model/spec.js";
import { backoffDelay } from "../src/recovery/backoff.js";
import {
  type BreakerChangeEvent,
  BreakerOpenError,
  type CallContext,
  CallPolicy,
  type CallPolicyOptions,
} from "../src/recovery/call-policy.js";
import { classifyError, TaskTimeoutError } from "../src/recovery/classify.js";

/** Lets pending promise callbacks run (real macrotask turn; no time passes on the fake clock). */
function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** An error Mend classifies as a recoverable network failure. */
function reset(message = "connect ECONNRESET"): Error {
  return Object.assign(new Error(message), { code: "ECONNRESET" });
}

/** An error Mend classifies as a non-recoverable logic failure (a 400 is the caller's fault). */
function badRequest(): Error {
  return Object.assign(new Error("400 Bad Request"), { status: 400 });
}

/** A promise and its settling functions. */
function deferred<T = unknown>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** The outcome of a promise without letting a rejection go unhandled. */
function outcome<T>(promise: Promise<T>) {
  const seen: { done: boolean; value?: T; error?: unknown } = { done: false };
  promise.then(
    (value) => Object.assign(seen, { done: true, value }),
    (error: unknown) => Object.assign(seen, { done: true, error }),
  );
  return seen;
}

function policy(clock: FakeClock, options: CallPolicyOptions = {}): CallPolicy {
  return new CallPolicy({ clock, random: () => 0.5, ...options });
}

/** What `new CallPolicy(options)` refuses with. */
function refusal(options: unknown): MendError {
  try {
    new CallPolicy(options as CallPolicyOptions);
  } catch (err) {
    if (err instanceof MendError) return err;
    throw err;
  }
  throw new Error("expected the options to be refused");
}

describe("CallPolicy: the common path", () => {
  it("returns the value of a sync or async function, and starts no timer without a timeout", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { retry: {}, breaker: {} });
    await expect(p.run(() => 1)).resolves.toBe(1);
    await expect(p.run(async ({ attempt }) => attempt)).resolves.toBe(1);
    expect(clock.pending).toBe(0);
    expect(p.breakerState).toMatchObject({ status: "closed", failures: 0 });
  });

  it("with a timeout, calls that settle within their turn share one zero-delay check", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { timeout: "1s" });
    for (let i = 0; i < 100; i++) await p.run(async () => i);
    expect(clock.pending).toBe(1);
    clock.advance(0);
    expect(clock.pending).toBe(0);
  });

  it("a call still running at the check gets the deadline timer, cleared when it settles", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { timeout: "1s" });
    const gate = deferred<string>();
    const result = p.run(() => gate.promise);
    clock.advance(0);
    expect(clock.pending).toBe(1);
    gate.resolve("done");
    await expect(result).resolves.toBe("done");
    expect(clock.pending).toBe(0);
  });

  it("makes the attempt's signal only when read; it is not aborted after a success", async () => {
    const p = policy(new FakeClock(), { timeout: 1000 });
    const signal = await p.run(({ signal }) => signal);
    expect(signal.aborted).toBe(false);
  });

  it("has no breaker state without a breaker, and exposes its resolved settings", () => {
    const p = policy(new FakeClock(), { retry: "none", breaker: { open: "30s" }, timeout: "2s" });
    expect(p.retry?.maxAttempts).toBe(1);
    expect(p.breakerConfig).toMatchObject({ failureThreshold: 5, openMs: 30_000 });
    expect(p.timeoutMs).toBe(2000);
    expect(policy(new FakeClock()).breakerState).toBeNull();
  });
});

describe("CallPolicy: retries", () => {
  const rule: RetryRule = {
    maxAttempts: 4,
    backoff: "exponential",
    initialMs: 100,
    factor: 2,
    maxDelayMs: 10_000,
    jitter: "none",
  };

  it("retries a recoverable failure after exactly the delays backoffDelay gives", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      retry: { maxAttempts: 4, backoff: "exponential", initial: 100, factor: 2, jitter: "none" },
    });
    const starts: number[] = [];
    const result = outcome(
      p.run(({ attempt }) => {
        starts.push(clock.now());
        if (attempt < 4) throw reset();
        return "ok";
      }),
    );
    await clock.advanceAsync(1000);
    expect(result).toEqual({ done: true, value: "ok" });
    const t0 = starts[0]!;
    const expected = [t0];
    let prev: number | null = null;
    for (let retry = 1; retry <= 3; retry++) {
      prev = backoffDelay(rule, retry, prev, () => 0.5);
      expected.push(expected.at(-1)! + prev);
    }
    expect(starts).toEqual(expected);
    expect(starts.map((t) => t - t0)).toEqual([0, 100, 300, 700]);
  });

  it("rethrows the last error as it was once the attempts are used up", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { retry: { maxAttempts: 3, initial: "10ms", jitter: "none" } });
    const errors = [reset("first"), reset("second"), reset("third")];
    let calls = 0;
    const result = outcome(p.run(() => Promise.reject(errors[calls++])));
    await clock.advanceAsync(100);
    expect(calls).toBe(3);
    expect(result.error).toBe(errors[2]);
  });

  it("does not retry a failure that is not recoverable", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { retry: { maxAttempts: 5, initial: 0 } });
    const error = badRequest();
    let calls = 0;
    await expect(
      p.run(() => {
        calls++;
        throw error;
      }),
    ).rejects.toBe(error);
    expect(calls).toBe(1);
    expect(clock.pending).toBe(0);
  });

  it("follows classification rules, and waits as long as Retry-After asks", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      retry: { maxAttempts: 2, initial: 10, jitter: "none" },
      classify: [{ match: (e) => (e as Error).message === "flaky", category: "tool_failure" }],
    });
    const flaky = new TypeError("flaky"); // a TypeError alone is a logic error: not retried
    const starts: number[] = [];
    const first = outcome(
      p.run(({ attempt }) => {
        starts.push(clock.now());
        if (attempt === 1) throw flaky;
        return attempt;
      }),
    );
    await clock.advanceAsync(10);
    expect(first).toEqual({ done: true, value: 2 });
    expect(starts[1]! - starts[0]!).toBe(10);

    const limited = Object.assign(new Error("429"), {
      status: 429,
      headers: { "Retry-After": "2" },
    });
    starts.length = 0;
    const second = outcome(
      p.run(({ attempt }) => {
        starts.push(clock.now());
        if (attempt === 1) throw limited;
        return attempt;
      }),
    );
    await clock.advanceAsync(2000);
    expect(second).toEqual({ done: true, value: 2 });
    expect(starts[1]! - starts[0]!).toBe(2000);
  });
});

describe("CallPolicy: circuit breaker", () => {
  const breaker = { failureThreshold: 3, open: "10s", halfOpenMaxCalls: 2, successThreshold: 2 };

  async function failTimes(p: CallPolicy, n: number, error: () => Error = reset): Promise<void> {
    for (let i = 0; i < n; i++)
      await expect(p.run(() => Promise.reject(error()))).rejects.toThrow();
  }

  it("opens after the threshold and then refuses at once, with its state, without calling", async () => {
    const clock = new FakeClock();
    const events: BreakerChangeEvent[] = [];
    const p = policy(clock, {
      name: "search-api",
      breaker,
      onBreakerChange: (e) => events.push(e),
    });
    await failTimes(p, 3);
    expect(events).toEqual([
      { from: "closed", to: "open", reason: "3 failures in a row", at: clock.now() },
    ]);
    clock.advance(4000);
    let called = false;
    const error = await p
      .run(() => {
        called = true;
      })
      .catch((err: unknown) => err);
    expect(called).toBe(false);
    expect(error).toBeInstanceOf(BreakerOpenError);
    expect(error).toBeInstanceOf(MendError);
    const refused = error as BreakerOpenError;
    expect(refused.message).toBe(
      'circuit breaker "search-api" is open (3 failures in a row): calls are refused for another 6s',
    );
    expect(refused.code).toBe("refused");
    expect(refused.retryAfterMs).toBe(6000);
    expect(refused.state).toMatchObject({ status: "open", openUntil: clock.now() + 6000 });
    expect(refused.context).toEqual({
      policy: "search-api",
      status: "open",
      openUntil: clock.now() + 6000,
      reason: "3 failures in a row",
    });
    // A task that lets it escape is retried once the breaker may let probes through.
    expect(classifyError(refused)).toMatchObject({
      category: "external_service",
      recoverable: true,
      retryAfterMs: 6000,
    });
  });

  it("goes half-open after its open time and closes after enough successful probes", async () => {
    const clock = new FakeClock();
    const events: BreakerChangeEvent[] = [];
    const p = policy(clock, { breaker, onBreakerChange: (e) => events.push(e) });
    await failTimes(p, 3);
    clock.advance(10_000);
    expect(p.breakerState?.status).toBe("open");
    await expect(p.run(() => "probe 1")).resolves.toBe("probe 1");
    expect(p.breakerState?.status).toBe("half_open");
    await expect(p.run(() => "probe 2")).resolves.toBe("probe 2");
    expect(p.breakerState).toMatchObject({ status: "closed", closedAt: clock.now() });
    expect(events.map((e) => [e.from, e.to, e.reason])).toEqual([
      ["closed", "open", "3 failures in a row"],
      ["open", "half_open", "open time is up: probing"],
      ["half_open", "closed", "2 half-open probes succeeded"],
    ]);
  });

  it("a failed probe opens it again; probes beyond halfOpenMaxCalls are refused", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { breaker });
    await failTimes(p, 3);
    clock.advance(10_000);
    const gates = [deferred(), deferred()];
    const probes = gates.map((g) => outcome(p.run(() => g.promise)));
    const third = await p.run(() => "third").catch((err: unknown) => err);
    expect(third).toBeInstanceOf(BreakerOpenError);
    expect((third as BreakerOpenError).message).toBe(
      "circuit breaker is half-open and all its probes are running (it opened after 3 failures " +
        "in a row): calls are refused until a probe succeeds",
    );
    expect((third as BreakerOpenError).retryAfterMs).toBeUndefined();
    gates[0]!.reject(reset());
    await flush();
    expect(probes[0]!.done).toBe(true);
    expect(p.breakerState).toMatchObject({ status: "open", openUntil: clock.now() + 10_000 });
    gates[1]!.resolve("late");
    await flush();
    expect(probes[1]).toEqual({ done: true, value: "late" });
    expect(p.breakerState?.status).toBe("open");
  });

  it("a success resets the count of failures in a row", async () => {
    const p = policy(new FakeClock(), { breaker });
    await failTimes(p, 2);
    expect(p.breakerState).toMatchObject({ status: "closed", failures: 2 });
    await p.run(() => "ok");
    expect(p.breakerState).toMatchObject({ status: "closed", failures: 0 });
    await failTimes(p, 2);
    expect(p.breakerState?.status).toBe("closed");
  });

  it("does not count failures that are not the dependency's fault", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { breaker });
    await failTimes(p, 5, badRequest);
    expect(p.breakerState).toMatchObject({ status: "closed", failures: 0 });
  });

  it("runs the rate mode of the same state machine", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      breaker: { mode: "rate", minimumCalls: 4, failureRate: 0.5, window: "1m" },
    });
    await p.run(() => 1);
    await p.run(() => 2);
    await failTimes(p, 1);
    expect(p.breakerState?.status).toBe("closed");
    await failTimes(p, 1);
    expect(p.breakerState?.status).toBe("open");
  });

  it("refuses a retry at once when the breaker opened and would still be open when it came due", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      retry: { maxAttempts: 5, initial: "1s", jitter: "none" },
      breaker: { failureThreshold: 2, open: "1m" },
    });
    const errors: Error[] = [];
    const result = outcome(
      p.run(() => {
        errors.push(reset(`failure ${errors.length + 1}`));
        throw errors.at(-1);
      }),
    );
    await clock.advanceAsync(1000);
    expect(errors).toHaveLength(2);
    expect(result.error).toBeInstanceOf(BreakerOpenError);
    expect((result.error as BreakerOpenError).cause).toBe(errors[1]);
    expect(clock.pending).toBe(0);
  });
});

describe("CallPolicy: timeout", () => {
  it("aborts the attempt's signal and rejects with TaskTimeoutError, counted by the breaker", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { name: "search-api", timeout: "1s", breaker: {} });
    let early: AbortSignal | undefined;
    let call: CallContext | undefined;
    const result = outcome(
      p.run((c) => {
        call = c;
        early = c.signal;
        return new Promise(() => {});
      }),
    );
    clock.advance(999);
    await flush();
    expect(result.done).toBe(false);
    expect(early!.aborted).toBe(false);
    clock.advance(1);
    await flush();
    expect(result.error).toBeInstanceOf(TaskTimeoutError);
    const error = result.error as TaskTimeoutError;
    expect(error.message).toBe('"search-api" call timed out after 1s');
    expect(error.timeoutMs).toBe(1000);
    expect(early!.aborted).toBe(true);
    expect(early!.reason).toBe(error);
    // Read only after the timeout, the signal is made aborted.
    expect(call!.signal.aborted).toBe(true);
    expect(classifyError(error).category).toBe("timeout");
    expect(p.breakerState?.failures).toBe(1);
    expect(clock.pending).toBe(0);
  });

  it("signal read only after the timeout is aborted too; a late result is ignored", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { timeout: 50 });
    const gate = deferred<string>();
    let call: CallContext | undefined;
    const result = outcome(
      p.run((c) => {
        call = c;
        return gate.promise;
      }),
    );
    clock.advance(50);
    await flush();
    expect(result.error).toBeInstanceOf(TaskTimeoutError);
    expect(call!.signal.aborted).toBe(true);
    gate.resolve("too late");
    await flush();
    expect(result.value).toBeUndefined();
  });

  it("times out each attempt, and a timed-out attempt is retried", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      timeout: 100,
      retry: { maxAttempts: 2, jitter: "none", on: { timeout: { initial: 20 } } },
    });
    const starts: number[] = [];
    const result = outcome(
      p.run(({ attempt }) => {
        starts.push(clock.now());
        return attempt === 1 ? new Promise<number>(() => {}) : attempt;
      }),
    );
    await clock.advanceAsync(120);
    expect(result).toEqual({ done: true, value: 2 });
    expect(starts.map((t) => t - starts[0]!)).toEqual([0, 120]);
  });

  it("cuts off concurrent attempts each at its own deadline", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { timeout: 100 });
    const hang = () => new Promise<never>(() => {});
    const first = outcome(p.run(hang));
    await clock.advanceAsync(40);
    const second = outcome(p.run(hang));
    await clock.advanceAsync(60);
    expect(first.error).toBeInstanceOf(TaskTimeoutError);
    expect(second.done).toBe(false);
    await clock.advanceAsync(40);
    expect(second.error).toBeInstanceOf(TaskTimeoutError);
    expect(clock.pending).toBe(0);
  });
});

describe("CallPolicy: the caller's signal", () => {
  it("aborting during an attempt rejects with its reason, aborts the attempt, feeds nothing", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { retry: { maxAttempts: 3 }, breaker: { failureThreshold: 1 } });
    const caller = new AbortController();
    let call: CallContext | undefined;
    let calls = 0;
    const result = outcome(
      p.run((c) => {
        calls++;
        call = c;
        return new Promise(() => {});
      }, caller.signal),
    );
    const reason = new Error("task cancelled");
    caller.abort(reason);
    await flush();
    expect(result.error).toBe(reason);
    expect(call!.signal.reason).toBe(reason);
    expect(calls).toBe(1);
    expect(p.breakerState?.status).toBe("closed");
  });

  it("aborting during a retry wait stops it; an aborted signal runs nothing", async () => {
    const clock = new FakeClock();
    const p = policy(clock, { retry: { maxAttempts: 3, initial: "1s" } });
    const caller = new AbortController();
    let calls = 0;
    const result = outcome(
      p.run(() => {
        calls++;
        throw reset();
      }, caller.signal),
    );
    await flush();
    expect(clock.pending).toBe(1);
    caller.abort(new Error("stop"));
    await flush();
    expect((result.error as Error).message).toBe("stop");
    expect(clock.pending).toBe(0);
    await expect(p.run(() => calls++, caller.signal)).rejects.toThrow("stop");
    expect(calls).toBe(1);
  });
});

describe("CallPolicy: options", () => {
  it("refuses bad options whole, listing every problem with its path, in option order", () => {
    const error = refusal({
      timeout: "1 sec",
      retry: { maxAttempts: 0, jiter: "none" },
      breaker: { failureThreshold: 0 },
      name: "",
      classify: [{ match: "x", category: "net" }],
      retries: 3,
    });
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toBe(
      [
        "invalid call policy options:",
        '  - unknown option "retries" (allowed: name, retry, breaker, timeout, classify, clock, random, onBreakerChange)',
        "  - name: must not be empty",
        "  - retry.maxAttempts: must be at least 1, got 0",
        '  - retry: unknown key "jiter" (did you mean "jitter"?)',
        "  - breaker.failureThreshold: Too small: expected number to be >=1",
        '  - timeout: invalid duration "1 sec": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h',
        '  - classify[0].match: expected a function, got "x"',
        '  - classify[0].category: expected a failure category (network, rate_limited, external_service, timeout, resource_exhausted, worker_lost, tool_failure, quality, invalid_state, coordination, logic, data_corruption, unknown), got "net"',
      ].join("\n"),
    );
    expect(error.context.problems).toHaveLength(8);
  });

  it("refuses timeouts and delays no Node.js timer can wait, and what is not an options object", () => {
    expect(refusal({ timeout: 0 }).message).toBe(
      "invalid call policy options:\n  - timeout: must be greater than 0",
    );
    expect(refusal({ timeout: "30d" }).message).toBe(
      "invalid call policy options:\n  - timeout: must be at most 2147483647 ms (about 24.8 days), the longest timer Node.js sets",
    );
    expect(refusal({ retry: { max: "30d" } }).message).toBe(
      "invalid call policy options:\n  - retry.max: must be at most 2147483647 ms (about 24.8 days), the longest timer Node.js sets",
    );
    expect(refusal({ retry: "sometimes" }).message).toBe(
      'invalid call policy options:\n  - retry: unknown retry preset "sometimes" (presets are: default, none, 5m-15m-45m)',
    );
    expect(refusal({ breaker: { successThreshold: 4 } }).message).toBe(
      "invalid call policy options:\n  - breaker: successThreshold must not exceed halfOpenMaxCalls: the breaker could never close again",
    );
    expect(refusal(5).message).toBe("invalid call policy options:\n  - expected an object, got 5");
    expect(refusal({ clock: Date }).message).toBe(
      "invalid call policy options:\n  - clock: expected a Clock (now, setTimeout and clearTimeout functions)",
    );
  });

  it("takes Mend's defaults: the default retry policy and breaker", () => {
    const p = new CallPolicy({ retry: {}, breaker: {} });
    expect(p.retry).toEqual({
      maxAttempts: 3,
      backoff: "exponential",
      initialMs: 1000,
      factor: 2,
      maxDelayMs: 300_000,
      jitter: "full",
    });
    expect(p.breakerConfig).toMatchObject({
      mode: "consecutive",
      failureThreshold: 5,
      openMs: 300_000,
      halfOpenMaxCalls: 3,
      successThreshold: 3,
    });
    expect(p.timeoutMs).toBeNull();
  });

  it("uses a customDelay function for backoff custom", async () => {
    const clock = new FakeClock();
    const p = policy(clock, {
      retry: { maxAttempts: 2, backoff: "custom", customDelay: (n) => n * 70 },
    });
    const starts: number[] = [];
    const result = outcome(
      p.run(({ attempt }) => {
        starts.push(clock.now());
        if (attempt === 1) throw reset();
        return attempt;
      }),
    );
    await clock.advanceAsync(70);
    expect(result).toEqual({ done: true, value: 2 });
    expect(starts[1]! - starts[0]!).toBe(70);
  });
});

describe("CallPolicy: property", () => {
  type Op =
    { k: "start" } | { k: "settle"; index: number; ok: boolean } | { k: "advance"; ms: number };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.constant({ k: "start" as const }),
    fc.record({ k: fc.constant("settle" as const), index: fc.nat(), ok: fc.boolean() }),
    fc.record({ k: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 150 }) }),
  );
  const settingsArb = fc
    .record({
      failureThreshold: fc.integer({ min: 1, max: 3 }),
      halfOpenMaxCalls: fc.integer({ min: 1, max: 3 }),
      successThreshold: fc.integer({ min: 1, max: 3 }),
    })
    .filter((s) => s.successThreshold <= s.halfOpenMaxCalls);

  it("never lets more than halfOpenMaxCalls probes run at once, and refuses only when not closed", async () => {
    await fc.assert(
      fc.asyncProperty(
        settingsArb,
        fc.array(opArb, { maxLength: 60, size: "max" }),
        async (settings, ops) => {
          const clock = new FakeClock();
          const p = policy(clock, { breaker: { ...settings, open: 100 } });
          const running: { probe: boolean; gate: ReturnType<typeof deferred> }[] = [];
          for (const op of ops) {
            if (op.k === "start") {
              const statusBefore = p.breakerState!.status;
              let started = false;
              const gate = deferred();
              const run = p.run(() => {
                started = true;
                const entry = { probe: p.breakerState!.status === "half_open", gate };
                running.push(entry);
                return gate.promise.finally(() => running.splice(running.indexOf(entry), 1));
              });
              run.catch(() => {});
              if (!started) {
                expect(statusBefore).not.toBe("closed");
                await expect(run).rejects.toBeInstanceOf(BreakerOpenError);
              }
            } else if (op.k === "settle" && running.length > 0) {
              const { gate } = running[op.index % running.length]!;
              if (op.ok) gate.resolve(undefined);
              else gate.reject(reset());
            } else if (op.k === "advance") {
              clock.advance(op.ms);
            }
            await flush();
            const probes = running.filter((r) => r.probe).length;
            expect(probes).toBeLessThanOrEqual(settings.halfOpenMaxCalls);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
