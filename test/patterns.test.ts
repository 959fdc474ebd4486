import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import type { FailureCategory } from "../src/model/failure.js";
import {
  DEFAULT_PATTERN_CONFIG,
  type DetectedPattern,
  detectPatterns,
  emptyPatternState,
  judgePattern,
  type Observation,
  PATTERN_DETECTORS,
  type PatternConfig,
  type PatternConfigInput,
  type PatternDetector,
  type PatternState,
  parsePatternConfig,
  parsePatternState,
  patternConfigSchema,
} from "../src/recovery/patterns.js";

/** A multiple of every window used here, so windows line up with it. */
const T0 = Date.UTC(2026, 0, 1);

interface Shape {
  handler?: string;
  category?: FailureCategory;
  keys?: string[];
  workstreamId?: string;
}

function fail(at: number, taskId: string, shape: Shape = {}): Observation {
  return {
    at,
    taskId,
    workstreamId: shape.workstreamId ?? "ws",
    handler: shape.handler ?? "fetch",
    ok: false,
    category: shape.category ?? "network",
    keys: shape.keys ?? [],
  };
}

function ok(at: number, taskId: string, shape: Shape = {}): Observation {
  return {
    at,
    taskId,
    workstreamId: shape.workstreamId ?? "ws",
    handler: shape.handler ?? "fetch",
    ok: true,
    keys: shape.keys ?? [],
  };
}

/** The defaults with only `detector` enabled, plus `overrides` for it. */
function only(detector: PatternDetector, overrides: Record<string, unknown> = {}): PatternConfig {
  const input = Object.fromEntries(
    PATTERN_DETECTORS.map((d) => [d, d === detector ? overrides : { enabled: false }]),
  );
  return parsePatternConfig(input);
}

function detect(
  config: PatternConfig,
  observations: Observation[],
  now: number,
  state: PatternState = emptyPatternState(),
) {
  return detectPatterns(config, state, observations, now);
}

function ids(patterns: DetectedPattern[]): string[] {
  return patterns.map((p) => p.id);
}

function byId(patterns: DetectedPattern[], id: string): DetectedPattern {
  const found = patterns.find((p) => p.id === id);
  if (found === undefined) throw new Error(`no pattern ${id} in ${ids(patterns).join(", ")}`);
  return found;
}

function problemsOf(raw: unknown): string {
  try {
    parsePatternConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(MendError);
    expect((err as MendError).code).toBe("invalid_argument");
    return (err as MendError).message;
  }
  throw new Error("expected the config to be refused");
}

/** `count` outcomes spread over the window starting at `start`, the first `failures` failed. */
function windowOf(start: number, count: number, failures: number, handler = "fetch") {
  return Array.from({ length: count }, (_, i) =>
    i < failures
      ? fail(start + i * 100, `t${start}-${i}`, { handler, category: "external_service" })
      : ok(start + i * 100, `t${start}-${i}`, { handler }),
  );
}

describe("config", () => {
  it("fills every field with the documented defaults", () => {
    expect(parsePatternConfig()).toEqual(DEFAULT_PATTERN_CONFIG);
    expect(DEFAULT_PATTERN_CONFIG).toEqual({
      frequency: { enabled: true, threshold: 5, windowMs: 60_000 },
      sequence: {
        enabled: true,
        windowMs: 60_000,
        sequences: [
          { name: "hang_kills_workers", categories: ["timeout", "timeout", "worker_lost"] },
          { name: "overload", categories: ["rate_limited", "external_service"] },
        ],
      },
      correlation: { enabled: true, minTasks: 3, windowMs: 30_000, minFailureShare: 0.5 },
      anomaly: {
        enabled: true,
        windowMs: 10_000,
        alpha: 0.1,
        factor: 3,
        minIncrease: 0.2,
        deviations: 3,
        minOutcomes: 10,
        warmupWindows: 6,
      },
      trend: {
        enabled: true,
        windows: 12,
        minWindows: 4,
        threshold: 0.5,
        horizonMs: 120_000,
        minOutcomes: 5,
        minConfidence: 0.6,
      },
    });
  });

  it("takes durations as text or ms and keeps unset fields at their defaults", () => {
    const config = parsePatternConfig({
      frequency: { windowMs: "2m", threshold: 3 },
      correlation: { windowMs: 45_000 },
    });
    expect(config.frequency).toEqual({ enabled: true, threshold: 3, windowMs: 120_000 });
    expect(config.correlation.windowMs).toBe(45_000);
    expect(config.anomaly).toEqual(DEFAULT_PATTERN_CONFIG.anomaly);
  });

  it.each<[string, unknown, string]>([
    [
      "zero threshold",
      { frequency: { threshold: 0 } },
      "frequency.threshold: must be a whole number from 1, got 0",
    ],
    [
      "fractional threshold",
      { frequency: { threshold: 2.5 } },
      "must be a whole number from 1, got 2.5",
    ],
    ["threshold as text", { frequency: { threshold: "five" } }, 'expected a number, got "five"'],
    [
      "zero window",
      { correlation: { windowMs: 0 } },
      "correlation.windowMs: must be longer than 0",
    ],
    ["bad duration", { sequence: { windowMs: "soon" } }, 'invalid duration "soon"'],
    ["negative duration", { anomaly: { windowMs: -5 } }, 'invalid duration "-5"'],
    [
      "misspelt key",
      { frequency: { treshold: 3 } },
      'unknown key "treshold" (allowed: enabled, threshold, windowMs)',
    ],
    ["unknown detector", { frequencies: {} }, 'unknown key "frequencies"'],
    ["not an object", { trend: 3 }, "trend: expected an object, got 3"],
    [
      "alpha 0",
      { anomaly: { alpha: 0 } },
      "anomaly.alpha: must be more than 0 and at most 1, got 0",
    ],
    ["share above 1", { correlation: { minFailureShare: 1.5 } }, "must be from 0 to 1, got 1.5"],
    ["one-task correlation", { correlation: { minTasks: 1 } }, "must be a whole number from 2"],
    [
      "unknown category",
      { sequence: { sequences: [{ name: "x", categories: ["timeout", "slow"] }] } },
      "sequence.sequences.0.categories.1: expected a failure category",
    ],
    [
      "short sequence",
      { sequence: { sequences: [{ name: "x", categories: ["timeout"] }] } },
      "a sequence needs at least two categories",
    ],
    [
      "bad sequence name",
      { sequence: { sequences: [{ name: "a b", categories: ["timeout", "logic"] }] } },
      "may contain only letters",
    ],
    [
      "repeated sequence name",
      {
        sequence: {
          sequences: [
            { name: "x", categories: ["timeout", "logic"] },
            { name: "x", categories: ["network", "logic"] },
          ],
        },
      },
      'sequence.sequences.1.name: sequence name "x" is used twice',
    ],
    [
      "minWindows above windows",
      { trend: { windows: 4, minWindows: 5 } },
      "trend.minWindows: must be at most windows (4), got 5",
    ],
    ["enabled as text", { trend: { enabled: "yes" } }, 'expected true or false, got "yes"'],
  ])("refuses %s", (_name, raw, message) => {
    expect(problemsOf(raw)).toContain(message);
  });

  it("lists every problem at once and in context", () => {
    try {
      parsePatternConfig({ frequency: { threshold: 0 }, trend: { threshold: 2 } });
      expect.unreachable();
    } catch (err) {
      const { message, context } = err as MendError;
      expect(message).toMatch(
        /^invalid pattern config: frequency\.threshold: .*; trend\.threshold: /,
      );
      expect(context["problems"]).toHaveLength(2);
    }
  });

  it("gives the same messages through the exported schema", () => {
    const result = patternConfigSchema.safeParse({ frequency: { threshold: -1 } });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toBe("must be a whole number from 1, got -1");
  });
});

describe("frequency", () => {
  const config = only("frequency");
  const search = { keys: ["breaker:search-api"], category: "timeout" as const };

  it("reports 5 failures of one key, handler and category within a minute", () => {
    const observed = [0, 10, 20, 30, 40].map((s, i) => fail(T0 + s * 1000, `t${i}`, search));
    const { patterns } = detect(config, observed, T0 + 45_000);
    expect(ids(patterns)).toEqual([
      "frequency:category:timeout",
      "frequency:handler:fetch",
      "frequency:key:breaker:search-api",
    ]);
    const key = byId(patterns, "frequency:key:breaker:search-api");
    expect(key).toMatchObject({
      detector: "frequency",
      subject: "breaker:search-api",
      scope: "key",
      confidence: 0.5,
      action: { kind: "open_breaker", breaker: "search-api" },
      at: T0 + 45_000,
      evidence: { taskIds: ["t0", "t1", "t2", "t3", "t4"], count: 5, windowMs: 60_000 },
    });
    expect(key.message).toBe(
      "5 failures on breaker:search-api in the last 1m (threshold 5); " +
        "open breaker search-api so its tasks wait instead of failing.",
    );
    expect(byId(patterns, "frequency:category:timeout").action).toEqual({ kind: "warn" });
    expect(byId(patterns, "frequency:category:timeout").message).toMatch(/^5 timeout failures/);
  });

  it("maps resource keys to mark_unhealthy and other keys to warn", () => {
    const observed = Array.from({ length: 5 }, (_, i) =>
      fail(T0 + i, `t${i}`, { keys: ["resource:git_repo_write", "tool:web_search"] }),
    );
    const { patterns } = detect(config, observed, T0 + 10);
    expect(byId(patterns, "frequency:key:resource:git_repo_write").action).toEqual({
      kind: "mark_unhealthy",
      resource: "git_repo_write",
    });
    expect(byId(patterns, "frequency:key:tool:web_search").action).toEqual({ kind: "warn" });
  });

  it("stays quiet below the threshold or when failures spread beyond the window", () => {
    const four = [0, 1, 2, 3].map((i) => fail(T0 + i, `t${i}`, search));
    expect(detect(config, four, T0 + 10).patterns).toEqual([]);
    const spread = [0, 15, 30, 45, 61].map((s, i) => fail(T0 + s * 1000, `t${i}`, search));
    expect(detect(config, spread, T0 + 61_000).patterns).toEqual([]);
  });

  it("ignores successes", () => {
    const observed = Array.from({ length: 10 }, (_, i) => ok(T0 + i, `t${i}`, search));
    expect(detect(config, observed, T0 + 10).patterns).toEqual([]);
  });

  it("counts failures across sweeps and reports an ongoing pattern once", () => {
    const cfg = only("frequency", { threshold: 3 });
    const sweep1 = detect(cfg, [fail(T0, "a", search), fail(T0 + 1000, "b", search)], T0 + 1000);
    expect(sweep1.patterns).toEqual([]);
    const sweep2 = detect(cfg, [fail(T0 + 2000, "c", search)], T0 + 2000, sweep1.state);
    expect(ids(sweep2.patterns)).toContain("frequency:key:breaker:search-api");
    expect(byId(sweep2.patterns, "frequency:key:breaker:search-api").evidence.taskIds).toEqual([
      "a",
      "b",
      "c",
    ]);
    // Still going: detected again, not reported again.
    const sweep3 = detect(cfg, [fail(T0 + 3000, "d", search)], T0 + 3000, sweep2.state);
    expect(sweep3.patterns).toEqual([]);
    // Quiet for a full window after it was last detected, then a new burst: reported again.
    let state = sweep3.state;
    for (const now of [T0 + 30_000, T0 + 70_000, T0 + 130_000]) {
      state = detect(cfg, [], now, state).state;
    }
    expect(state.active).toEqual({});
    const burst = [0, 1, 2].map((i) => fail(T0 + 140_000 + i, `n${i}`, search));
    const again = detect(cfg, burst, T0 + 140_010, state);
    expect(ids(again.patterns)).toContain("frequency:key:breaker:search-api");
  });
});

describe("sequence", () => {
  const config = only("sequence");
  const key = { keys: ["breaker:llm"] };

  it("finds timeout, timeout, worker_lost on one key, with other failures between", () => {
    const observed = [
      fail(T0, "a", { ...key, category: "timeout" }),
      fail(T0 + 1000, "b", { ...key, category: "network" }),
      fail(T0 + 2000, "c", { ...key, category: "timeout" }),
      fail(T0 + 4000, "d", { ...key, category: "worker_lost" }),
    ];
    const { patterns } = detect(config, observed, T0 + 5000);
    const found = byId(patterns, "sequence:hang_kills_workers:key:breaker:llm");
    expect(found).toMatchObject({
      detector: "sequence",
      subject: "breaker:llm",
      action: { kind: "open_breaker", breaker: "llm" },
      evidence: { taskIds: ["a", "c", "d"], count: 3, windowMs: 60_000 },
    });
    expect(found.confidence).toBeCloseTo(1 - 0.5 * (4000 / 60_000));
    expect(found.message).toContain("timeout → timeout → worker_lost within 4s");
    // The handler saw the same sequence.
    expect(ids(patterns)).toContain("sequence:hang_kills_workers:handler:fetch");
  });

  it("finds rate_limited then external_service as overload", () => {
    const observed = [
      fail(T0, "a", { keys: ["tool:search"], category: "rate_limited" }),
      fail(T0 + 500, "b", { keys: ["tool:search"], category: "external_service" }),
    ];
    const { patterns } = detect(config, observed, T0 + 1000);
    expect(byId(patterns, "sequence:overload:key:tool:search").action).toEqual({ kind: "warn" });
  });

  it("needs the order, the same subject and the window", () => {
    const reversed = [
      fail(T0, "a", { ...key, category: "worker_lost" }),
      fail(T0 + 1, "b", { ...key, category: "timeout" }),
      fail(T0 + 2, "c", { ...key, category: "timeout" }),
    ];
    expect(detect(config, reversed, T0 + 10).patterns).toEqual([]);
    const apart = [
      fail(T0, "a", { handler: "h1", category: "rate_limited" }),
      fail(T0 + 1, "b", { handler: "h2", category: "external_service" }),
    ];
    expect(detect(config, apart, T0 + 10).patterns).toEqual([]);
    const slow = [
      fail(T0, "a", { ...key, category: "rate_limited" }),
      fail(T0 + 61_000, "b", { ...key, category: "external_service" }),
    ];
    expect(detect(config, slow, T0 + 61_000).patterns).toEqual([]);
  });

  it("uses configured sequences", () => {
    const cfg = only("sequence", {
      sequences: [{ name: "bad_data", categories: ["quality", "data_corruption"] }],
    });
    const observed = [
      fail(T0, "a", { category: "quality" }),
      fail(T0 + 1, "a", { category: "data_corruption" }),
    ];
    expect(ids(detect(cfg, observed, T0 + 10).patterns)).toEqual([
      "sequence:bad_data:handler:fetch",
    ]);
  });
});

describe("correlation", () => {
  const config = only("correlation");
  const repo = { keys: ["resource:git_repo_write"] };

  it("reports failures of 3 tasks sharing a key within 30 s", () => {
    const observed = [
      fail(T0, "a", repo),
      fail(T0 + 5000, "b", repo),
      fail(T0 + 9000, "c", { ...repo, handler: "commit" }),
    ];
    const { patterns } = detect(config, observed, T0 + 10_000);
    expect(patterns).toHaveLength(1);
    expect(patterns[0]).toMatchObject({
      detector: "correlation",
      id: "correlation:key:resource:git_repo_write",
      subject: "resource:git_repo_write",
      action: { kind: "mark_unhealthy", resource: "git_repo_write" },
      confidence: 0.5,
      evidence: { taskIds: ["a", "b", "c"], count: 3, windowMs: 30_000 },
    });
    expect(patterns[0]!.message).toBe(
      "3 tasks sharing resource:git_repo_write failed within 30s (100% of its outcomes), " +
        "so what they share looks down; mark resource git_repo_write unhealthy and check it.",
    );
  });

  it("needs distinct tasks within the window", () => {
    const retries = [0, 1, 2, 3].map((i) => fail(T0 + i * 1000, "a", repo));
    expect(detect(config, retries, T0 + 5000).patterns).toEqual([]);
    const spread = [
      fail(T0, "a", repo),
      fail(T0 + 20_000, "b", repo),
      fail(T0 + 31_000, "c", repo),
    ];
    expect(detect(config, spread, T0 + 31_000).patterns).toEqual([]);
  });

  it("stays quiet while most outcomes on the key succeed, even across sweeps", () => {
    const successes = Array.from({ length: 10 }, (_, i) => ok(T0 + i * 100, `s${i}`, repo));
    const first = detect(config, successes, T0 + 1000);
    const failures = [
      fail(T0 + 2000, "a", repo),
      fail(T0 + 2100, "b", repo),
      fail(T0 + 2200, "c", repo),
    ];
    expect(detect(config, failures, T0 + 3000, first.state).patterns).toEqual([]);
    // Once those successes have left the window, the same failures are a pattern.
    const later = failures.map((o) => ({ ...o, at: o.at + 40_000 }));
    expect(ids(detect(config, later, T0 + 43_000, first.state).patterns)).toEqual([
      "correlation:key:resource:git_repo_write",
    ]);
    const noShare = only("correlation", { minFailureShare: 0 });
    expect(detect(noShare, [...successes, ...failures], T0 + 3000).patterns).toHaveLength(1);
  });
});

describe("anomaly", () => {
  const config = only("anomaly");
  /** Eight 10 s windows of 20 outcomes at a 5% failure rate. */
  const baseline = Array.from({ length: 8 }, (_, w) => windowOf(T0 + w * 10_000, 20, 1)).flat();
  const current = T0 + 80_000;

  it("reports a failure rate far above the EWMA baseline", () => {
    const { patterns } = detect(
      config,
      [...baseline, ...windowOf(current, 20, 12)],
      current + 5000,
    );
    expect(ids(patterns)).toEqual(["anomaly:all:all", "anomaly:handler:fetch"]);
    const found = byId(patterns, "anomaly:handler:fetch");
    expect(found).toMatchObject({
      subject: "fetch",
      scope: "handler",
      action: { kind: "degrade" },
      evidence: { count: 12, windowMs: 10_000, failureRate: 0.6 },
    });
    expect(found.evidence.baselineRate).toBeCloseTo(0.05);
    expect(found.evidence.taskIds).toHaveLength(12);
    expect(found.confidence).toBeGreaterThan(0.99);
    expect(found.confirmRate).toBeCloseTo(0.25);
    expect(found.message).toBe(
      "Handler fetch is failing 60% of attempts in the current 10s window against a usual 5%; " +
        "degrade the work and check what changed.",
    );
  });

  it("stays quiet for a modest rise, a thin window or a baseline still warming up", () => {
    const modest = [...baseline, ...windowOf(current, 20, 2)];
    expect(detect(config, modest, current + 5000).patterns).toEqual([]);
    const thin = [...baseline, ...windowOf(current, 5, 5)];
    expect(detect(config, thin, current + 5000).patterns).toEqual([]);
    const young = [...baseline.filter((o) => o.at >= T0 + 50_000), ...windowOf(current, 20, 12)];
    expect(detect(config, young, current + 5000).patterns).toEqual([]);
  });

  it("keeps its EWMA baseline in plain JSON across sweeps and restarts", () => {
    let state = emptyPatternState();
    for (let w = 0; w < 8; w++) {
      const start = T0 + w * 10_000;
      state = detect(config, windowOf(start, 20, 1), start + 9999, state).state;
      // A restart: the state goes through the store as JSON and is read back.
      state = parsePatternState(JSON.parse(JSON.stringify(state)));
    }
    expect(state.rates["handler:fetch"]?.baseline.windows).toBe(7);
    const inMemory = detect(config, windowOf(current, 20, 12), current + 5000, state);
    const restored = detect(
      config,
      windowOf(current, 20, 12),
      current + 5000,
      parsePatternState(JSON.parse(JSON.stringify(state))),
    );
    expect(restored).toEqual(inMemory);
    expect(ids(inMemory.patterns)).toEqual(["anomaly:all:all", "anomaly:handler:fetch"]);
    expect(JSON.parse(JSON.stringify(inMemory.state))).toEqual(inMemory.state);
  });

  it("never flags a rate that is not above the baseline, however loose the settings", () => {
    const loose = only("anomaly", { factor: 1, minIncrease: 0, deviations: 0, warmupWindows: 1 });
    const allFailing = Array.from({ length: 4 }, (_, w) => windowOf(T0 + w * 10_000, 20, 20));
    expect(detect(loose, allFailing.flat(), T0 + 35_000).patterns).toEqual([]);
  });

  it("starts a new baseline when the window length changes", () => {
    const { state } = detect(config, baseline, current);
    const other = only("anomaly", { windowMs: "20s" });
    const next = detect(other, windowOf(current, 20, 12), current + 5000, state);
    expect(next.patterns).toEqual([]);
    expect(next.state.rateWindowMs).toBe(20_000);
    expect(next.state.rates["all"]?.baseline.windows).toBe(0);
  });
});

describe("trend", () => {
  const config = only("trend");
  /** Six 10 s windows whose failure rate climbs 5, 10 … 30%. */
  const rising = Array.from({ length: 6 }, (_, w) =>
    windowOf(T0 + w * 10_000, 20, w + 1, "crawl"),
  ).flat();
  const now = T0 + 60_000;

  it("warns before the threshold is crossed, with the time to crossing", () => {
    const { patterns, state } = detect(config, rising, now);
    const found = byId(patterns, "trend:handler:crawl");
    expect(found).toMatchObject({
      detector: "trend",
      subject: "crawl",
      action: { kind: "warn" },
      confidence: 1,
      forecast: { threshold: 0.5, etaMs: 35_000, crossesAt: now + 35_000 },
      evidence: { count: 21, windowMs: 60_000 },
    });
    expect(found.evidence.failureRate).toBeCloseTo(0.325);
    expect(found.message).toBe(
      "The failure rate of handler crawl is rising (about 33% now, up 5 points per 10s) and " +
        "would reach 50% in about 35s; check handler crawl and what it calls before it does.",
    );
    expect(ids(patterns)).toContain("trend:all:all");
    // Next sweep: same trend, not reported again.
    expect(detect(config, [], now + 1000, state).patterns).toEqual([]);
  });

  it("stays quiet for a flat or falling rate, a crossing beyond the horizon, or too few windows", () => {
    const flat = Array.from({ length: 6 }, (_, w) => windowOf(T0 + w * 10_000, 20, 4)).flat();
    expect(detect(config, flat, now).patterns).toEqual([]);
    const falling = Array.from({ length: 6 }, (_, w) =>
      windowOf(T0 + w * 10_000, 20, 6 - w),
    ).flat();
    expect(detect(config, falling, now).patterns).toEqual([]);
    const nearHorizon = only("trend", { horizonMs: "30s" });
    expect(detect(nearHorizon, rising, now).patterns).toEqual([]);
    expect(
      detect(
        config,
        rising.filter((o) => o.at >= T0 + 30_000),
        now,
      ).patterns,
    ).toEqual([]);
  });

  it("says nothing once the threshold has been crossed", () => {
    const crossed = Array.from({ length: 6 }, (_, w) =>
      windowOf(T0 + w * 10_000, 20, 4 * (w + 1)),
    ).flat();
    expect(detect(config, crossed, now).patterns).toEqual([]);
  });
});

describe("judgePattern", () => {
  const key = { keys: ["breaker:search-api"], category: "timeout" as const };
  const config = only("frequency");
  const at = T0 + 5000;
  const [pattern] = detect(
    config,
    [0, 1, 2, 3, 4].map((i) => fail(T0 + i * 1000, `t${i}`, key)),
    at,
  ).patterns.filter((p) => p.scope === "key");

  it("confirms as soon as the subject fails again within the window", () => {
    const after = [ok(at + 1000, "x", key), fail(at + 2000, "y", key)];
    expect(judgePattern(pattern!, after, at + 2000)).toBe("confirmed");
  });

  it("counts a false positive when the subject only succeeded through the window", () => {
    const after = [ok(at + 1000, "x", key), ok(at + 2000, "y", key), fail(at + 3000, "z")];
    expect(judgePattern(pattern!, after, at + 30_000)).toBeNull();
    expect(judgePattern(pattern!, after, at + 60_000)).toBe("false_positive");
  });

  it("stays undecided without outcomes of the subject, and ignores outcomes outside the window", () => {
    expect(judgePattern(pattern!, [fail(at + 1000, "other")], at + 60_000)).toBeNull();
    const late = [ok(at + 1000, "x", key), fail(at + 61_000, "y", key), fail(at, "z", key)];
    expect(judgePattern(pattern!, late, at + 61_000)).toBe("false_positive");
  });

  it("judges rate patterns by the failure rate over the window", () => {
    const anomaly: DetectedPattern = {
      detector: "anomaly",
      id: "anomaly:handler:fetch",
      subject: "fetch",
      scope: "handler",
      confidence: 0.9,
      message: "",
      action: { kind: "degrade" },
      at,
      evidence: { taskIds: [], count: 10, windowMs: 10_000 },
      confirmRate: 0.25,
    };
    const high = windowOf(at + 1, 10, 3);
    expect(judgePattern(anomaly, high, at + 5000)).toBeNull();
    expect(judgePattern(anomaly, high, at + 10_000)).toBe("confirmed");
    expect(judgePattern(anomaly, windowOf(at + 1, 10, 2), at + 10_000)).toBe("false_positive");
    expect(judgePattern(anomaly, windowOf(at + 1, 10, 9, "other"), at + 10_000)).toBeNull();
  });
});

describe("inputs", () => {
  it("refuses a time that is not a number, and an unknown state", () => {
    const config = parsePatternConfig();
    expect(() => detect(config, [], Number.NaN)).toThrow(MendError);
    expect(() => detect(config, [fail(Number.NaN, "a")], T0)).toThrow(/observation 0/);
    const old = { ...emptyPatternState(), version: 2 } as unknown as PatternState;
    expect(() => detect(config, [], T0, old)).toThrow(/version/);
    expect(() => parsePatternState({ version: 1, failures: "x" })).toThrow(/failures/);
  });

  it("does not modify the state or observations it is given", () => {
    const state = emptyPatternState();
    const observed = [fail(T0 + 5000, "a", { keys: ["b", "a"] })];
    const snapshot = structuredClone({ state, observed });
    detect(parsePatternConfig(), observed, T0, state);
    expect({ state, observed }).toEqual(snapshot);
  });

  it("keeps only what some window can still use", () => {
    const config = parsePatternConfig();
    const { state } = detect(
      config,
      [fail(T0, "a", { keys: ["k"] }), ok(T0, "b", { keys: ["k"] })],
      T0,
    );
    const later = detect(config, [], T0 + 2 * 3_600_000, state).state;
    expect(later.failures).toEqual([]);
    expect(later.successes).toEqual({});
    expect(later.rates).toEqual({});
    expect(later.active).toEqual({});
    const off = only("frequency", { enabled: false });
    expect(detect(off, [fail(T0, "a"), ok(T0, "b", { keys: ["k"] })], T0).state).toEqual({
      ...emptyPatternState(),
      rateWindowMs: 10_000,
    });
  });

  it("counts observations stamped after now (clock skew) as at now", () => {
    const config = only("frequency", { threshold: 2 });
    const { state } = detect(config, [fail(T0 + 90_000, "a"), fail(T0, "b")], T0);
    expect(state.failures.map((f) => f.at)).toEqual([T0, T0]);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

/**
 * Outcomes within `spanMs` of T0 whose chance of failing grows from 0 to 1 across the span, so
 * that rising rates and rate anomalies occur as well as bursts.
 */
const observationArb = (spanMs: number): fc.Arbitrary<Observation> =>
  fc
    .record({
      // Unbiased: fast-check otherwise favours the ends of ranges, bunching outcomes at the edges.
      elapsed: fc.noBias(fc.integer({ min: 0, max: spanMs })),
      permille: fc.noBias(fc.integer({ min: 0, max: 999 })),
      taskId: fc.constantFrom("a", "b", "c", "d", "e", "f"),
      workstreamId: fc.constantFrom("w1", "w2"),
      handler: fc.constantFrom("fetch", "parse"),
      // Few categories, so that sequences occur.
      category: fc.constantFrom<FailureCategory>(
        "timeout",
        "worker_lost",
        "rate_limited",
        "external_service",
        "network",
      ),
      keys: fc.subarray(["breaker:api", "resource:db", "tool:web", "plain"]),
    })
    .map(({ elapsed, permille, ...rest }) => ({
      ...rest,
      at: T0 + elapsed,
      ok: permille / 1000 >= elapsed / spanMs,
    }));

const configArb: fc.Arbitrary<PatternConfigInput> = fc.record({
  frequency: fc.record({ threshold: fc.integer({ min: 1, max: 6 }) }),
  correlation: fc.record({
    minTasks: fc.integer({ min: 2, max: 4 }),
    minFailureShare: fc.double({ min: 0, max: 1, noNaN: true }),
  }),
  anomaly: fc.record({
    windowMs: fc.constantFrom(1000, 5000),
    minOutcomes: fc.integer({ min: 1, max: 5 }),
    warmupWindows: fc.integer({ min: 1, max: 3 }),
    deviations: fc.double({ min: 0, max: 2, noNaN: true }),
    minIncrease: fc.double({ min: 0, max: 0.3, noNaN: true }),
    factor: fc.double({ min: 1, max: 2, noNaN: true }),
  }),
  trend: fc.record({
    minWindows: fc.constant(3),
    threshold: fc.double({ min: 0.6, max: 1, noNaN: true }),
    horizonMs: fc.constantFrom("1m", "10m"),
    minOutcomes: fc.integer({ min: 1, max: 3 }),
    minConfidence: fc.double({ min: 0, max: 1, noNaN: true }),
  }),
});

/** Observations split into sweeps at the given times, the state carried between them. */
function sweeps(config: PatternConfig, observed: Observation[], cuts: number[]) {
  let state = emptyPatternState();
  const patterns: DetectedPattern[] = [];
  let from = -Infinity;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    const batch = observed.filter((o) => o.at > from && o.at <= cut);
    const result = detectPatterns(config, state, batch, cut);
    patterns.push(...result.patterns);
    state = result.state;
    from = cut;
  }
  return { patterns, state };
}

describe("properties", () => {
  it("reports confidences within [0, 1], unique ids and sentences, over many sweeps", () => {
    // A sweep every 2 s, as the monitor does, so the open anomaly window has outcomes.
    const every2s = Array.from({ length: 30 }, (_, i) => T0 + (i + 1) * 2000);
    const seen = new Set<PatternDetector>();
    fc.assert(
      fc.property(
        configArb,
        fc.array(observationArb(60_000), { minLength: 40, maxLength: 150 }),
        (raw, observed) => {
          const { patterns } = sweeps(parsePatternConfig(raw), observed, every2s);
          for (const p of patterns) {
            expect(p.confidence).toBeGreaterThanOrEqual(0);
            expect(p.confidence).toBeLessThanOrEqual(1);
            expect(p.message).toMatch(/^[A-Z0-9].*\.$/);
            seen.add(p.detector);
          }
          const perSweep = new Map<number, string[]>();
          for (const p of patterns) perSweep.set(p.at, [...(perSweep.get(p.at) ?? []), p.id]);
          for (const list of perSweep.values()) expect(new Set(list).size).toBe(list.length);
        },
      ),
      { numRuns: 200 },
    );
    // Not vacuous: every detector fired at some point.
    expect([...seen].sort()).toEqual([...PATTERN_DETECTORS].sort());
  });

  it("does not depend on the order of the observations", () => {
    fc.assert(
      fc.property(
        configArb,
        fc
          .array(observationArb(3000), { maxLength: 60, size: "medium" })
          .chain((obs) =>
            fc.tuple(fc.constant(obs), fc.shuffledSubarray(obs, { minLength: obs.length })),
          ),
        (raw, [observed, shuffled]) => {
          const config = parsePatternConfig(raw);
          expect(detect(config, shuffled, T0 + 3000)).toEqual(detect(config, observed, T0 + 3000));
        },
      ),
    );
  });

  it("finds the same frequency patterns whether the sweep is split or not", () => {
    const config = only("frequency", { threshold: 3 });
    fc.assert(
      fc.property(
        fc.array(observationArb(59_999), { maxLength: 40, size: "medium" }),
        fc.integer({ min: 0, max: 59_999 }),
        (observed, cut) => {
          const end = T0 + 59_999;
          const split = sweeps(config, observed, [T0 + cut, end]);
          const whole = sweeps(config, observed, [end]);
          expect(ids(split.patterns).sort()).toEqual(ids(whole.patterns).sort());
          expect(split.state.failures).toEqual(whole.state.failures);
        },
      ),
    );
  });

  it("gives the same results from a state that went through JSON", () => {
    fc.assert(
      fc.property(
        configArb,
        fc.array(observationArb(30_000), { maxLength: 60, size: "medium" }),
        fc.array(observationArb(30_000), { maxLength: 30, size: "medium" }),
        (raw, first, second) => {
          const config = parsePatternConfig(raw);
          const { state } = detect(config, first, T0 + 30_000);
          const later = second.map((o) => ({ ...o, at: o.at + 30_000 }));
          const direct = detect(config, later, T0 + 60_000, state);
          const stored = parsePatternState(JSON.parse(JSON.stringify(state)));
          expect(detect(config, later, T0 + 60_000, stored)).toEqual(direct);
        },
      ),
    );
  });
});
