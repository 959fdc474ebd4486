/**
 * Graceful degradation as a pure state machine. Levels are ordered from 0 (`normal`) upward; the
 * monitor feeds {@link stepDegradation} one {@link DegradationMetrics} sample per sweep, stores
 * the returned state, and hands {@link levelView} of the current level to handlers. Time comes in
 * as parameters (epoch ms), so the same inputs always give the same level.
 */
import { z } from "zod";
import { MendError } from "../errors.js";
import { formatDuration, parseDuration } from "../model/duration.js";

/** Error rates are measured over this window unless the config or a level says otherwise: 60 s. */
export const DEFAULT_DEGRADATION_WINDOW_MS = 60_000;
/** Fewest outcomes in the window for an error rate to count: 1 failure of 1 is not a trend. */
export const DEFAULT_MIN_OUTCOMES = 10;
/** How long a level's recovery conditions must hold before stepping towards normal: 60 s. */
export const DEFAULT_RECOVER_FOR_MS = 60_000;
/** The name of level 0, which is implicit and may not be declared. */
export const NORMAL_LEVEL_NAME = "normal";

/** JSON data, as handed to handlers in `capabilities`. */
export type JsonValue =
  string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Metric thresholds shared by triggers and recovery conditions; absent means "not checked". */
export interface DegradationThresholds {
  /** Failed outcomes / all outcomes in the level's window, 0..1. */
  errorRate?: number;
  /** Caller-defined resource pressure (queue backlog, memory…), 0..1. */
  pressure?: number;
  /** 99th percentile task latency, ms. */
  p99LatencyMs?: number;
}

/** When a level is entered: any one threshold reached (value ≥ threshold) fires the trigger. */
export interface DegradationTrigger extends DegradationThresholds {
  /** The window `errorRate` is measured over, for the trigger and the recovery condition. */
  windowMs: number;
  /** An error rate over fewer outcomes than this neither fires nor blocks recovery. */
  minOutcomes: number;
}

/**
 * When a level may be left: its trigger does not fire, every threshold here is met (value ≤
 * threshold), and both have held continuously for `forMs`.
 */
export interface DegradationRecovery extends DegradationThresholds {
  forMs: number;
}

/** One degradation level, normalized. */
export interface DegradationLevel {
  name: string;
  /** Expected result quality at this level, 0..1. */
  quality: number;
  /** Free-form JSON handed to handlers as-is; Mend does not interpret it. */
  capabilities: { [key: string]: JsonValue };
  trigger: DegradationTrigger;
  recover: DegradationRecovery;
}

/** A validated degradation config: `levels[i]` is level `i + 1`. */
export interface DegradationConfig {
  /** The window of {@link DegradationMetrics.errorRate} and the default of each level's window. */
  windowMs: number;
  levels: DegradationLevel[];
}

/** Error-rate statistics over one window. */
export interface ErrorWindowStats {
  /** Failed outcomes / all outcomes, 0..1 (0 when there were none). */
  errorRate: number;
  /** Task outcomes (completions and failures) in the window. */
  outcomes: number;
}

/**
 * One sample of the system's health, taken by the caller at `at` (epoch ms). `errorRate` and
 * `outcomes` cover the config's `windowMs`; a level with another window reads
 * `windows[thatWindowMs]` (see {@link errorWindows}). `null` means "no data", which never fires a
 * trigger and never blocks recovery.
 */
export interface DegradationMetrics extends ErrorWindowStats {
  at: number;
  p99LatencyMs: number | null;
  pressure: number | null;
  windows?: Record<number, ErrorWindowStats>;
}

/** The machine's state; plain JSON, stored by the caller between sweeps. */
export interface DegradationState {
  level: number;
  /** When the current level was entered, epoch ms. */
  since: number;
  /** When the current level's recovery conditions began to hold, or null. */
  recoveringSince: number | null;
}

/** A level change, for the `degradation_changed` transition. */
export interface DegradationChange {
  from: number;
  to: number;
  reason: string;
}

/** What a handler sees as `ctx.degradation`. */
export interface DegradationView {
  level: number;
  name: string;
  quality: number;
  capabilities: { [key: string]: JsonValue };
}

/** Level 0: what the system is before anything degraded it. */
export const NORMAL_DEGRADATION: Readonly<DegradationView> = Object.freeze({
  level: 0,
  name: NORMAL_LEVEL_NAME,
  quality: 1,
  capabilities: {},
});

// ---------------------------------------------------------------------------------------------
// Config

const durationSchema = z
  .custom<string | number>((value) => typeof value === "string" || typeof value === "number", {
    error: (iss) =>
      `expected a duration such as "30s" or a number of milliseconds, got ${describe(iss.input)}`,
  })
  .transform((value, ctx) => {
    try {
      return parseDuration(value);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message, input: value });
      return z.NEVER;
    }
  });

/** An error rate over an empty window means nothing. */
const windowSchema = durationSchema.refine((ms) => ms > 0, { error: "must be longer than 0" });
const fraction = z.number().min(0).max(1);
const THRESHOLD_KEYS = ["errorRate", "pressure", "p99LatencyMs"] as const;

const levelSchema = z
  .strictObject({
    name: z.string().trim().min(1).max(100),
    trigger: z.strictObject({
      // A trigger at 0 would fire on a perfectly healthy system.
      errorRate: fraction.gt(0).optional(),
      pressure: fraction.gt(0).optional(),
      p99LatencyMs: z.number().gt(0).optional(),
      window: windowSchema.optional(),
      minOutcomes: z.number().int().min(1).optional(),
    }),
    recover: z
      .strictObject({
        errorRate: fraction.optional(),
        pressure: fraction.optional(),
        p99LatencyMs: z.number().min(0).optional(),
        for: durationSchema.optional(),
      })
      .optional(),
    quality: fraction.optional(),
    capabilities: z.record(z.string(), z.json()).optional(),
  })
  .superRefine((level, ctx) => {
    if (THRESHOLD_KEYS.every((key) => level.trigger[key] === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["trigger"],
        message: `needs at least one of ${THRESHOLD_KEYS.join(", ")}`,
      });
    }
    if (level.name.toLowerCase() === NORMAL_LEVEL_NAME) {
      ctx.addIssue({
        code: "custom",
        path: ["name"],
        message: `"${NORMAL_LEVEL_NAME}" is level 0, which is implicit`,
      });
    }
    for (const key of THRESHOLD_KEYS) {
      const trigger = level.trigger[key];
      const recover = level.recover?.[key];
      // Hysteresis: recovering at a worse value than the trigger would make the level flap.
      if (trigger !== undefined && recover !== undefined && recover > trigger) {
        ctx.addIssue({
          code: "custom",
          path: ["recover", key],
          message: `must be at most trigger.${key} (${trigger}), got ${recover}`,
        });
      }
    }
  });

/**
 * The degradation config as written (JSON/YAML/TS), validated and normalized into a
 * {@link DegradationConfig}: durations in ms, defaults applied. Parse through
 * {@link parseDegradationConfig} for a {@link MendError} naming every problem's path.
 */
export const degradationConfigSchema = z
  .strictObject({
    window: windowSchema.optional(),
    levels: z.array(levelSchema),
  })
  .superRefine((config, ctx) => {
    const seen = new Map<string, number>();
    config.levels.forEach((level, i) => {
      const key = level.name.toLowerCase();
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else {
        ctx.addIssue({
          code: "custom",
          path: ["levels", i, "name"],
          message: `duplicate level name "${level.name}" (also levels[${first}])`,
        });
      }
    });
  })
  .transform((config): DegradationConfig => {
    const windowMs = config.window ?? DEFAULT_DEGRADATION_WINDOW_MS;
    return {
      windowMs,
      levels: config.levels.map(({ name, trigger, recover, quality, capabilities }) => {
        const { window, minOutcomes, ...triggerThresholds } = trigger;
        const { for: forMs, ...recoverThresholds } = recover ?? {};
        return {
          name,
          quality: quality ?? 1,
          capabilities: capabilities ?? {},
          trigger: {
            ...triggerThresholds,
            windowMs: window ?? windowMs,
            minOutcomes: minOutcomes ?? DEFAULT_MIN_OUTCOMES,
          },
          recover: { ...recoverThresholds, forMs: forMs ?? DEFAULT_RECOVER_FOR_MS },
        };
      }),
    };
  });

/** A degradation config as people write it. */
export type DegradationConfigInput = z.input<typeof degradationConfigSchema>;

/** One thing wrong with a config; `path` is like `levels[0].trigger.errorRate`. */
export interface DegradationConfigProblem {
  path: string;
  message: string;
}

/**
 * Validates and normalizes a degradation config.
 *
 * @throws MendError `invalid_argument` listing every problem with its path; `context.problems`
 *   holds them as {@link DegradationConfigProblem}s.
 */
export function parseDegradationConfig(raw: unknown): DegradationConfig {
  const parsed = degradationConfigSchema.safeParse(raw, { error: issueMessage });
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((iss) => ({
    path: formatPath(iss.path),
    message: iss.message,
  }));
  const lines = problems.map((p) => `  - ${p.path === "" ? "" : `${p.path}: `}${p.message}`);
  throw new MendError("invalid_argument", `invalid degradation config:\n${lines.join("\n")}`, {
    problems,
  });
}

/**
 * The error-rate windows (ms, ascending) the config's levels read. The caller reports the config's
 * own `windowMs` in `metrics.errorRate`/`outcomes` and every other one in `metrics.windows`.
 */
export function errorWindows(config: DegradationConfig): number[] {
  const used = config.levels
    .filter((l) => l.trigger.errorRate !== undefined || l.recover.errorRate !== undefined)
    .map((l) => l.trigger.windowMs);
  return [...new Set(used)].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// State machine

/** The state of a system that has never degraded, starting at `at` (epoch ms). */
export function initialDegradationState(at: number): DegradationState {
  return { level: 0, since: at, recoveringSince: null };
}

/**
 * Advances the machine by one metrics sample. Escalates at once to the highest level whose trigger
 * fires (never lower than the current one); otherwise steps one level towards normal once the
 * current level's recovery conditions have held continuously for its `recover.forMs`. Any sample
 * on which they do not hold (its trigger firing included) restarts that timer. A stored level
 * above the config's highest (the config shrank) drops to the highest.
 *
 * @throws MendError `invalid_argument` for a malformed state or metrics sample, or metrics missing
 *   a window the config needs (see {@link errorWindows}).
 */
export function stepDegradation(
  config: DegradationConfig,
  state: DegradationState,
  metrics: DegradationMetrics,
): { state: DegradationState; change: DegradationChange | null } {
  checkState(state);
  checkMetrics(metrics);
  const at = metrics.at;
  const top = config.levels.length;

  let fired = 0;
  let causes: string[] = [];
  for (let i = top; i >= 1 && fired === 0; i--) {
    causes = triggerCauses(config, config.levels[i - 1]!, metrics);
    if (causes.length > 0) fired = i;
  }
  const enter = (to: number, reason: string) => {
    // A level entered while its recovery conditions already hold starts its timer now.
    const holds = to > 0 && recoveryHolds(config, config.levels[to - 1]!, metrics);
    return {
      state: { level: to, since: at, recoveringSince: holds ? at : null },
      change: { from: state.level, to, reason },
    };
  };

  if (fired > state.level) {
    return enter(fired, `degraded to ${label(config, fired)}: ${causes.join("; ")}`);
  }
  if (state.level > top) {
    return enter(
      top,
      `level ${state.level} is no longer configured (the config has ${top}); now ${label(config, top)}`,
    );
  }
  if (state.level === 0) return { state: { ...state, recoveringSince: null }, change: null };

  const level = config.levels[state.level - 1]!;
  if (!recoveryHolds(config, level, metrics)) {
    return { state: { ...state, recoveringSince: null }, change: null };
  }
  const holdingSince = state.recoveringSince ?? at;
  if (at - holdingSince < level.recover.forMs) {
    return { state: { ...state, recoveringSince: holdingSince }, change: null };
  }
  return enter(
    state.level - 1,
    `recovered to ${label(config, state.level - 1)}: recovery conditions of "${level.name}" ` +
      `held for ${formatDuration(at - holdingSince)}`,
  );
}

/**
 * What a handler sees at `level`: its name, quality and capabilities (a copy, so a handler cannot
 * change the config). Level 0 is `normal`, quality 1, no capabilities; a level above the config's
 * highest reads as the highest, as {@link stepDegradation} will make it on its next sweep.
 *
 * @throws MendError `invalid_argument` when `level` is not a whole number from 0.
 */
export function levelView(config: DegradationConfig, level: number): DegradationView {
  checkLevel(level);
  const at = Math.min(level, config.levels.length);
  if (at === 0) return { ...NORMAL_DEGRADATION, capabilities: {} };
  const { name, quality, capabilities } = config.levels[at - 1]!;
  return { level: at, name, quality, capabilities: structuredClone(capabilities) };
}

/**
 * Total ms spent above level 0 within `[from, to]`, given level changes (any order). The level
 * before the earliest change is 0, so pass the last change before `from` too.
 *
 * @throws MendError `invalid_argument` when `to < from` or a change is malformed.
 */
export function timeDegraded(
  changes: readonly { at: number; to: number }[],
  from: number,
  to: number,
): number {
  if (!Number.isFinite(from) || !Number.isFinite(to) || to < from) {
    throw new MendError("invalid_argument", `invalid time range [${from}, ${to}]`, { from, to });
  }
  for (const change of changes) {
    if (!Number.isFinite(change.at)) {
      throw new MendError("invalid_argument", `change time must be epoch ms, got ${change.at}`, {
        change,
      });
    }
    checkLevel(change.to);
  }
  const sorted = [...changes].sort((a, b) => a.at - b.at);
  let total = 0;
  let level = 0;
  let since = from;
  for (const change of [...sorted, { at: Infinity, to: 0 }]) {
    if (level > 0) total += Math.max(0, Math.min(change.at, to) - Math.max(since, from));
    level = change.to;
    since = change.at;
  }
  return total;
}

function triggerCauses(
  config: DegradationConfig,
  level: DegradationLevel,
  metrics: DegradationMetrics,
): string[] {
  const { trigger } = level;
  const causes: string[] = [];
  if (trigger.errorRate !== undefined) {
    const stats = errorStats(config, metrics, trigger.windowMs);
    if (stats.outcomes >= trigger.minOutcomes && stats.errorRate >= trigger.errorRate) {
      causes.push(
        `error rate ${percent(stats.errorRate)} over ${formatDuration(trigger.windowMs)} ` +
          `(${stats.outcomes} outcomes) >= ${percent(trigger.errorRate)}`,
      );
    }
  }
  if (trigger.pressure !== undefined && (metrics.pressure ?? -1) >= trigger.pressure) {
    causes.push(`pressure ${metrics.pressure} >= ${trigger.pressure}`);
  }
  if (trigger.p99LatencyMs !== undefined && (metrics.p99LatencyMs ?? -1) >= trigger.p99LatencyMs) {
    causes.push(
      `p99 latency ${formatDuration(metrics.p99LatencyMs!)} >= ${formatDuration(trigger.p99LatencyMs)}`,
    );
  }
  return causes;
}

function recoveryHolds(
  config: DegradationConfig,
  level: DegradationLevel,
  metrics: DegradationMetrics,
): boolean {
  if (triggerCauses(config, level, metrics).length > 0) return false;
  const { recover, trigger } = level;
  if (recover.errorRate !== undefined) {
    const stats = errorStats(config, metrics, trigger.windowMs);
    if (stats.outcomes >= trigger.minOutcomes && stats.errorRate > recover.errorRate) return false;
  }
  if (recover.pressure !== undefined && (metrics.pressure ?? 0) > recover.pressure) return false;
  return recover.p99LatencyMs === undefined || (metrics.p99LatencyMs ?? 0) <= recover.p99LatencyMs;
}

function errorStats(
  config: DegradationConfig,
  metrics: DegradationMetrics,
  windowMs: number,
): ErrorWindowStats {
  const stats = metrics.windows?.[windowMs] ?? (windowMs === config.windowMs ? metrics : undefined);
  if (stats === undefined) {
    throw new MendError(
      "invalid_argument",
      `degradation metrics lack the error rate over ${formatDuration(windowMs)}: ` +
        `set metrics.windows[${windowMs}] for every window errorWindows(config) lists`,
      { windowMs },
    );
  }
  return stats;
}

function label(config: DegradationConfig, level: number): string {
  return `"${levelView(config, level).name}" (level ${level})`;
}

function percent(rate: number): string {
  return `${Number((rate * 100).toFixed(1))}%`;
}

function checkLevel(level: number): void {
  if (!Number.isInteger(level) || level < 0) {
    throw new MendError(
      "invalid_argument",
      `degradation level must be a whole number from 0, got ${level}`,
      { level },
    );
  }
}

function checkState(state: DegradationState): void {
  checkLevel(state.level);
  if (
    !Number.isFinite(state.since) ||
    (state.recoveringSince !== null && !Number.isFinite(state.recoveringSince))
  ) {
    throw new MendError("invalid_argument", "degradation state times must be epoch ms", { state });
  }
}

function checkMetrics(metrics: DegradationMetrics): void {
  const bad = (field: string, value: unknown) =>
    new MendError("invalid_argument", `invalid degradation metric ${field}: ${String(value)}`, {
      field,
      value,
    });
  if (!Number.isFinite(metrics.at)) throw bad("at", metrics.at);
  const windows = Object.entries(metrics.windows ?? {}).map(([w, s]) => [`windows[${w}].`, s]);
  for (const [prefix, stats] of [["", metrics], ...windows] as [string, ErrorWindowStats][]) {
    if (!(stats.errorRate >= 0 && stats.errorRate <= 1)) {
      throw bad(`${prefix}errorRate`, stats.errorRate);
    }
    if (!Number.isInteger(stats.outcomes) || stats.outcomes < 0) {
      throw bad(`${prefix}outcomes`, stats.outcomes);
    }
  }
  const { pressure, p99LatencyMs } = metrics;
  if (pressure !== null && !(pressure >= 0 && pressure <= 1)) throw bad("pressure", pressure);
  if (p99LatencyMs !== null && !(p99LatencyMs >= 0 && Number.isFinite(p99LatencyMs))) {
    throw bad("p99LatencyMs", p99LatencyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Messages

function issueMessage(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case "invalid_type":
      return `expected ${iss.expected}, got ${describe(iss.input)}`;
    case "too_small":
    case "too_big": {
      const small = iss.code === "too_small";
      const bound = small ? iss.minimum : iss.maximum;
      if (iss.origin === "string") {
        return small ? "must not be empty" : `must be at most ${String(bound)} characters long`;
      }
      const [least, most] = iss.inclusive ? ["at least", "at most"] : ["more than", "less than"];
      return `must be ${small ? least : most} ${String(bound)}, got ${describe(iss.input)}`;
    }
    case "unrecognized_keys":
      return `unknown key${iss.keys.length === 1 ? "" : "s"} ${iss.keys.map((k) => `"${k}"`).join(", ")}`;
    case "invalid_union":
      // The only unions are z.json()'s, inside `capabilities`.
      return `must be JSON data (string, number, boolean, null, list or object), got ${describe(iss.input)}`;
    default:
      return undefined;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((segment, i) =>
      typeof segment === "number" ? `[${segment}]` : `${i === 0 ? "" : "."}${String(segment)}`,
    )
    .join("");
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
