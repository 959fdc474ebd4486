import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import {
  DEFAULT_DEGRADATION_WINDOW_MS,
  DEFAULT_MIN_OUTCOMES,
  DEFAULT_RECOVER_FOR_MS,
  type DegradationConfig,
  type DegradationLevel,
  type DegradationMetrics,
  type DegradationState,
  degradationConfigSchema,
  errorWindows,
  initialDegradationState,
  levelView,
  parseDegradationConfig,
  stepDegradation,
  timeDegraded,
} from "../src/recovery/degrade.js";

const EXAMPLE = {
  levels: [
    {
      name: "reduced",
      trigger: { errorRate: 0.2, window: "60s" },
      recover: { errorRate: 0.05, for: "30s" },
      capabilities: { concurrencyFactor: 0.5 },
    },
    {
      name: "essential",
      trigger: { p99LatencyMs: 5000 },
      recover: { p99LatencyMs: 1000, for: "60s" },
      capabilities: { skipOptional: true },
      quality: 0.6,
    },
  ],
};
const example = parseDegradationConfig(EXAMPLE);

/** A sample with no failures and no latency or pressure data, overridden by `fields`. */
function sample(at: number, fields: Partial<DegradationMetrics> = {}): DegradationMetrics {
  return { at, errorRate: 0, outcomes: 0, p99LatencyMs: null, pressure: null, ...fields };
}

/** Runs samples from normal at 0; returns the final state and every change. */
function run(
  config: DegradationConfig,
  samples: DegradationMetrics[],
  start = initialDegradationState(0),
) {
  let state = start;
  const changes: { at: number; from: number; to: number; reason: string }[] = [];
  for (const metrics of samples) {
    const next = stepDegradation(config, state, metrics);
    if (next.change) changes.push({ at: metrics.at, ...next.change });
    state = next.state;
  }
  return { state, changes };
}

const at1 = (at: number): DegradationState => ({ level: 1, since: at, recoveringSince: null });
const at2 = (at: number): DegradationState => ({ level: 2, since: at, recoveringSince: null });

function refusal(raw: unknown): MendError {
  try {
    parseDegradationConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(MendError);
    return err as MendError;
  }
  throw new Error("config was accepted");
}

describe("degradation config", () => {
  it("normalizes durations and applies defaults", () => {
    expect(example.windowMs).toBe(DEFAULT_DEGRADATION_WINDOW_MS);
    expect(example.levels[0]).toEqual({
      name: "reduced",
      quality: 1,
      capabilities: { concurrencyFactor: 0.5 },
      trigger: { errorRate: 0.2, windowMs: 60_000, minOutcomes: DEFAULT_MIN_OUTCOMES },
      recover: { errorRate: 0.05, forMs: 30_000 },
    });
    expect(example.levels[1]!.quality).toBe(0.6);
    const bare = parseDegradationConfig({
      window: "5m",
      levels: [{ name: "x", trigger: { pressure: 0.9 } }],
    });
    expect(bare.levels[0]!.recover).toEqual({ forMs: DEFAULT_RECOVER_FOR_MS });
    expect(bare.levels[0]!.trigger.windowMs).toBe(300_000);
    expect(bare.levels[0]!.capabilities).toEqual({});
    expect(parseDegradationConfig({ levels: [] }).levels).toEqual([]);
    expect(degradationConfigSchema.parse(EXAMPLE)).toEqual(example);
  });

  it.each<[string, unknown, string]>([
    ["not an object", [], "expected object"],
    ["missing levels", {}, "levels: expected array"],
    ["unknown key", { levels: [], extra: 1 }, 'unknown key "extra"'],
    [
      "empty name",
      { levels: [{ name: " ", trigger: { pressure: 0.5 } }] },
      "levels[0].name: must not be empty",
    ],
    [
      "reserved name",
      { levels: [{ name: "Normal", trigger: { pressure: 0.5 } }] },
      "levels[0].name",
    ],
    [
      "duplicate name",
      {
        levels: [
          { name: "a", trigger: { pressure: 0.5 } },
          { name: "A", trigger: { pressure: 0.9 } },
        ],
      },
      'levels[1].name: duplicate level name "A"',
    ],
    [
      "no trigger metric",
      { levels: [{ name: "a", trigger: { window: "1m" } }] },
      "levels[0].trigger: needs at least one",
    ],
    [
      "error rate over 1",
      { levels: [{ name: "a", trigger: { errorRate: 1.5 } }] },
      "levels[0].trigger.errorRate: must be at most 1",
    ],
    [
      "trigger at 0",
      { levels: [{ name: "a", trigger: { pressure: 0 } }] },
      "levels[0].trigger.pressure: must be more than 0",
    ],
    [
      "bad duration",
      { levels: [{ name: "a", trigger: { pressure: 0.5 }, recover: { for: "soon" } }] },
      "levels[0].recover.for: invalid duration",
    ],
    ["empty window", { window: 0, levels: [] }, "window: must be longer than 0"],
    [
      "fractional volume",
      { levels: [{ name: "a", trigger: { errorRate: 0.5, minOutcomes: 2.5 } }] },
      "levels[0].trigger.minOutcomes",
    ],
    [
      "recovery above trigger",
      { levels: [{ name: "a", trigger: { errorRate: 0.2 }, recover: { errorRate: 0.3 } }] },
      "levels[0].recover.errorRate: must be at most trigger.errorRate (0.2)",
    ],
    [
      "quality over 1",
      { levels: [{ name: "a", trigger: { pressure: 0.5 }, quality: 2 }] },
      "levels[0].quality",
    ],
    [
      "non-JSON capabilities",
      { levels: [{ name: "a", trigger: { pressure: 0.5 }, capabilities: { f: () => 1 } }] },
      "levels[0].capabilities.f: must be JSON data",
    ],
  ])("refuses %s, naming the path", (_label, raw, expected) => {
    const err = refusal(raw);
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain("invalid degradation config");
    expect(err.message).toContain(expected);
  });

  it("lists every problem at once", () => {
    const err = refusal({
      levels: [
        { name: "a", trigger: { errorRate: 2 } },
        { name: "b", trigger: { pressure: 0.5 }, recover: { for: "x" } },
      ],
    });
    expect(err.context.problems).toEqual([
      { path: "levels[0].trigger.errorRate", message: expect.stringContaining("at most 1") },
      { path: "levels[1].recover.for", message: expect.stringContaining("invalid duration") },
    ]);
  });

  it("lists the error-rate windows the metrics must cover", () => {
    const config = parseDegradationConfig({
      levels: [
        { name: "a", trigger: { errorRate: 0.2 } },
        { name: "b", trigger: { errorRate: 0.5, window: "5m" } },
        { name: "c", trigger: { pressure: 0.5, window: "10m" } },
        { name: "d", trigger: { pressure: 0.9, window: "30s" }, recover: { errorRate: 0.01 } },
      ],
    });
    expect(errorWindows(config)).toEqual([30_000, 60_000, 300_000]);
  });
});

describe("triggers", () => {
  it("fires on the error rate once the window has enough outcomes", () => {
    const { state, changes } = run(example, [sample(1000, { errorRate: 0.25, outcomes: 20 })]);
    expect(state).toEqual({ level: 1, since: 1000, recoveringSince: null });
    expect(changes).toEqual([
      {
        at: 1000,
        from: 0,
        to: 1,
        reason: expect.stringMatching(/"reduced" \(level 1\).*error rate 25%/),
      },
    ]);
  });

  it("ignores an error rate over too few outcomes", () => {
    expect(run(example, [sample(1, { errorRate: 1, outcomes: 1 })]).state.level).toBe(0);
    expect(run(example, [sample(1, { errorRate: 1, outcomes: 9 })]).state.level).toBe(0);
    expect(run(example, [sample(1, { errorRate: 1, outcomes: 10 })]).state.level).toBe(1);
    const eager = parseDegradationConfig({
      levels: [{ name: "a", trigger: { errorRate: 0.5, minOutcomes: 1 } }],
    });
    expect(run(eager, [sample(1, { errorRate: 1, outcomes: 1 })]).state.level).toBe(1);
  });

  it("fires on resource pressure", () => {
    const config = parseDegradationConfig({
      levels: [{ name: "busy", trigger: { pressure: 0.8 } }],
    });
    expect(run(config, [sample(1, { pressure: 0.79 })]).state.level).toBe(0);
    const { changes } = run(config, [sample(1, { pressure: 0.8 })]);
    expect(changes[0]!.reason).toContain("pressure 0.8 >= 0.8");
  });

  it("fires on p99 latency, straight to the highest level that fires", () => {
    const { state, changes } = run(example, [sample(5, { p99LatencyMs: 6000 })]);
    expect(state.level).toBe(2);
    expect(changes).toEqual([
      { at: 5, from: 0, to: 2, reason: expect.stringContaining("p99 latency 6s >= 5s") },
    ]);
    const both = sample(6, { p99LatencyMs: 7000, errorRate: 1, outcomes: 50 });
    expect(run(example, [both]).state.level).toBe(2);
  });

  it("never fires on missing data", () => {
    const config = parseDegradationConfig({
      levels: [{ name: "a", trigger: { pressure: 0.1, p99LatencyMs: 1 } }],
    });
    expect(run(config, [sample(1)]).state.level).toBe(0);
  });

  it("escalates from a lower degraded level, but never lowers on a lower trigger", () => {
    const up = stepDegradation(example, at1(0), sample(10, { p99LatencyMs: 5000 }));
    expect(up.state).toEqual({ level: 2, since: 10, recoveringSince: null });
    const stay = stepDegradation(
      example,
      at2(0),
      sample(10, { errorRate: 0.5, outcomes: 100, p99LatencyMs: 6000 }),
    );
    expect(stay).toEqual({ state: at2(0), change: null });
  });

  it("reads a level's own window from metrics.windows", () => {
    const config = parseDegradationConfig({
      levels: [{ name: "slow", trigger: { errorRate: 0.5, window: "5m" } }],
    });
    const metrics = sample(1, {
      errorRate: 0,
      outcomes: 100,
      windows: { 300_000: { errorRate: 0.6, outcomes: 100 } },
    });
    expect(run(config, [metrics]).state.level).toBe(1);
    expect(() => run(config, [sample(1)])).toThrow(/metrics.windows\[300000\]/);
  });
});

describe("recovery", () => {
  it("steps towards normal only after the recovery conditions held for `for`", () => {
    const healthy = (at: number) => sample(at, { errorRate: 0.01, outcomes: 100 });
    const { state, changes } = run(
      example,
      [healthy(10_000), healthy(20_000), healthy(39_999)],
      at1(0),
    );
    expect(state).toEqual({ level: 1, since: 0, recoveringSince: 10_000 });
    expect(changes).toEqual([]);
    const done = stepDegradation(example, state, healthy(40_000));
    expect(done.state).toEqual({ level: 0, since: 40_000, recoveringSince: null });
    expect(done.change).toEqual({
      from: 1,
      to: 0,
      reason: 'recovered to "normal" (level 0): recovery conditions of "reduced" held for 30s',
    });
  });

  it("holds the level while the metric sits between the recovery and trigger thresholds (no flapping)", () => {
    // 10% is under the 20% trigger but over the 5% recovery threshold.
    const samples = Array.from({ length: 100 }, (_, i) =>
      sample(i * 5000, { errorRate: i % 3 === 0 ? 0.25 : 0.1, outcomes: 100 }),
    );
    const { state, changes } = run(example, samples);
    expect(changes).toHaveLength(1);
    expect(state.level).toBe(1);
  });

  it("restarts the timer when a trigger fires again or the condition lapses", () => {
    const ok = (at: number) => sample(at, { errorRate: 0, outcomes: 100 });
    const fired = run(
      example,
      [
        ok(0),
        ok(20_000),
        sample(25_000, { errorRate: 0.3, outcomes: 100 }),
        ok(30_000),
        ok(59_999),
      ],
      at1(0),
    );
    expect(fired.state).toEqual({ level: 1, since: 0, recoveringSince: 30_000 });
    const lapsed = run(
      example,
      [ok(0), sample(20_000, { errorRate: 0.1, outcomes: 100 }), ok(30_000), ok(59_999)],
      at1(0),
    );
    expect(lapsed.state.recoveringSince).toBe(30_000);
    expect(run(example, [ok(60_000)], fired.state).state.level).toBe(0);
  });

  it("steps one level at a time, each after its own `for`", () => {
    const ok = (at: number) => sample(at, { p99LatencyMs: 100, errorRate: 0, outcomes: 100 });
    const samples = Array.from({ length: 20 }, (_, i) => ok(i * 10_000));
    const { changes } = run(example, samples, at2(0));
    expect(changes.map(({ at, from, to }) => ({ at, from, to }))).toEqual([
      { at: 60_000, from: 2, to: 1 },
      // Level 1's conditions already held on entry, so its 30 s started at 60 s.
      { at: 90_000, from: 1, to: 0 },
    ]);
  });

  it("counts missing data and low volume as healthy", () => {
    const { state } = run(
      example,
      [sample(0, { errorRate: 1, outcomes: 3 }), sample(30_000)],
      at1(0),
    );
    expect(state.level).toBe(0);
  });

  it("drops a level the config no longer has to its highest", () => {
    const { state, change } = stepDegradation(
      example,
      { level: 5, since: 0, recoveringSince: 3 },
      sample(7),
    );
    expect(state).toEqual({ level: 2, since: 7, recoveringSince: 7 });
    expect(change).toEqual({
      from: 5,
      to: 2,
      reason: expect.stringContaining("level 5 is no longer configured"),
    });
  });

  it("refuses malformed states and metrics", () => {
    const start = initialDegradationState(0);
    const badMetrics: Partial<DegradationMetrics>[] = [
      { at: NaN },
      { errorRate: 1.5 },
      { outcomes: -1 },
      { outcomes: 1.5 },
      { pressure: 2 },
      { p99LatencyMs: -1 },
      { windows: { 1000: { errorRate: NaN, outcomes: 1 } } },
    ];
    for (const fields of badMetrics) {
      expect(() => stepDegradation(example, start, sample(1, fields))).toThrow(MendError);
    }
    for (const state of [
      { ...start, level: -1 },
      { ...start, level: 0.5 },
      { ...start, since: NaN },
    ]) {
      expect(() => stepDegradation(example, state, sample(1))).toThrow(/degradation/);
    }
  });
});

describe("levelView", () => {
  it("describes normal, each level, and an out-of-range level as the highest", () => {
    expect(levelView(example, 0)).toEqual({
      level: 0,
      name: "normal",
      quality: 1,
      capabilities: {},
    });
    expect(levelView(example, 1)).toEqual({
      level: 1,
      name: "reduced",
      quality: 1,
      capabilities: { concurrencyFactor: 0.5 },
    });
    expect(levelView(example, 9)).toMatchObject({ level: 2, name: "essential", quality: 0.6 });
    expect(() => levelView(example, -1)).toThrow(MendError);
  });

  it("hands out a copy of the capabilities", () => {
    levelView(example, 2).capabilities.skipOptional = false;
    expect(example.levels[1]!.capabilities).toEqual({ skipOptional: true });
  });
});

describe("timeDegraded", () => {
  it("sums time above level 0 within the range", () => {
    const changes = [
      { at: 300, to: 0 },
      { at: 100, to: 1 },
      { at: 200, to: 2 },
      { at: 500, to: 1 },
    ];
    expect(timeDegraded(changes, 0, 1000)).toBe(200 + 500);
    expect(timeDegraded(changes, 150, 550)).toBe(150 + 50);
    expect(timeDegraded(changes, 0, 100)).toBe(0);
    expect(timeDegraded([], 0, 100)).toBe(0);
    expect(() => timeDegraded(changes, 10, 5)).toThrow(MendError);
    expect(() => timeDegraded([{ at: 1, to: -1 }], 0, 5)).toThrow(MendError);
  });

  it("equals a millisecond-by-millisecond count", () => {
    const change = fc.record({
      at: fc.integer({ min: 0, max: 200 }),
      to: fc.integer({ min: 0, max: 3 }),
    });
    const range = fc.tuple(fc.integer({ min: 0, max: 250 }), fc.integer({ min: 0, max: 250 }));
    fc.assert(
      fc.property(fc.array(change, { maxLength: 12 }), range, (changes, [a, b]) => {
        const [from, to] = a <= b ? [a, b] : [b, a];
        let expected = 0;
        for (let t = from; t < to; t++) {
          // The level during [t, t+1): the latest change at or before t, the last one listed on ties.
          let level = 0;
          let latest = -1;
          for (const c of changes) {
            if (c.at <= t && c.at >= latest) [latest, level] = [c.at, c.to];
          }
          if (level > 0) expected++;
        }
        expect(timeDegraded(changes, from, to)).toBe(expected);
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Properties over random configs and metric sequences

const WINDOWS = [60_000, 300_000];

const levelArb = fc
  .record({
    errorRate: fc.option(fc.double({ min: 0.01, max: 1, noNaN: true }), { nil: undefined }),
    pressure: fc.option(fc.double({ min: 0.01, max: 1, noNaN: true }), { nil: undefined }),
    p99LatencyMs: fc.option(fc.integer({ min: 1, max: 10_000 }), { nil: undefined }),
    recoverShare: fc.record({
      errorRate: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
      pressure: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
      p99LatencyMs: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
    }),
    window: fc.constantFrom(...WINDOWS),
    minOutcomes: fc.integer({ min: 1, max: 20 }),
    forMs: fc.integer({ min: 0, max: 60_000 }),
  })
  .filter(
    (l) => l.errorRate !== undefined || l.pressure !== undefined || l.p99LatencyMs !== undefined,
  );

const configArb = fc.array(levelArb, { maxLength: 4 }).map((levels) =>
  parseDegradationConfig({
    levels: levels.map((l, i) => {
      const trigger = {
        errorRate: l.errorRate,
        pressure: l.pressure,
        p99LatencyMs: l.p99LatencyMs,
      };
      const recover: Record<string, number> = { for: l.forMs };
      for (const key of ["errorRate", "pressure", "p99LatencyMs"] as const) {
        const share = l.recoverShare[key];
        // A recovery threshold is a share of the trigger's, or stands alone when the trigger lacks it.
        if (share !== undefined)
          recover[key] =
            key === "p99LatencyMs" ? share * (trigger[key] ?? 10_000) : share * (trigger[key] ?? 1);
      }
      return {
        name: `level${i + 1}`,
        trigger: { ...trigger, window: l.window, minOutcomes: l.minOutcomes },
        recover,
      };
    }),
  }),
);

const rate = fc.oneof(
  fc.constantFrom(0, 0.05, 0.2, 0.5, 1),
  fc.double({ min: 0, max: 1, noNaN: true }),
);
const stats = fc.record({ errorRate: rate, outcomes: fc.integer({ min: 0, max: 40 }) });
const HEALTHY = { errorRate: 0, outcomes: 100, p99LatencyMs: 0, pressure: 0 };

/** Metrics without `at`; healthy ones are common so that recovery gets exercised. */
const readingArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constant({ ...HEALTHY, windows: { 300_000: { errorRate: 0, outcomes: 100 } } }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      errorRate: rate,
      outcomes: fc.integer({ min: 0, max: 40 }),
      p99LatencyMs: fc.option(fc.integer({ min: 0, max: 12_000 }), { nil: null }),
      pressure: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: null }),
      windows: fc.record({ 300_000: stats }),
    }),
  },
);
const samplesArb = fc.array(fc.tuple(fc.integer({ min: 1, max: 20_000 }), readingArb), {
  maxLength: 60,
});

/** Independent oracle of the documented rules. */
function windowStats(m: DegradationMetrics, windowMs: number) {
  return windowMs === DEFAULT_DEGRADATION_WINDOW_MS ? m : m.windows![windowMs]!;
}
function fires(level: DegradationLevel, m: DegradationMetrics): boolean {
  const t = level.trigger;
  const s = windowStats(m, t.windowMs);
  return (
    (t.errorRate !== undefined && s.outcomes >= t.minOutcomes && s.errorRate >= t.errorRate) ||
    (t.pressure !== undefined && m.pressure !== null && m.pressure >= t.pressure) ||
    (t.p99LatencyMs !== undefined && m.p99LatencyMs !== null && m.p99LatencyMs >= t.p99LatencyMs)
  );
}
function holds(level: DegradationLevel, m: DegradationMetrics): boolean {
  const r = level.recover;
  const s = windowStats(m, level.trigger.windowMs);
  if (fires(level, m)) return false;
  if (
    r.errorRate !== undefined &&
    s.outcomes >= level.trigger.minOutcomes &&
    s.errorRate > r.errorRate
  )
    return false;
  if (r.pressure !== undefined && m.pressure !== null && m.pressure > r.pressure) return false;
  return !(
    r.p99LatencyMs !== undefined &&
    m.p99LatencyMs !== null &&
    m.p99LatencyMs > r.p99LatencyMs
  );
}

describe("stepDegradation properties", () => {
  it("keeps the level in range, escalates to every firing trigger, and recovers one level at a time after `for`", () => {
    fc.assert(
      fc.property(configArb, samplesArb, (config, samples) => {
        const n = config.levels.length;
        let state = initialDegradationState(0);
        let at = 0;
        // When the current level's recovery conditions began to hold, by the oracle.
        let holdingSince: number | null = null;
        for (const [dt, reading] of samples) {
          at += dt;
          const m = { at, ...reading };
          const { state: next, change } = stepDegradation(config, state, m);

          expect(next.level).toBeGreaterThanOrEqual(0);
          expect(next.level).toBeLessThanOrEqual(n);
          expect(next.level).toBeGreaterThanOrEqual(state.level - 1);
          config.levels.forEach((level, i) => {
            if (fires(level, m)) expect(next.level).toBeGreaterThanOrEqual(i + 1);
          });
          if (next.level < state.level) {
            const current = config.levels[state.level - 1]!;
            expect(holds(current, m)).toBe(true);
            expect(at - (holdingSince ?? at)).toBeGreaterThanOrEqual(current.recover.forMs);
          }
          expect(change === null).toBe(next.level === state.level);
          if (change) expect(change).toMatchObject({ from: state.level, to: next.level });
          expect(JSON.parse(JSON.stringify(next))).toEqual(next);

          const level = next.level === 0 ? undefined : config.levels[next.level - 1]!;
          const stillHolding = level !== undefined && holds(level, m);
          holdingSince = !stillHolding ? null : change ? at : (holdingSince ?? at);
          state = next;
        }
      }),
    );
  });

  it("returns to normal when the metrics stay healthy", () => {
    fc.assert(
      fc.property(
        configArb,
        samplesArb,
        fc.integer({ min: 1000, max: 20_000 }),
        (config, samples, dt) => {
          const windows = { 300_000: { errorRate: 0, outcomes: 100 } };
          let { state } = run(
            config,
            samples.map(([, reading], i) => ({ at: (i + 1) * 1000, ...reading })),
          );
          let at = (samples.length + 1) * 1000;
          // Each level needs at most its `for` plus one sample interval.
          const deadline = at + config.levels.length * (60_000 + dt) + dt;
          while (at <= deadline) {
            state = stepDegradation(config, state, { at, ...HEALTHY, windows }).state;
            at += dt;
          }
          expect(state.level).toBe(0);
        },
      ),
    );
  });
});
