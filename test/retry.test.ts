import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import { type Failure, failure } from "../src/model/failure.js";
import type { RetryPolicy } from "../src/model/spec.js";
import {
  DEFAULT_RETRY,
  type FailureDecision,
  type PlanFailureInput,
  planFailure,
  RETRY_PRESETS,
  ruleFor,
} from "../src/recovery/retry.js";

const now = Date.UTC(2026, 0, 1);
const network = failure("network", true, "connect ECONNRESET", { code: "ECONNRESET" });
const noJitter: RetryPolicy = { ...DEFAULT_RETRY, jitter: "none" };

function plan(overrides: Partial<PlanFailureInput> = {}): FailureDecision {
  return planFailure({
    attempt: 1,
    policy: noJitter,
    failure: network,
    lastDelayMs: null,
    workerLostStreak: 0,
    now,
    random: () => 0.5,
    ...overrides,
  });
}

function retryDelay(decision: FailureDecision): number {
  if (decision.action !== "retry") throw new Error(`expected a retry, got ${decision.action}`);
  expect(decision.runAt).toBe(now + decision.delayMs);
  return decision.delayMs;
}

describe("DEFAULT_RETRY and presets", () => {
  it("has the documented default", () => {
    expect(DEFAULT_RETRY).toEqual({
      maxAttempts: 3,
      backoff: "exponential",
      initialMs: 1000,
      factor: 2,
      maxDelayMs: 300_000,
      jitter: "full",
    });
    expect(RETRY_PRESETS["default"]).toEqual(DEFAULT_RETRY);
  });

  it("5m-15m-45m retries after 5, 15 and 45 minutes, then fails", () => {
    const policy = RETRY_PRESETS["5m-15m-45m"]!;
    const delays = [1, 2, 3].map((attempt) => retryDelay(plan({ attempt, policy })));
    expect(delays).toEqual([300_000, 900_000, 2_700_000]);
    expect(plan({ attempt: 4, policy })).toEqual({
      action: "fail",
      reason: "retries exhausted after 4 attempts",
    });
  });

  it("none fails after the first attempt", () => {
    expect(plan({ policy: RETRY_PRESETS["none"]! }).action).toBe("fail");
  });

  it("presets cannot be changed by accident", () => {
    expect(() => {
      (DEFAULT_RETRY as { maxAttempts: number }).maxAttempts = 99;
    }).toThrow(TypeError);
  });
});

describe("ruleFor", () => {
  it("uses the base rule for categories without defaults", () => {
    expect(ruleFor(noJitter, "network")).toEqual(noJitter);
  });

  it("applies the built-in timeout and worker_lost defaults", () => {
    expect(ruleFor(DEFAULT_RETRY, "timeout")).toMatchObject({
      backoff: "exponential",
      initialMs: 2000,
      factor: 2,
      jitter: "none",
      maxAttempts: 3,
    });
    expect(ruleFor(DEFAULT_RETRY, "worker_lost")).toMatchObject({
      backoff: "constant",
      initialMs: 0,
    });
  });

  it("a worker_lost retry ignores the base schedule", () => {
    const rule = ruleFor(RETRY_PRESETS["5m-15m-45m"]!, "worker_lost");
    expect(rule.scheduleMs).toBeUndefined();
    expect(rule.maxAttempts).toBe(4);
  });

  it("the policy's own category setting replaces the built-in default entirely", () => {
    const policy: RetryPolicy = { ...noJitter, categories: { timeout: { maxAttempts: 7 } } };
    expect(ruleFor(policy, "timeout")).toEqual({ ...noJitter, maxAttempts: 7 });
  });

  it("keeps a schedule given with the override, and the base schedule when no shape is named", () => {
    const policy: RetryPolicy = {
      ...noJitter,
      scheduleMs: [5],
      categories: {
        network: { maxAttempts: 2 },
        rate_limited: { backoff: "constant", scheduleMs: [60_000] },
      },
    };
    expect(ruleFor(policy, "network").scheduleMs).toEqual([5]);
    expect(ruleFor(policy, "rate_limited").scheduleMs).toEqual([60_000]);
    expect(ruleFor(policy, "external_service").scheduleMs).toEqual([5]);
  });
});

describe("planFailure", () => {
  it("retries with exponential backoff until attempts run out", () => {
    expect(retryDelay(plan({ attempt: 1 }))).toBe(1000);
    expect(retryDelay(plan({ attempt: 2 }))).toBe(2000);
    expect(plan({ attempt: 3 })).toEqual({
      action: "fail",
      reason: "retries exhausted after 3 attempts",
    });
    expect(plan({ attempt: 1, policy: { ...noJitter, maxAttempts: 1 } }).reason).toBe(
      "retries exhausted after 1 attempt",
    );
  });

  it("says why and when in the retry reason", () => {
    expect(plan({ attempt: 2 })).toEqual({
      action: "retry",
      runAt: now + 2000,
      delayMs: 2000,
      reason: "network failure; retry 2 of 2 in 2s",
    });
  });

  it("uses the injected random source for jitter", () => {
    const policy: RetryPolicy = { ...DEFAULT_RETRY, jitter: "full" };
    expect(retryDelay(plan({ policy, random: () => 0.25 }))).toBe(250);
    expect(retryDelay(plan({ policy, random: () => 0.75 }))).toBe(750);
  });

  it("passes the last delay to decorrelated jitter", () => {
    const policy: RetryPolicy = { ...DEFAULT_RETRY, jitter: "decorrelated" };
    expect(retryDelay(plan({ policy, attempt: 2, lastDelayMs: 2000 }))).toBe(3500);
  });

  it("fails a non-recoverable failure at once", () => {
    const logic = failure("logic", false, "x is not a function", { name: "TypeError" });
    expect(plan({ attempt: 1, failure: logic })).toEqual({
      action: "fail",
      reason: "not recoverable: logic",
    });
  });

  it("honours Retry-After when it is longer than the backoff", () => {
    const limited = (retryAfterMs: number): Failure =>
      failure("rate_limited", true, "slow down", { status: 429, retryAfterMs });
    const longer = plan({ failure: limited(30_000) });
    expect(retryDelay(longer)).toBe(30_000);
    expect(longer.reason).toBe("rate_limited failure; retry 1 of 2 in 30s as asked by Retry-After");
    expect(retryDelay(plan({ failure: limited(10) }))).toBe(1000);
  });

  it("caps Retry-After at maxDelayMs", () => {
    const limited = failure("rate_limited", true, "slow down", { retryAfterMs: 86_400_000 });
    expect(retryDelay(plan({ failure: limited }))).toBe(300_000);
  });

  it("re-runs a task whose worker was lost at once, and quarantines it at 3 in a row", () => {
    const lost = failure("worker_lost", true, "lease expired");
    const first = plan({ attempt: 1, policy: DEFAULT_RETRY, failure: lost, workerLostStreak: 1 });
    expect(first).toEqual({
      action: "retry",
      runAt: now,
      delayMs: 0,
      reason: "worker_lost failure; retry 1 of 2 at once",
    });
    expect(retryDelay(plan({ attempt: 2, failure: lost, workerLostStreak: 2 }))).toBe(0);
    const roomy = { ...DEFAULT_RETRY, maxAttempts: 10 };
    expect(plan({ attempt: 3, policy: roomy, failure: lost, workerLostStreak: 3 })).toEqual({
      action: "quarantine",
      reason: "lost its worker 3 times in a row; quarantined instead of retried",
    });
    expect(
      plan({ attempt: 2, policy: roomy, failure: lost, workerLostStreak: 2, quarantineAfter: 2 })
        .action,
    ).toBe("quarantine");
  });

  it("does not quarantine other failures whatever the streak", () => {
    expect(plan({ workerLostStreak: 5 }).action).toBe("retry");
  });

  it("backs timeouts off 2 s, 4 s by default", () => {
    const timeout = failure("timeout", true, "timed out");
    const policy: RetryPolicy = { ...DEFAULT_RETRY, maxAttempts: 5 };
    const delays = [1, 2, 3].map((attempt) =>
      retryDelay(plan({ attempt, policy, failure: timeout })),
    );
    expect(delays).toEqual([2000, 4000, 8000]);
  });

  it("applies a per-category override", () => {
    const policy: RetryPolicy = {
      ...noJitter,
      categories: { rate_limited: { maxAttempts: 6, backoff: "constant", initialMs: 60_000 } },
    };
    const limited = failure("rate_limited", true, "slow down");
    expect(retryDelay(plan({ attempt: 5, policy, failure: limited }))).toBe(60_000);
    expect(plan({ attempt: 6, policy, failure: limited }).action).toBe("fail");
    expect(plan({ attempt: 3, policy, failure: network }).action).toBe("fail");
  });

  it("uses customDelay for custom backoff, capped, and exponential without it", () => {
    const policy: RetryPolicy = { ...noJitter, backoff: "custom", maxAttempts: 5 };
    const calls: [number, Failure][] = [];
    const customDelay = (n: number, f: Failure) => {
      calls.push([n, f]);
      return n * 111;
    };
    expect(retryDelay(plan({ attempt: 2, policy, customDelay }))).toBe(222);
    expect(calls).toEqual([[2, network]]);
    expect(retryDelay(plan({ policy, customDelay: () => 1e12 }))).toBe(300_000);
    expect(retryDelay(plan({ policy, customDelay: () => -5 }))).toBe(0);
    expect(retryDelay(plan({ attempt: 3, policy }))).toBe(4000);
    expect(() => plan({ policy, customDelay: () => Number.NaN })).toThrow(MendError);
  });

  it("refuses an attempt number below 1", () => {
    expect(() => plan({ attempt: 0 })).toThrow(MendError);
  });
});
