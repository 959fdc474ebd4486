/**
 * Failure pattern detection: frequency, sequence, correlation, anomaly and trend detectors over the
 * task outcomes the monitor reads from the transition log. Pure: time comes in as parameters, and
 * everything a detector remembers between sweeps lives in a plain-JSON {@link PatternState} that
 * the caller persists.
 */
import { z } from "zod";
import { MendError } from "../errors.js";
import { formatDuration, parseDuration } from "../model/duration.js";
import { FAILURE_CATEGORIES, type FailureCategory } from "../model/failure.js";

// ---------------------------------------------------------------------------------------------
// Inputs and outputs

/** One task outcome, as the monitor reads it from the transition log. */
export interface Observation {
  /** Epoch ms. */
  at: number;
  taskId: string;
  workstreamId: string;
  handler: string;
  /** True: the attempt completed; false: it failed. */
  ok: boolean;
  /** The failure's category when `!ok`; a failure without one counts as `unknown`. */
  category?: FailureCategory;
  /**
   * Names of what the task shares with others. The prefix says what the name is and so what may
   * be done about it: `breaker:search-api`, `resource:git_repo_write`, `tool:web_search`.
   */
  keys: string[];
  durationMs?: number;
}

/** The detectors, in the order their patterns are listed. */
export const PATTERN_DETECTORS = [
  "frequency",
  "sequence",
  "correlation",
  "anomaly",
  "trend",
] as const;
/** One of {@link PATTERN_DETECTORS}. */
export type PatternDetector = (typeof PATTERN_DETECTORS)[number];

/**
 * What a pattern's subject is: one of an observation's `keys`, a handler name, a failure category,
 * or every outcome (`all`, subject `"all"`).
 */
export type PatternScope = "key" | "handler" | "category" | "all";

/** What the monitor may do about a pattern. */
export type PatternAction =
  | { kind: "open_breaker"; breaker: string }
  | { kind: "degrade" }
  | { kind: "mark_unhealthy"; resource: string }
  | { kind: "warn" };

/** A pattern found by {@link detectPatterns}; plain JSON. */
export interface DetectedPattern {
  detector: PatternDetector;
  /**
   * Stable identity, so an ongoing pattern is reported once: `<detector>:<scope>:<subject>`, with
   * the rule name after the detector for sequences (`sequence:overload:key:breaker:search-api`).
   */
  id: string;
  /** What it is about: a key as written (`breaker:search-api`), a handler, a category, or `all`. */
  subject: string;
  scope: PatternScope;
  /** How sure the detector is, from 0 to 1. */
  confidence: number;
  /** One sentence a person can act on. */
  message: string;
  action: PatternAction;
  /** When it was detected (the `now` of the sweep), epoch ms. */
  at: number;
  evidence: {
    /** Distinct failed tasks, oldest first; at most the 20 most recent. */
    taskIds: string[];
    /** Failures the detection rests on. */
    count: number;
    /** The window the evidence spans, and the one {@link judgePattern} watches after `at`. */
    windowMs: number;
    /** Anomaly: the current window's failure rate. Trend: the fitted rate at `at`. */
    failureRate?: number;
    /** Anomaly: the usual failure rate (EWMA of past windows). */
    baselineRate?: number;
  };
  /**
   * Anomaly and trend: {@link judgePattern} confirms the pattern when the subject's failure rate
   * over the window after `at` is at least this; other detectors are judged by failures.
   */
  confirmRate?: number;
  /** Trend: when the failure rate is expected to reach `threshold`. */
  forecast?: { threshold: number; etaMs: number; crossesAt: number };
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** A named, ordered sequence of failure categories for the sequence detector. */
export interface SequenceRule {
  /** Letters, digits, `_`, `.`, `-`; part of the pattern id. */
  name: string;
  /** At least two; they must occur in this order (other failures may come between). */
  categories: readonly FailureCategory[];
}

/** Settings of every detector. Durations are ms. Parse input with {@link parsePatternConfig}. */
export interface PatternConfig {
  /** `threshold` failures of one category, handler or key within `windowMs`. */
  frequency: { enabled: boolean; threshold: number; windowMs: number };
  /** One of `sequences` on the failures of one handler or key within `windowMs`. */
  sequence: { enabled: boolean; windowMs: number; sequences: readonly SequenceRule[] };
  /**
   * Failures of at least `minTasks` distinct tasks sharing a key within `windowMs`, when failures
   * are at least `minFailureShare` of that key's outcomes in the window (0 turns that check off).
   */
  correlation: { enabled: boolean; minTasks: number; windowMs: number; minFailureShare: number };
  /**
   * The failure rate of the current `windowMs` window, overall and per handler, against an EWMA
   * (weight `alpha`) of past windows. Flags when the window has `minOutcomes` outcomes, the
   * baseline has `warmupWindows` windows, and the rate is at least `factor` times the baseline,
   * `minIncrease` above it, and `deviations` standard deviations above it.
   */
  anomaly: {
    enabled: boolean;
    windowMs: number;
    alpha: number;
    factor: number;
    minIncrease: number;
    deviations: number;
    minOutcomes: number;
    warmupWindows: number;
  };
  /**
   * A line fitted to the failure rates of the last `windows` closed anomaly windows (those with
   * `minOutcomes` outcomes, at least `minWindows` of them). Warns when it reaches `threshold`
   * within `horizonMs` and the fit's adjusted R² is at least `minConfidence`.
   */
  trend: {
    enabled: boolean;
    windows: number;
    minWindows: number;
    threshold: number;
    horizonMs: number;
    minOutcomes: number;
    minConfidence: number;
  };
}

/**
 * The defaults. Sequences: `hang_kills_workers` (timeout, timeout, worker_lost: a task that hangs
 * until its worker is killed) and `overload` (rate_limited, then external_service: a service
 * pushed past its limits).
 */
export const DEFAULT_PATTERN_CONFIG: Readonly<PatternConfig> = Object.freeze({
  frequency: Object.freeze({ enabled: true, threshold: 5, windowMs: 60_000 }),
  sequence: Object.freeze({
    enabled: true,
    windowMs: 60_000,
    sequences: Object.freeze([
      Object.freeze({
        name: "hang_kills_workers",
        categories: Object.freeze(["timeout", "timeout", "worker_lost"] as const),
      }),
      Object.freeze({
        name: "overload",
        categories: Object.freeze(["rate_limited", "external_service"] as const),
      }),
    ]),
  }),
  correlation: Object.freeze({
    enabled: true,
    minTasks: 3,
    windowMs: 30_000,
    minFailureShare: 0.5,
  }),
  anomaly: Object.freeze({
    enabled: true,
    windowMs: 10_000,
    alpha: 0.1,
    factor: 3,
    minIncrease: 0.2,
    deviations: 3,
    minOutcomes: 10,
    warmupWindows: 6,
  }),
  trend: Object.freeze({
    enabled: true,
    windows: 12,
    minWindows: 4,
    threshold: 0.5,
    horizonMs: 120_000,
    minOutcomes: 5,
    minConfidence: 0.6,
  }),
});

const D = DEFAULT_PATTERN_CONFIG;
const NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;

function describe(value: unknown): string {
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return JSON.stringify(value);
}

/** A number checked against `rule`, which the message states in words. */
function num(rule: string, ok: (n: number) => boolean) {
  return z
    .number({ error: (iss) => `expected a number, got ${describe(iss.input)}` })
    .refine(ok, { error: (iss) => `must be ${rule}, got ${describe(iss.input)}` });
}

const wholeFrom = (min: number) =>
  num(`a whole number from ${min}`, (n) => Number.isInteger(n) && n >= min);

const flag = z.boolean({ error: (iss) => `expected true or false, got ${describe(iss.input)}` });

/** A duration over 0: ms as a number, or text such as `30s` ({@link parseDuration}). */
const duration = z
  .custom<string | number>((value) => typeof value === "string" || typeof value === "number", {
    error: (iss) =>
      `expected a duration such as "30s", or a number of milliseconds, got ${describe(iss.input)}`,
  })
  .transform((value, ctx) => {
    try {
      const ms = parseDuration(value);
      if (ms > 0) return ms;
      ctx.addIssue({ code: "custom", message: "must be longer than 0", input: value });
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message, input: value });
    }
    return z.NEVER;
  });

/** A strict object whose unknown keys are refused by name, and which fills in its defaults. */
function section<T extends z.core.$ZodLooseShape>(shape: T) {
  const allowed = Object.keys(shape).join(", ");
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === "unrecognized_keys"
        ? `unknown key${iss.keys.length === 1 ? "" : "s"} ${iss.keys.map((k) => `"${k}"`).join(", ")} (allowed: ${allowed})`
        : `expected an object, got ${describe(iss.input)}`,
  });
}

const category = z.enum(FAILURE_CATEGORIES, {
  error: (iss) =>
    `expected a failure category (${FAILURE_CATEGORIES.join(", ")}), got ${describe(iss.input)}`,
});

const sequenceRule = section({
  name: z
    .string({ error: (iss) => `expected a name, got ${describe(iss.input)}` })
    .regex(NAME_PATTERN, { error: "may contain only letters, digits and the characters _ . -" }),
  categories: z
    .array(category, {
      error: (iss) => `expected a list of categories, got ${describe(iss.input)}`,
    })
    .min(2, { error: "a sequence needs at least two categories" }),
});

/**
 * Validates pattern settings: every field is optional and defaults to
 * {@link DEFAULT_PATTERN_CONFIG}; durations are ms or text such as `"30s"`; unknown keys, values
 * out of range and repeated sequence names are refused with a message naming the rule.
 */
export const patternConfigSchema = section({
  frequency: section({
    enabled: flag.default(D.frequency.enabled),
    threshold: wholeFrom(1).default(D.frequency.threshold),
    windowMs: duration.default(D.frequency.windowMs),
  }).prefault({}),
  sequence: section({
    enabled: flag.default(D.sequence.enabled),
    windowMs: duration.default(D.sequence.windowMs),
    sequences: z
      .array(sequenceRule, {
        error: (iss) => `expected a list of sequences, got ${describe(iss.input)}`,
      })
      .superRefine((rules, ctx) => {
        const seen = new Set<string>();
        rules.forEach((rule, i) => {
          if (seen.has(rule.name)) {
            ctx.addIssue({
              code: "custom",
              message: `sequence name "${rule.name}" is used twice`,
              path: [i, "name"],
            });
          }
          seen.add(rule.name);
        });
      })
      .default(() => D.sequence.sequences.map((r) => ({ ...r, categories: [...r.categories] }))),
  }).prefault({}),
  correlation: section({
    enabled: flag.default(D.correlation.enabled),
    minTasks: wholeFrom(2).default(D.correlation.minTasks),
    windowMs: duration.default(D.correlation.windowMs),
    minFailureShare: num("from 0 to 1", (n) => n >= 0 && n <= 1).default(
      D.correlation.minFailureShare,
    ),
  }).prefault({}),
  anomaly: section({
    enabled: flag.default(D.anomaly.enabled),
    windowMs: duration.default(D.anomaly.windowMs),
    alpha: num("more than 0 and at most 1", (n) => n > 0 && n <= 1).default(D.anomaly.alpha),
    factor: num("at least 1", (n) => n >= 1).default(D.anomaly.factor),
    minIncrease: num("from 0 to less than 1", (n) => n >= 0 && n < 1).default(
      D.anomaly.minIncrease,
    ),
    deviations: num("at least 0", (n) => n >= 0).default(D.anomaly.deviations),
    minOutcomes: wholeFrom(1).default(D.anomaly.minOutcomes),
    warmupWindows: wholeFrom(1).default(D.anomaly.warmupWindows),
  }).prefault({}),
  trend: section({
    enabled: flag.default(D.trend.enabled),
    // Three points at least: the adjusted R² that gives the confidence needs n - 2 > 0.
    windows: wholeFrom(3).default(D.trend.windows),
    minWindows: wholeFrom(3).default(D.trend.minWindows),
    threshold: num("more than 0 and at most 1", (n) => n > 0 && n <= 1).default(D.trend.threshold),
    horizonMs: duration.default(D.trend.horizonMs),
    minOutcomes: wholeFrom(1).default(D.trend.minOutcomes),
    minConfidence: num("from 0 to 1", (n) => n >= 0 && n <= 1).default(D.trend.minConfidence),
  })
    .superRefine((trend, ctx) => {
      if (trend.minWindows > trend.windows) {
        ctx.addIssue({
          code: "custom",
          message: `must be at most windows (${trend.windows}), got ${trend.minWindows}`,
          path: ["minWindows"],
        });
      }
    })
    .prefault({}),
});

/** Pattern settings as a person writes them: any field may be left out. */
export type PatternConfigInput = z.input<typeof patternConfigSchema>;

/**
 * Validates pattern settings and fills in the defaults.
 *
 * @throws MendError `invalid_argument` listing every problem as `path: message`;
 *   `context.problems` holds them as `{ path, message }`.
 */
export function parsePatternConfig(raw: unknown = {}): PatternConfig {
  const result = patternConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = result.error.issues.map((iss) => ({
    path: iss.path.map(String).join("."),
    message: iss.message,
  }));
  const listed = problems.map((p) => (p.path === "" ? p.message : `${p.path}: ${p.message}`));
  throw new MendError("invalid_argument", `invalid pattern config: ${listed.join("; ")}`, {
    problems,
  });
}

// ---------------------------------------------------------------------------------------------
// State

/** A failure kept in {@link PatternState} while some window may still count it. */
export interface RetainedFailure {
  at: number;
  taskId: string;
  workstreamId: string;
  handler: string;
  category: FailureCategory;
  /** Sorted, without repeats. */
  keys: string[];
}

/** Outcome counts of one anomaly window, which starts at a multiple of its length. */
export interface RateWindow {
  start: number;
  failures: number;
  total: number;
}

/** The failure-rate history of one subject (`all` or `handler:<name>`). */
export interface RateSeries {
  /** The open window. */
  current: RateWindow;
  /** EWMA of past windows' failure rates, its exponentially weighted variance, windows folded. */
  baseline: { mean: number; variance: number; windows: number };
  /** Closed windows that had outcomes, oldest first, at most `trend.windows`. */
  history: RateWindow[];
  /** The latest outcome, so subjects idle for an hour are forgotten. */
  lastAt: number;
}

/**
 * What the detectors remember between sweeps: plain JSON, for the caller to persist (in the store)
 * and hand back on the next call, including after a restart.
 */
export interface PatternState {
  version: 1;
  /** Failures inside the longest enabled window, in a canonical order. */
  failures: RetainedFailure[];
  /** Correlation: successes per key as `[slot start, count]`, oldest first. */
  successes: Record<string, Array<[number, number]>>;
  /** The anomaly window the rate series were built with; they restart when it changes. */
  rateWindowMs: number;
  /** Anomaly and trend: rate series by subject. */
  rates: Record<string, RateSeries>;
  /** Ids of reported, ongoing patterns → epoch ms until which they are not reported again. */
  active: Record<string, number>;
}

/** The state to start from when none was saved. */
export function emptyPatternState(): PatternState {
  return { version: 1, failures: [], successes: {}, rateWindowMs: 0, rates: {}, active: {} };
}

// Zod 4 numbers are finite already.
const finite = z.number();
const count = z.number().int().min(0);
const rateWindowSchema = z.strictObject({ start: finite, failures: count, total: count });
const patternStateSchema = z.strictObject({
  version: z.literal(1),
  failures: z.array(
    z.strictObject({
      at: finite,
      taskId: z.string(),
      workstreamId: z.string(),
      handler: z.string(),
      category,
      keys: z.array(z.string()),
    }),
  ),
  successes: z.record(z.string(), z.array(z.tuple([finite, count]))),
  rateWindowMs: count,
  rates: z.record(
    z.string(),
    z.strictObject({
      current: rateWindowSchema,
      baseline: z.strictObject({
        mean: z.number().min(0).max(1),
        variance: z.number().min(0),
        windows: count,
      }),
      history: z.array(rateWindowSchema),
      lastAt: finite,
    }),
  ),
  active: z.record(z.string(), finite),
});

/**
 * Checks a state read back from storage.
 *
 * @throws MendError `invalid_argument` when it is not a {@link PatternState} (e.g. written by
 *   another version); the caller may then start again from {@link emptyPatternState}.
 */
export function parsePatternState(raw: unknown): PatternState {
  const result = patternStateSchema.safeParse(raw);
  if (result.success) return result.data;
  const where = result.error.issues.map((iss) => iss.path.join(".") || "(root)").join(", ");
  throw new MendError("invalid_argument", `invalid pattern state at ${where}`, {
    issues: result.error.issues.map((iss) => ({ path: iss.path.join("."), message: iss.message })),
  });
}

// ---------------------------------------------------------------------------------------------
// Detection

/** At most this many failures are retained; beyond it the oldest go, to bound the state. */
const MAX_RETAINED_FAILURES = 10_000;
/** Evidence lists at most this many task ids (the most recent); `count` still counts all. */
const MAX_EVIDENCE_TASKS = 20;
/** Correlation counts successes in this many slots per window rather than one by one. */
const SUCCESS_SLOTS = 60;
/** A rate series with no outcome for this long is dropped, baseline and all. */
const SERIES_IDLE_MS = 3_600_000;

/** A detection before dedup; `quietMs` is how long it must go undetected to be reported again. */
interface Candidate {
  pattern: DetectedPattern;
  quietMs: number;
}

/** Failures grouped by what they are about. */
interface Group {
  scope: PatternScope;
  subject: string;
  items: RetainedFailure[];
}

/**
 * Runs every enabled detector for one sweep. Pass the observations recorded since the previous
 * call, each once (so a failure in flight across sweeps is not counted twice), with the state that
 * call returned. Observations stamped after `now` (clock skew) count as at `now`; those older than
 * a window still update what they can (a rate window already closed ignores them).
 *
 * Returns the patterns newly detected (an id already reported stays quiet until it has gone
 * undetected for its window; anomalies for two windows) and the state for the next call. The
 * inputs are not modified.
 *
 * @throws MendError `invalid_argument` when `now` or an observation's `at` is not a finite number,
 *   an observation's `keys` is not a list, or `state` is not version 1.
 */
export function detectPatterns(
  config: PatternConfig,
  state: PatternState,
  observations: readonly Observation[],
  now: number,
): { patterns: DetectedPattern[]; state: PatternState } {
  if (!Number.isFinite(now)) {
    throw new MendError("invalid_argument", `now must be a finite epoch ms, got ${now}`, { now });
  }
  if (state.version !== 1) {
    throw new MendError("invalid_argument", `unsupported pattern state version`, {
      version: (state as { version?: unknown }).version,
    });
  }
  const observed = normalize(observations, now);
  const next = structuredClone(state);
  retainFailures(next, observed, config, now);
  countSuccesses(next, observed, config.correlation, now);
  updateRates(next, observed, config, now);

  const candidates = [
    ...detectFrequency(config.frequency, next.failures, now),
    ...detectSequences(config.sequence, next.failures, now),
    ...detectCorrelation(config.correlation, next, now),
    ...detectAnomalies(config.anomaly, next, now),
    ...detectTrends(config.trend, config.anomaly.windowMs, next, now),
  ];
  return { patterns: deduplicate(next, candidates, now), state: next };
}

/** Validated copies, stable-sorted by time: rate windows must close in time order. */
function normalize(observations: readonly Observation[], now: number): Observation[] {
  const out = observations.map((o, i) => {
    if (!Number.isFinite(o.at)) {
      throw new MendError("invalid_argument", `observation ${i} has no finite time (at)`, {
        index: i,
        taskId: o.taskId,
      });
    }
    if (!Array.isArray(o.keys)) {
      throw new MendError("invalid_argument", `observation ${i} has no keys list`, {
        index: i,
        taskId: o.taskId,
      });
    }
    return { ...o, at: Math.min(o.at, now), keys: [...new Set(o.keys)].sort() };
  });
  return out.sort((a, b) => a.at - b.at);
}

/** A total order, so that results never depend on the order observations came in. */
function compareFailures(a: RetainedFailure, b: RetainedFailure): number {
  return (
    a.at - b.at ||
    cmp(a.taskId, b.taskId) ||
    cmp(a.workstreamId, b.workstreamId) ||
    cmp(a.handler, b.handler) ||
    cmp(a.category, b.category) ||
    cmp(a.keys.join("\n"), b.keys.join("\n"))
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function retentionMs(config: PatternConfig): number {
  const windows = [
    config.frequency.enabled ? config.frequency.windowMs : 0,
    config.sequence.enabled ? config.sequence.windowMs : 0,
    config.correlation.enabled ? config.correlation.windowMs : 0,
    // Anomaly and trend keep counts, not failures; these are for their evidence's task ids.
    config.anomaly.enabled || config.trend.enabled ? config.anomaly.windowMs : 0,
  ];
  return Math.max(...windows);
}

function retainFailures(
  state: PatternState,
  observed: Observation[],
  config: PatternConfig,
  now: number,
): void {
  const fresh = observed
    .filter((o) => !o.ok)
    .map((o): RetainedFailure => ({
      at: o.at,
      taskId: o.taskId,
      workstreamId: o.workstreamId,
      handler: o.handler,
      category: o.category ?? "unknown",
      keys: o.keys,
    }));
  const since = now - retentionMs(config);
  state.failures = [...state.failures, ...fresh]
    .filter((f) => f.at > since)
    .sort(compareFailures)
    .slice(-MAX_RETAINED_FAILURES);
}

function countSuccesses(
  state: PatternState,
  observed: Observation[],
  cfg: PatternConfig["correlation"],
  now: number,
): void {
  if (!cfg.enabled) {
    state.successes = {};
    return;
  }
  const slotMs = Math.ceil(cfg.windowMs / SUCCESS_SLOTS);
  // A slot overlaps the window (now - windowMs, now] when it starts after this.
  const after = now - cfg.windowMs - slotMs;
  // A Map, because keys are names from outside and one could be "__proto__".
  const byKey = new Map(Object.entries(state.successes));
  for (const o of observed) {
    if (!o.ok) continue;
    const start = Math.floor(o.at / slotMs) * slotMs;
    if (start <= after) continue;
    for (const key of o.keys) {
      const slots = byKey.get(key) ?? [];
      addToSlot(slots, start);
      byKey.set(key, slots);
    }
  }
  for (const [key, slots] of byKey) {
    const kept = slots.filter(([start]) => start > after);
    if (kept.length === 0) byKey.delete(key);
    else byKey.set(key, kept);
  }
  state.successes = Object.fromEntries(byKey);
}

/** Counts one in the slot starting at `start`, keeping slots sorted. */
function addToSlot(slots: Array<[number, number]>, start: number): void {
  let i = slots.length;
  while (i > 0 && slots[i - 1]![0] > start) i--;
  const slot = slots[i - 1];
  if (slot !== undefined && slot[0] === start) slot[1] += 1;
  else slots.splice(i, 0, [start, 1]);
}

function updateRates(
  state: PatternState,
  observed: Observation[],
  config: PatternConfig,
  now: number,
): void {
  const windowMs = config.anomaly.windowMs;
  if ((!config.anomaly.enabled && !config.trend.enabled) || state.rateWindowMs !== windowMs) {
    // Windows of another length cannot be compared with these: learn the baseline again.
    state.rates = {};
    state.rateWindowMs = windowMs;
    if (!config.anomaly.enabled && !config.trend.enabled) return;
  }
  const series = new Map(Object.entries(state.rates));
  const close = (s: RateSeries, start: number): void => {
    const done = s.current;
    if (done.total > 0) {
      foldBaseline(s.baseline, done.failures / done.total, config.anomaly.alpha);
      s.history = [...s.history, done].slice(-config.trend.windows);
    }
    s.current = { start, failures: 0, total: 0 };
  };
  for (const o of observed) {
    const start = Math.floor(o.at / windowMs) * windowMs;
    for (const name of ["all", `handler:${o.handler}`]) {
      let s = series.get(name);
      if (s === undefined) {
        s = {
          current: { start, failures: 0, total: 0 },
          baseline: { mean: 0, variance: 0, windows: 0 },
          history: [],
          lastAt: o.at,
        };
        series.set(name, s);
      }
      if (start < s.current.start) continue; // its window has closed and been folded
      if (start > s.current.start) close(s, start);
      s.current.total += 1;
      if (!o.ok) s.current.failures += 1;
      s.lastAt = Math.max(s.lastAt, o.at);
    }
  }
  const nowStart = Math.floor(now / windowMs) * windowMs;
  for (const [name, s] of series) {
    if (nowStart > s.current.start) close(s, nowStart);
    if (now - s.lastAt > SERIES_IDLE_MS) series.delete(name);
  }
  state.rates = Object.fromEntries(series);
}

/** One EWMA step; the variance is the matching exponentially weighted one. */
function foldBaseline(b: RateSeries["baseline"], rate: number, alpha: number): void {
  if (b.windows === 0) {
    b.mean = rate;
    b.variance = 0;
  } else {
    const diff = rate - b.mean;
    const step = alpha * diff;
    b.mean = Math.min(1, Math.max(0, b.mean + step));
    b.variance = Math.max(0, (1 - alpha) * (b.variance + diff * step));
  }
  b.windows += 1;
}

/** Failures of the last `windowMs` grouped by the given scopes, in canonical order. */
function groupFailures(
  failures: RetainedFailure[],
  since: number,
  scopes: readonly PatternScope[],
): Group[] {
  const groups = new Map<string, Group>();
  const add = (scope: PatternScope, subject: string, f: RetainedFailure): void => {
    const id = `${scope}:${subject}`;
    const group = groups.get(id) ?? { scope, subject, items: [] };
    group.items.push(f);
    groups.set(id, group);
  };
  for (const f of failures) {
    if (f.at <= since) continue;
    if (scopes.includes("category")) add("category", f.category, f);
    if (scopes.includes("handler")) add("handler", f.handler, f);
    if (scopes.includes("key")) for (const key of f.keys) add("key", key, f);
  }
  return [...groups.values()];
}

function actionFor(scope: PatternScope, subject: string): PatternAction {
  if (scope === "key") {
    const [prefix, name] = splitKey(subject);
    if (prefix === "breaker" && name !== "") return { kind: "open_breaker", breaker: name };
    if (prefix === "resource" && name !== "") return { kind: "mark_unhealthy", resource: name };
  }
  return { kind: "warn" };
}

function splitKey(key: string): [string, string] {
  const colon = key.indexOf(":");
  return colon < 0 ? ["", key] : [key.slice(0, colon), key.slice(colon + 1)];
}

/** The second half of a message: what to do. */
function advice(scope: PatternScope, subject: string, action: PatternAction): string {
  switch (action.kind) {
    case "open_breaker":
      return `open breaker ${action.breaker} so its tasks wait instead of failing`;
    case "mark_unhealthy":
      return `mark resource ${action.resource} unhealthy and check it`;
    case "degrade":
      return "degrade the work and check what changed";
    case "warn":
      if (scope === "handler") return `check handler ${subject} and what it calls`;
      if (scope === "category") return `check what is causing ${subject} failures`;
      if (scope === "all") return "check what the failing tasks have in common";
      return `check ${subject}`;
  }
}

function label(scope: PatternScope, subject: string): string {
  if (scope === "handler") return `handler ${subject}`;
  if (scope === "all") return "all tasks";
  return subject;
}

function evidenceTasks(items: readonly RetainedFailure[]): string[] {
  const ids: string[] = [];
  for (let i = items.length - 1; i >= 0 && ids.length < MAX_EVIDENCE_TASKS; i--) {
    const id = items[i]!.taskId;
    if (!ids.includes(id)) ids.push(id);
  }
  return ids.reverse();
}

/** 0.5 at the threshold, rising toward 1 as the count grows past it. */
function saturate(value: number, threshold: number): number {
  return 1 - 0.5 ** (value / threshold);
}

function clamp01(n: number): number {
  return Number.isNaN(n) ? 0 : Math.min(1, Math.max(0, n));
}

function percent(rate: number): string {
  return `${Math.round(clamp01(rate) * 100)}%`;
}

function detectFrequency(
  cfg: PatternConfig["frequency"],
  failures: RetainedFailure[],
  now: number,
): Candidate[] {
  if (!cfg.enabled) return [];
  const groups = groupFailures(failures, now - cfg.windowMs, ["category", "handler", "key"]);
  return groups
    .filter((g) => g.items.length >= cfg.threshold)
    .map(({ scope, subject, items }) => {
      const action = actionFor(scope, subject);
      const what =
        scope === "category"
          ? `${items.length} ${subject} failures`
          : `${items.length} failures ${scope === "key" ? "on" : "of"} ${label(scope, subject)}`;
      return {
        quietMs: cfg.windowMs,
        pattern: {
          detector: "frequency",
          id: `frequency:${scope}:${subject}`,
          subject,
          scope,
          confidence: saturate(items.length, cfg.threshold),
          message:
            `${what} in the last ${formatDuration(cfg.windowMs)} (threshold ${cfg.threshold}); ` +
            `${advice(scope, subject, action)}.`,
          action,
          at: now,
          evidence: { taskIds: evidenceTasks(items), count: items.length, windowMs: cfg.windowMs },
        },
      };
    });
}

/**
 * The latest occurrence of `categories`, in order, as a subsequence of `items`: matching from the
 * end backwards finds one whenever any exists.
 */
function matchLatest(
  items: RetainedFailure[],
  categories: readonly FailureCategory[],
): RetainedFailure[] | null {
  const matched: RetainedFailure[] = [];
  let want = categories.length - 1;
  for (let i = items.length - 1; i >= 0 && want >= 0; i--) {
    if (items[i]!.category === categories[want]) {
      matched.push(items[i]!);
      want--;
    }
  }
  return want < 0 ? matched.reverse() : null;
}

function detectSequences(
  cfg: PatternConfig["sequence"],
  failures: RetainedFailure[],
  now: number,
): Candidate[] {
  if (!cfg.enabled) return [];
  const candidates: Candidate[] = [];
  for (const { scope, subject, items } of groupFailures(failures, now - cfg.windowMs, [
    "handler",
    "key",
  ])) {
    for (const rule of cfg.sequences) {
      const matched = matchLatest(items, rule.categories);
      if (matched === null) continue;
      const spanMs = matched[matched.length - 1]!.at - matched[0]!.at;
      const action = actionFor(scope, subject);
      candidates.push({
        quietMs: cfg.windowMs,
        pattern: {
          detector: "sequence",
          id: `sequence:${rule.name}:${scope}:${subject}`,
          subject,
          scope,
          // A tighter sequence is less likely to be a coincidence.
          confidence: clamp01(1 - (0.5 * spanMs) / cfg.windowMs),
          message:
            `Failures ${scope === "key" ? "on" : "of"} ${label(scope, subject)} ran ` +
            `${rule.categories.join(" → ")} within ${formatDuration(spanMs)} ` +
            `(sequence ${rule.name}); ${advice(scope, subject, action)}.`,
          action,
          at: now,
          evidence: {
            taskIds: evidenceTasks(matched),
            count: matched.length,
            windowMs: cfg.windowMs,
          },
        },
      });
    }
  }
  return candidates;
}

function detectCorrelation(
  cfg: PatternConfig["correlation"],
  state: PatternState,
  now: number,
): Candidate[] {
  if (!cfg.enabled) return [];
  const successes = new Map(Object.entries(state.successes));
  const candidates: Candidate[] = [];
  for (const { scope, subject, items } of groupFailures(state.failures, now - cfg.windowMs, [
    "key",
  ])) {
    const tasks = new Set(items.map((f) => f.taskId)).size;
    if (tasks < cfg.minTasks) continue;
    const ok = (successes.get(subject) ?? []).reduce((sum, [, n]) => sum + n, 0);
    const share = items.length / (items.length + ok);
    if (share < cfg.minFailureShare) continue;
    const action = actionFor(scope, subject);
    candidates.push({
      quietMs: cfg.windowMs,
      pattern: {
        detector: "correlation",
        id: `correlation:${scope}:${subject}`,
        subject,
        scope,
        confidence: clamp01(saturate(tasks, cfg.minTasks) * (cfg.minFailureShare > 0 ? share : 1)),
        message:
          `${tasks} tasks sharing ${subject} failed within ${formatDuration(cfg.windowMs)} ` +
          `(${percent(share)} of its outcomes), so what they share looks down; ` +
          `${advice(scope, subject, action)}.`,
        action,
        at: now,
        evidence: { taskIds: evidenceTasks(items), count: items.length, windowMs: cfg.windowMs },
      },
    });
  }
  return candidates;
}

/** The subject a rate series is about. */
function seriesSubject(name: string): { scope: PatternScope; subject: string } {
  return name === "all"
    ? { scope: "all", subject: "all" }
    : { scope: "handler", subject: name.slice("handler:".length) };
}

function failuresOf(
  failures: RetainedFailure[],
  scope: PatternScope,
  subject: string,
  since: number,
) {
  return failures.filter((f) => f.at >= since && (scope === "all" || f.handler === subject));
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, error below 1.5e-7). */
function normalCdf(z: number): number {
  if (z === Infinity) return 1;
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const poly =
    t *
    (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-x * x);
  return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}

function detectAnomalies(
  cfg: PatternConfig["anomaly"],
  state: PatternState,
  now: number,
): Candidate[] {
  if (!cfg.enabled) return [];
  const candidates: Candidate[] = [];
  for (const [name, s] of Object.entries(state.rates)) {
    const { failures, total, start } = s.current;
    const { mean, variance, windows } = s.baseline;
    if (windows < cfg.warmupWindows || total < cfg.minOutcomes) continue;
    const rate = failures / total;
    if (rate <= mean || rate < cfg.factor * mean || rate - mean < cfg.minIncrease) continue;
    // Spread: the baseline's own variation plus this window's sampling noise, assuming at least
    // one failure in `total` even when the baseline is 0, so a quiet baseline is not infinitely sure.
    const p = Math.max(mean, 1 / total);
    const sd = Math.sqrt(variance + (p * (1 - p)) / total);
    const z = sd > 0 ? (rate - mean) / sd : Infinity;
    if (z < cfg.deviations) continue;
    const { scope, subject } = seriesSubject(name);
    const who = scope === "all" ? "All tasks are" : `Handler ${subject} is`;
    candidates.push({
      // One window for the open window to fill up again after its predecessor closes.
      quietMs: 2 * cfg.windowMs,
      pattern: {
        detector: "anomaly",
        id: `anomaly:${scope}:${subject}`,
        subject,
        scope,
        confidence: clamp01(normalCdf(z)),
        message:
          `${who} failing ${percent(rate)} of attempts in the current ` +
          `${formatDuration(cfg.windowMs)} window against a usual ${percent(mean)}; ` +
          `${advice(scope, subject, { kind: "degrade" })}.`,
        action: { kind: "degrade" },
        at: now,
        evidence: {
          taskIds: evidenceTasks(failuresOf(state.failures, scope, subject, start)),
          count: failures,
          windowMs: cfg.windowMs,
          failureRate: rate,
          baselineRate: mean,
        },
        confirmRate: clamp01(Math.max(cfg.factor * mean, mean + cfg.minIncrease)),
      },
    });
  }
  return candidates;
}

function detectTrends(
  cfg: PatternConfig["trend"],
  windowMs: number,
  state: PatternState,
  now: number,
): Candidate[] {
  if (!cfg.enabled) return [];
  const since = Math.floor(now / windowMs) * windowMs - cfg.windows * windowMs;
  const candidates: Candidate[] = [];
  for (const [name, s] of Object.entries(state.rates)) {
    const points = s.history.filter((w) => w.start >= since && w.total >= cfg.minOutcomes);
    const n = points.length;
    if (n < cfg.minWindows) continue;
    // x is ms relative to now (window midpoints), which keeps the arithmetic well-conditioned.
    const xs = points.map((w) => w.start + windowMs / 2 - now);
    const ys = points.map((w) => w.failures / w.total);
    const mx = xs.reduce((a, b) => a + b, 0) / n;
    const my = ys.reduce((a, b) => a + b, 0) / n;
    let sxx = 0;
    let sxy = 0;
    let syy = 0;
    for (let i = 0; i < n; i++) {
      sxx += (xs[i]! - mx) ** 2;
      sxy += (xs[i]! - mx) * (ys[i]! - my);
      syy += (ys[i]! - my) ** 2;
    }
    const slope = sxy / sxx;
    if (!(slope > 0)) continue;
    const rateNow = my - slope * mx;
    if (ys[n - 1]! >= cfg.threshold || rateNow >= cfg.threshold) continue; // crossed: not a forecast
    const etaMs = Math.round((cfg.threshold - rateNow) / slope);
    if (etaMs > cfg.horizonMs) continue;
    // Adjusted R²: how well a rising line explains the series, discounted for few points.
    const r2 = (sxy * sxy) / (sxx * syy);
    const confidence = clamp01(1 - ((1 - r2) * (n - 1)) / (n - 2));
    if (confidence < cfg.minConfidence) continue;
    const { scope, subject } = seriesSubject(name);
    const first = points[0]!;
    const spanMs = points[n - 1]!.start + windowMs - first.start;
    const perWindow = Math.round(slope * windowMs * 1000) / 10;
    candidates.push({
      quietMs: spanMs,
      pattern: {
        detector: "trend",
        id: `trend:${scope}:${subject}`,
        subject,
        scope,
        confidence,
        message:
          `The failure rate of ${label(scope, subject)} is rising (about ${percent(rateNow)} now, ` +
          `up ${perWindow} points per ${formatDuration(windowMs)}) and would reach ` +
          `${percent(cfg.threshold)} in about ${formatDuration(etaMs)}; ` +
          `${advice(scope, subject, { kind: "warn" })} before it does.`,
        action: { kind: "warn" },
        at: now,
        evidence: {
          taskIds: evidenceTasks(failuresOf(state.failures, scope, subject, first.start)),
          count: points.reduce((sum, w) => sum + w.failures, 0),
          windowMs: spanMs,
          failureRate: clamp01(rateNow),
        },
        confirmRate: clamp01(rateNow),
        forecast: { threshold: cfg.threshold, etaMs, crossesAt: now + etaMs },
      },
    });
  }
  return candidates;
}

/** Drops ongoing patterns already reported, and remembers the rest as ongoing. */
function deduplicate(state: PatternState, candidates: Candidate[], now: number): DetectedPattern[] {
  const active = new Map(Object.entries(state.active).filter(([, until]) => until >= now));
  const reported: DetectedPattern[] = [];
  for (const { pattern, quietMs } of candidates) {
    if (!active.has(pattern.id)) reported.push(pattern);
    active.set(pattern.id, now + quietMs);
  }
  state.active = Object.fromEntries(active);
  const rank = (p: DetectedPattern) => PATTERN_DETECTORS.indexOf(p.detector);
  return reported.sort((a, b) => rank(a) - rank(b) || cmp(a.id, b.id));
}

// ---------------------------------------------------------------------------------------------
// Judging

/**
 * Whether a reported pattern held up, from the outcomes that followed it, for the false-positive
 * count. Watches the subject's outcomes in `(pattern.at, pattern.at + evidence.windowMs]`: for a
 * key, those whose `keys` include it; for a handler, that handler's; for a category or `all`,
 * every outcome (a category's failures being those of that category).
 *
 * - Anomaly and trend (they carry `confirmRate`): once the window has ended, `confirmed` when the
 *   failure rate over it is at least `confirmRate`, else `false_positive`.
 * - The others: `confirmed` as soon as the subject fails again; `false_positive` once the window
 *   has ended with successes and no such failure.
 * - `null` while undecided, and when the subject had no outcomes in the window (nothing to judge
 *   by, e.g. because its breaker was open): stop asking once `now` is past the window.
 */
export function judgePattern(
  pattern: DetectedPattern,
  after: readonly Observation[],
  now: number,
): "confirmed" | "false_positive" | null {
  const end = pattern.at + pattern.evidence.windowMs;
  const { scope, subject } = pattern;
  const outcomes = after.filter(
    (o) =>
      o.at > pattern.at &&
      o.at <= end &&
      (scope === "key" ? o.keys.includes(subject) : scope !== "handler" || o.handler === subject),
  );
  const failed = outcomes.filter(
    (o) => !o.ok && (scope !== "category" || (o.category ?? "unknown") === subject),
  );
  if (pattern.confirmRate === undefined && failed.length > 0) return "confirmed";
  if (now < end || outcomes.length === 0) return null;
  if (pattern.confirmRate === undefined) {
    return outcomes.some((o) => o.ok) ? "false_positive" : null;
  }
  return failed.length / outcomes.length >= pattern.confirmRate ? "confirmed" : "false_positive";
}
