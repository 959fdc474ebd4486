import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import type { BackoffKind, JitterKind, RetryRule } from "../src/model/spec.js";
import { backoffDelay } from "../src/recovery/backoff.js";

const base: RetryRule = {
  maxAttempts: 10,
  backoff: "exponential",
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 1_000_000,
  jitter: "none",
};
const fixed = (value: number) => () => value;
const series = (rule: Partial<RetryRule>, count: number) =>
  Array.from({ length: count }, (_, i) =>
    backoffDelay({ ...base, ...rule }, i + 1, null, fixed(0)),
  );

describe("backoffDelay shapes (no jitter)", () => {
  it.each<[string, Partial<RetryRule>, number[]]>([
    ["constant", { backoff: "constant" }, [1000, 1000, 1000, 1000]],
    ["linear, factor 1", { backoff: "linear", factor: 1 }, [1000, 2000, 3000, 4000]],
    ["linear, factor 2", { backoff: "linear", factor: 2 }, [1000, 3000, 5000, 7000]],
    ["exponential", { backoff: "exponential" }, [1000, 2000, 4000, 8000]],
    ["exponential, factor 3", { backoff: "exponential", factor: 3 }, [1000, 3000, 9000, 27000]],
    ["fibonacci", { backoff: "fibonacci" }, [1000, 2000, 3000, 5000, 8000, 13000]],
    ["custom falls back to exponential", { backoff: "custom" }, [1000, 2000, 4000, 8000]],
    ["schedule overrides the shape", { scheduleMs: [10, 20, 30] }, [10, 20, 30, 30, 30]],
    ["an empty schedule is ignored", { scheduleMs: [] }, [1000, 2000, 4000]],
    ["cap", { maxDelayMs: 5000 }, [1000, 2000, 4000, 5000, 5000]],
    ["cap on the schedule", { scheduleMs: [100, 9000], maxDelayMs: 5000 }, [100, 5000, 5000]],
  ])("%s", (_label, rule, expected) => {
    expect(series(rule, expected.length)).toEqual(expected);
  });

  it("caps instead of overflowing for huge retry numbers", () => {
    for (const backoff of ["exponential", "fibonacci", "linear"] as const) {
      expect(backoffDelay({ ...base, backoff }, 1_000_000_000, null, fixed(0.5))).toBe(1_000_000);
    }
    expect(backoffDelay({ ...base, initialMs: 0 }, 5000, null, fixed(0.5))).toBe(0);
  });

  it("returns whole milliseconds", () => {
    expect(backoffDelay({ ...base, factor: 1.5 }, 2, null, fixed(0))).toBe(1500);
    expect(backoffDelay({ ...base, factor: 1.5, jitter: "full" }, 3, null, fixed(0.3333))).toBe(
      750,
    );
  });

  it("refuses a retry number below 1 or fractional", () => {
    expect(() => backoffDelay(base, 0, null, fixed(0))).toThrow(MendError);
    expect(() => backoffDelay(base, 1.5, null, fixed(0))).toThrow(MendError);
  });
});

describe("backoffDelay jitter", () => {
  it("applies each jitter to the capped delay", () => {
    const rule = { ...base, maxDelayMs: 3000 };
    expect(backoffDelay({ ...rule, jitter: "full" }, 4, null, fixed(0.5))).toBe(1500);
    expect(backoffDelay({ ...rule, jitter: "equal" }, 4, null, fixed(0))).toBe(1500);
    expect(backoffDelay({ ...rule, jitter: "equal" }, 4, null, fixed(0.5))).toBe(2250);
    expect(backoffDelay({ ...rule, jitter: "full" }, 4, null, fixed(0))).toBe(0);
  });

  it("decorrelated draws from [initial, 3 × previous]", () => {
    const rule: RetryRule = { ...base, jitter: "decorrelated" };
    expect(backoffDelay(rule, 1, null, fixed(0))).toBe(1000);
    expect(backoffDelay(rule, 1, null, fixed(0.5))).toBe(2000);
    expect(backoffDelay(rule, 5, 4000, fixed(0.5))).toBe(6500);
    expect(backoffDelay({ ...rule, maxDelayMs: 5000 }, 5, 4000, fixed(0.99))).toBe(5000);
    // A previous delay under initial / 3 must not pull the delay below initial.
    expect(backoffDelay(rule, 2, 100, fixed(0.5))).toBe(1000);
  });

  const kinds: BackoffKind[] = ["constant", "linear", "exponential", "fibonacci", "custom"];
  const rules = fc.record({
    maxAttempts: fc.constant(5),
    backoff: fc.constantFrom(...kinds),
    initialMs: fc.integer({ min: 0, max: 100_000 }),
    factor: fc.double({ min: 0, max: 10, noNaN: true }),
    maxDelayMs: fc.integer({ min: 0, max: 10_000_000 }),
    jitter: fc.constantFrom<JitterKind>("none", "full", "equal", "decorrelated"),
    scheduleMs: fc.option(fc.array(fc.integer({ min: 0, max: 20_000_000 }), { maxLength: 4 }), {
      nil: undefined,
    }),
  });
  const retryNumbers = fc.integer({ min: 1, max: 2000 });
  const prevs = fc.option(fc.integer({ min: 0, max: 20_000_000 }), { nil: null });
  const randoms = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
  const unjittered = (rule: RetryRule, n: number) =>
    backoffDelay({ ...rule, jitter: "none" }, n, null, fixed(0));

  it("always returns a whole number within [0, maxDelayMs]", () => {
    fc.assert(
      fc.property(rules, retryNumbers, prevs, randoms, (rule, n, prev, r) => {
        const delay = backoffDelay(rule, n, prev, fixed(r));
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(rule.maxDelayMs);
      }),
    );
  });

  it("full jitter never exceeds the un-jittered delay", () => {
    fc.assert(
      fc.property(rules, retryNumbers, randoms, (rule, n, r) => {
        const full = { ...rule, jitter: "full" as const };
        expect(backoffDelay(full, n, null, fixed(r))).toBeLessThanOrEqual(unjittered(rule, n));
      }),
    );
  });

  it("equal jitter stays within [d/2, d]", () => {
    fc.assert(
      fc.property(rules, retryNumbers, randoms, (rule, n, r) => {
        const d = unjittered(rule, n);
        const delay = backoffDelay({ ...rule, jitter: "equal" }, n, null, fixed(r));
        expect(delay).toBeGreaterThanOrEqual(Math.floor(d / 2));
        expect(delay).toBeLessThanOrEqual(d);
      }),
    );
  });

  it("decorrelated stays within [initial, min(max, 3 × prev)]", () => {
    fc.assert(
      fc.property(rules, retryNumbers, prevs, randoms, (rule, n, prev, r) => {
        const delay = backoffDelay({ ...rule, jitter: "decorrelated" }, n, prev, fixed(r));
        const low = Math.min(rule.initialMs, rule.maxDelayMs);
        const high = Math.min(
          rule.maxDelayMs,
          Math.max(rule.initialMs, 3 * (prev ?? rule.initialMs)),
        );
        expect(delay).toBeGreaterThanOrEqual(low);
        expect(delay).toBeLessThanOrEqual(high);
      }),
    );
  });

  it("jitter spreads delays: different random values give different delays", () => {
    const rule: RetryRule = { ...base, jitter: "full" };
    const delays = new Set([0, 0.25, 0.5, 0.75].map((r) => backoffDelay(rule, 3, null, fixed(r))));
    expect(delays.size).toBe(4);
  });
});
