/**
 * The circuit breaker's pure state machine (src/recovery/breaker.ts): consecutive and rate modes,
 * half-open probes, forced opening, and a property test over random outcome/time sequences.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { BreakerConfig } from "../src/model/spec.js";
import { BREAKER_STATUSES, canTransition, TRANSITIONS } from "../src/model/states.js";
import {
  type BreakerState,
  closedState,
  countsForBreaker,
  DEFAULT_BREAKER,
  dueForProbe,
  halfOpenState,
  openState,
  probeSlots,
  recordOutcome,
} from "../src/recovery/breaker.js";

const T0 = Date.UTC(2026, 0, 1);

function config(over: Partial<BreakerConfig> = {}): BreakerConfig {
  return {
    ...DEFAULT_BREAKER,
    failureThreshold: 3,
    openMs: 10_000,
    halfOpenMaxCalls: 2,
    successThreshold: 2,
    ...over,
  };
}

/** Feeds outcomes (true = success) one by one at `now`; returns the final state and the changes. */
function feed(cfg: BreakerConfig, start: BreakerState, outcomes: boolean[], now = T0) {
  let state = start;
  const changes: string[] = [];
  for (const ok of outcomes) {
    const step = recordOutcome(cfg, state, ok, now);
    if (step.change) changes.push(step.change.to);
    state = step.state;
  }
  return { state, changes };
}

describe("countsForBreaker", () => {
  it("counts recoverable failures, but not a lost worker nor a non-recoverable one", () => {
    const f = (category: string, recoverable: boolean) =>
      countsForBreaker({ category, recoverable, message: "" } as never);
    expect(f("network", true)).toBe(true);
    expect(f("external_service", true)).toBe(true);
    expect(f("rate_limited", true)).toBe(true);
    expect(f("timeout", true)).toBe(true);
    expect(f("logic", false)).toBe(false);
    expect(f("worker_lost", true)).toBe(false);
    expect(f("tool_failure", false)).toBe(false);
  });
});

describe("consecutive mode", () => {
  it("opens at the threshold, with the open time set from now", () => {
    const cfg = config();
    const two = feed(cfg, closedState(null), [false, false]);
    expect(two.state).toMatchObject({ status: "closed", failures: 2 });
    expect(two.changes).toEqual([]);
    const step = recordOutcome(cfg, two.state, false, T0 + 5);
    expect(step.change).toEqual({ to: "open", reason: "3 failures in a row" });
    expect(step.state).toEqual({
      status: "open",
      openedAt: T0 + 5,
      openUntil: T0 + 5 + 10_000,
      forced: false,
      closedAt: null,
      failures: 0,
      successes: 0,
      window: [],
    });
  });

  it("a success resets the count", () => {
    const cfg = config();
    const r = feed(cfg, closedState(null), [false, false, true, false, false]);
    expect(r.state).toMatchObject({ status: "closed", failures: 2 });
    expect(r.changes).toEqual([]);
    expect(feed(cfg, r.state, [false]).changes).toEqual(["open"]);
  });

  it("a threshold of 1 opens on the first failure", () => {
    expect(feed(config({ failureThreshold: 1 }), closedState(null), [false]).changes).toEqual([
      "open",
    ]);
  });
});

describe("rate mode", () => {
  const rate = config({ mode: "rate", failureRate: 0.5, windowMs: 10_000, minimumCalls: 4 });

  it("does not open before minimumCalls outcomes, however many failed", () => {
    const r = feed(rate, closedState(null), [false, false, false]);
    expect(r.state.status).toBe("closed");
    expect(r.state.window.reduce((n, b) => n + b[1], 0)).toBe(3);
    const step = recordOutcome(rate, r.state, false, T0);
    expect(step.change?.to).toBe("open");
    expect(step.change?.reason).toBe("4 of 4 calls failed in the last 10 s");
  });

  it("opens when the share of failures reaches the rate, and only on a failure", () => {
    // 2 successes then 2 failures: 2 of 4 = 0.5 ≥ 0.5 at the 4th outcome.
    expect(feed(rate, closedState(null), [true, true, false, false]).changes).toEqual(["open"]);
    // 3 successes, 1 failure: 0.25 < 0.5.
    const r = feed(rate, closedState(null), [true, true, true, false]);
    expect(r.changes).toEqual([]);
    // A success never opens it, even above minimumCalls.
    expect(recordOutcome(rate, r.state, true, T0).change).toBeNull();
  });

  it("outcomes older than the window no longer count", () => {
    const old = feed(rate, closedState(null), [false, false, false]);
    // A window later, the three failures have slid out: one more failure is 1 call.
    const later = recordOutcome(rate, old.state, false, T0 + 10_000 + 1_000);
    expect(later.change).toBeNull();
    expect(later.state.window.reduce((n, b) => n + b[1], 0)).toBe(1);
    // Within the window they still count.
    expect(recordOutcome(rate, old.state, false, T0 + 5_000).change?.to).toBe("open");
  });
});

describe("half-open", () => {
  const cfg = config();
  const opened = openState(cfg, T0);

  it("closes after successThreshold successes", () => {
    const half = halfOpenState(opened);
    expect(half).toMatchObject({ status: "half_open", successes: 0, failures: 0, window: [] });
    const one = recordOutcome(cfg, half, true, T0 + 10_000);
    expect(one.change).toBeNull();
    expect(one.state).toMatchObject({ status: "half_open", successes: 1 });
    const two = recordOutcome(cfg, one.state, true, T0 + 10_001);
    expect(two.change).toEqual({ to: "closed", reason: "2 half-open probes succeeded" });
    expect(two.state).toEqual(closedState(T0 + 10_001));
  });

  it("reopens on a failure, for another open time from now", () => {
    const half = recordOutcome(cfg, halfOpenState(opened), true, T0 + 10_000).state;
    const step = recordOutcome(cfg, half, false, T0 + 12_000);
    expect(step.change).toEqual({ to: "open", reason: "a half-open probe failed" });
    expect(step.state).toMatchObject({
      status: "open",
      openedAt: T0 + 12_000,
      openUntil: T0 + 22_000,
    });
  });

  it("probe slots are halfOpenMaxCalls minus the running ones, never negative", () => {
    expect(probeSlots(cfg, 0)).toBe(2);
    expect(probeSlots(cfg, 1)).toBe(1);
    expect(probeSlots(cfg, 2)).toBe(0);
    expect(probeSlots(cfg, 5)).toBe(0);
  });
});

describe("open", () => {
  const cfg = config();

  it("ignores outcomes (calls that started before it opened)", () => {
    const opened = openState(cfg, T0);
    for (const ok of [true, false]) {
      const step = recordOutcome(cfg, opened, ok, T0 + 1);
      expect(step.change).toBeNull();
      expect(step.state).toBe(opened);
    }
  });

  it("is due for a probe at and after openUntil, not before", () => {
    const opened = openState(cfg, T0);
    expect(dueForProbe(opened, T0 + 9_999)).toBe(false);
    expect(dueForProbe(opened, T0 + 10_000)).toBe(true);
    expect(dueForProbe(opened, T0 + 99_999)).toBe(true);
    expect(dueForProbe(closedState(null), T0 + 99_999)).toBe(false);
    expect(dueForProbe(halfOpenState(opened), T0 + 99_999)).toBe(false);
  });

  it("forced open is never due for a probe", () => {
    const forced = openState(cfg, T0, true);
    expect(forced).toMatchObject({ status: "open", forced: true, openUntil: null });
    expect(dueForProbe(forced, T0 + 10_000)).toBe(false);
    expect(dueForProbe(forced, Number.MAX_SAFE_INTEGER)).toBe(false);
  });
});

// ------------------------------------------------------------------ property

type Op = { k: "outcome"; ok: boolean; dt: number } | { k: "probe"; dt: number };
/** An outcome repeated `times` (a burst of successes or failures), the first `dt` after the last op. */
type GenOp = { k: "outcome"; ok: boolean; dt: number; times: number } | { k: "probe"; dt: number };

const cfgArb: fc.Arbitrary<BreakerConfig> = fc.record({
  mode: fc.constantFrom("consecutive" as const, "rate" as const),
  failureThreshold: fc.integer({ min: 1, max: 5 }),
  failureRate: fc.double({ min: 0.1, max: 1, noNaN: true }),
  windowMs: fc.integer({ min: 1, max: 20_000 }),
  minimumCalls: fc.integer({ min: 1, max: 6 }),
  openMs: fc.integer({ min: 1, max: 8_000 }),
  halfOpenMaxCalls: fc.integer({ min: 1, max: 4 }),
  successThreshold: fc.integer({ min: 1, max: 3 }),
});

const opArb: fc.Arbitrary<GenOp> = fc.oneof(
  {
    arbitrary: fc.record({
      k: fc.constant("outcome" as const),
      ok: fc.boolean(),
      dt: fc.integer({ min: 0, max: 3_000 }),
      times: fc.integer({ min: 1, max: 4 }),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("probe" as const),
      dt: fc.integer({ min: 0, max: 8_000 }),
    }),
    weight: 2,
  },
);

describe("breaker state machine (property)", () => {
  it("moves only along TRANSITIONS.breaker and opens only on enough evidence", () => {
    // Which changes the runs went through, so the property is known not to hold vacuously.
    const seen = new Set<string>();
    fc.assert(
      fc.property(cfgArb, fc.array(opArb, { maxLength: 80 }), (cfg, generated) => {
        const ops: Op[] = generated.flatMap((op): Op[] =>
          op.k === "probe"
            ? [op]
            : Array.from({ length: op.times }, (_, i) => ({
                k: "outcome" as const,
                ok: op.ok,
                dt: i === 0 ? op.dt : 0,
              })),
        );
        let state = closedState(null);
        let now = T0;
        // Counted failures since the last success or (re)close, for consecutive mode.
        let failuresInARow = 0;
        // Times of the outcomes fed while closed since the last close, for rate mode.
        let calls: number[] = [];
        for (const op of ops) {
          now += op.dt;
          const before = state.status;
          if (op.k === "probe") {
            const due = dueForProbe(state, now);
            if (due) {
              expect(state.status).toBe("open");
              expect(state.forced).toBe(false);
              expect(state.openUntil).not.toBeNull();
              expect(now).toBeGreaterThanOrEqual(state.openUntil!);
              state = halfOpenState(state);
              seen.add(`${before}->${state.status}`);
              expect(canTransition("breaker", before, state.status)).toBe(true);
            }
            continue;
          }
          const step = recordOutcome(cfg, state, op.ok, now);
          const after = step.state.status;
          expect(BREAKER_STATUSES).toContain(after);
          if (step.change) {
            expect(after).toBe(step.change.to);
            seen.add(`${cfg.mode}:${before}->${after}`);
            expect(TRANSITIONS.breaker[before] as readonly string[]).toContain(after);
          } else {
            expect(after).toBe(before);
          }
          // An open breaker is left only through dueForProbe, never by an outcome.
          if (before === "open") expect(after).toBe("open");
          if (before === "closed") {
            if (op.ok) failuresInARow = 0;
            else failuresInARow++;
            calls.push(now);
            if (after === "open") {
              expect(op.ok).toBe(false);
              if (cfg.mode === "consecutive") {
                expect(failuresInARow).toBeGreaterThanOrEqual(cfg.failureThreshold);
              } else {
                const recent = calls.filter((t) => t > now - cfg.windowMs).length;
                expect(recent).toBeGreaterThanOrEqual(cfg.minimumCalls);
              }
            }
          }
          if (after === "open" && before !== "open") {
            expect(step.state).toMatchObject({
              openedAt: now,
              openUntil: now + cfg.openMs,
              forced: false,
            });
          }
          if (after !== "closed" || before !== "closed") {
            failuresInARow = 0;
            calls = [];
          }
          state = step.state;
        }
      }),
      { numRuns: 400 },
    );
    expect([...seen].sort()).toEqual([
      "consecutive:closed->open",
      "consecutive:half_open->closed",
      "consecutive:half_open->open",
      "open->half_open",
      "rate:closed->open",
      "rate:half_open->closed",
      "rate:half_open->open",
    ]);
  });
});
