/**
 * Recovery metrics computed from the transition log (the event store) and the interventions log
 * alone. They are a pure function of those records and a window, so every process computes the
 * same numbers and a restart loses nothing. Definitions and units: docs/metrics.md.
 *
 * @module
 */
import { MendError } from "../errors.js";
import type { InterventionRecord, TransitionRecord } from "../model/records.js";
import { emptyHealthInputs, failuresPerMinute, type HealthInputs, healthScore } from "./health.js";

/**
 * Events that record a failed attempt; `detail.failure` holds the classified failure. A fallback
 * is one too: the attempt failed and the engine answered by switching handlers.
 */
export const FAILED_ATTEMPT_EVENTS: ReadonlySet<string> = new Set([
  "task_retry_scheduled",
  "task_timeout",
  "worker_lost",
  "task_fallback",
  "task_failed",
  "task_failed_noncritical",
  "task_quarantined",
]);

/** Events that record a task's completion. */
export const COMPLETION_EVENTS: ReadonlySet<string> = new Set(["task_completed", "task_recovered"]);

/** Task states an episode can end in unrecovered; a later move out of them reopens the episode. */
const SETTLED_TASK_STATES: ReadonlySet<string> = new Set(["failed", "cancelled", "skipped"]);

/** States that end a compensation workstream; a move back to `active` reopens it. */
const ENDED_WORKSTREAM_STATES: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"]);

/** Buckets of the `mend_recovery_seconds` histogram, in seconds: 100 ms to one hour. */
export const RECOVERY_BUCKETS_SECONDS: readonly number[] = [
  0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
];

/** True when `actor` is a person: anything but `engine`, `monitor`, `cli` and `worker:*`. */
export function isPerson(actor: string): boolean {
  return !(
    actor === "engine" ||
    actor === "monitor" ||
    actor === "cli" ||
    actor.startsWith("worker:")
  );
}

/** What metrics are computed from. Times are epoch milliseconds. */
export interface MetricsInput {
  /**
   * The transition log, in any order (it is replayed by `seq`). Pass it from the beginning, not
   * only the window: records before `from` set the state the window starts in (open failure
   * episodes, degradation level, breaker states). Records after `to` are ignored.
   */
  transitions: readonly TransitionRecord[];
  /** The interventions log; records outside the window are ignored. */
  interventions: readonly InterventionRecord[];
  /** Window start, inclusive. Omitted: the earliest record, so the whole log ("overall"). */
  from?: number;
  /** Window end, inclusive; usually the clock's now. */
  to: number;
}

/** Summary of a set of durations, in seconds. Percentiles are nearest-rank. */
export interface DurationSummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** One circuit breaker over the window. */
export interface BreakerMetrics {
  /** Moves into `open` from another state inside the window. */
  opened: number;
  /** State at `to`: `closed`, `open` or `half_open`. */
  state: string;
  /** Milliseconds the breaker spent `open` inside the window (half-open is not counted). */
  openMs: number;
}

/**
 * Recovery metrics over a window. Counts are of events inside the window; rates are in [0, 1] and
 * null when their denominator is 0. A failure episode belongs to the window it ends in.
 */
export interface RecoveryMetrics {
  window: { from: number; to: number };
  recovery: {
    /** Episodes that ended in the window: `recovered + unrecovered`. */
    ended: number;
    /** Ended with the task completed and its lease released (a validated recovery). */
    recovered: number;
    /** Recovered with no person acting on the task during the episode. */
    autoRecovered: number;
    /** Ended with the task failed, cancelled or skipped and not reopened by `to`. */
    unrecovered: number;
    /** Episodes still open at `to` (whenever they began); not in any rate. */
    inProgress: number;
    /** Of `inProgress`: the task completed but still holds its lease, so it is not validated. */
    awaitingValidation: number;
    /** Time to recover of the recovered episodes, in seconds; null when none recovered. */
    seconds: DurationSummary | null;
    /** Those same durations in seconds, ascending: the histogram's samples. */
    samplesSeconds: number[];
  };
  /** `recovered / ended`; null when no episode ended. */
  recoverySuccessRate: number | null;
  /** `autoRecovered / ended`; null when no episode ended. */
  autoRecoveryRate: number | null;
  /** Intervention records in the window, in total and by command. */
  interventions: { total: number; byCommand: Record<string, number> };
  /** `started` task_started events over `tasks` distinct tasks; `amplification = started / tasks`. */
  attempts: { started: number; tasks: number; amplification: number | null };
  /** Failed attempts by `detail.failure.category` (`unknown` when absent); `perMinute` as in health. */
  failures: { total: number; byCategory: Record<string, number>; perMinute: number };
  /** task_revived events, distinct tasks revived, and of those tasks how many then recovered. */
  revivals: { count: number; tasks: number; completed: number };
  /** task_stalled events (a running task without progress for its threshold), distinct tasks. */
  stalls: { count: number; tasks: number };
  /** Pattern events; `falsePositiveRate = falsePositives / (confirmed + falsePositives)`. */
  patterns: {
    detected: number;
    confirmed: number;
    falsePositives: number;
    falsePositiveRate: number | null;
  };
  /**
   * `degradedMs`: milliseconds of the window spent at a level above 0; `changes`: degradation
   * transitions in the window; `level` and `name`: in force at `to` (name null if never set).
   */
  degradation: { degradedMs: number; changes: number; level: number; name: string | null };
  /** Every breaker seen up to `to`, by name. */
  breakers: Record<string, BreakerMetrics>;
  /**
   * Compensation workstreams: `scheduled` in the window; `ended` in the window (completed, failed
   * or cancelled, not reopened by `to`), of which `completed`; `successRate = completed / ended`.
   */
  compensation: { scheduled: number; ended: number; completed: number; successRate: number | null };
  /** Health scores in [0, 1] (see `healthScore`): the system, and each worker and workstream seen. */
  health: { system: number; workers: Record<string, number>; workstreams: Record<string, number> };
}

interface Window {
  from: number;
  to: number;
}

/** A task's failure episode: from its first failed attempt after it was last fine. */
interface Episode {
  workstream: string | null;
  startAt: number;
  /** Workers whose attempts failed during the episode. */
  workers: Set<string>;
  /** A person acted on the task during the episode: the recovery is not automatic. */
  person: boolean;
  /** When the task settled failed, cancelled or skipped; null while it may still recover. */
  settledAt: number | null;
  /** A completion that did not release the lease: the recovery waits for its validation. */
  completedAt: number | null;
}

/** Health inputs per scope, created on first sight so idle workers still get a score. */
class Scopes {
  readonly system = emptyHealthInputs();
  readonly workers = new Map<string, HealthInputs>();
  readonly workstreams = new Map<string, HealthInputs>();

  worker(id: string): HealthInputs {
    return getOrCreate(this.workers, id);
  }

  workstream(id: string): HealthInputs {
    return getOrCreate(this.workstreams, id);
  }

  /** The scopes a failed attempt or an episode counts in. */
  of(workers: Iterable<string>, workstream: string | null): HealthInputs[] {
    const scopes = [this.system, ...[...workers].map((w) => this.worker(w))];
    if (workstream !== null) scopes.push(this.workstream(workstream));
    return scopes;
  }
}

function getOrCreate(map: Map<string, HealthInputs>, id: string): HealthInputs {
  let h = map.get(id);
  if (!h) map.set(id, (h = emptyHealthInputs()));
  return h;
}

const inside = (w: Window, at: number): boolean => at >= w.from && at <= w.to;

/** Milliseconds of [a, b] that fall inside the window. */
const overlapMs = (w: Window, a: number, b: number): number =>
  Math.max(0, Math.min(b, w.to) - Math.max(a, w.from));

const ratio = (num: number, den: number): number | null => (den === 0 ? null : num / den);

function nonEmptyString(v: unknown): string | null {
  return typeof v === "string" && v !== "" ? v : null;
}

function actorWorker(actor: string): string | null {
  return actor.startsWith("worker:") ? nonEmptyString(actor.slice("worker:".length)) : null;
}

function failureCategory(t: TransitionRecord): string {
  const failure = t.detail?.failure;
  const category =
    typeof failure === "object" && failure !== null
      ? (failure as { category?: unknown }).category
      : null;
  return nonEmptyString(category) ?? "unknown";
}

/**
 * Whether `t` releases the task's lease. A completion releases it unless its data says the token
 * is still set (an absent field is taken as released); a later transition validates a pending
 * completion only by setting the token to null explicitly.
 */
function releasesLease(t: TransitionRecord): boolean {
  if (COMPLETION_EVENTS.has(t.event)) return (t.data.leaseToken ?? null) === null;
  return "leaseToken" in t.data && t.data.leaseToken === null;
}

function sortedRecord<V>(entries: Iterable<[string, V]>): Record<string, V> {
  return Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function countBy(keys: Iterable<string>): Record<string, number> {
  const counts = new Map<string, number>();
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
  return sortedRecord(counts);
}

function nearestRank(sorted: readonly number[], p: number): number {
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1]!;
}

function summarize(sorted: readonly number[]): DurationSummary | null {
  if (sorted.length === 0) return null;
  return {
    count: sorted.length,
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    p50: nearestRank(sorted, 50),
    p90: nearestRank(sorted, 90),
    p99: nearestRank(sorted, 99),
    max: sorted[sorted.length - 1]!,
  };
}

/** Replays the task log: failure episodes, attempts, failed attempts and revivals. */
function replayTasks(log: readonly TransitionRecord[], w: Window, scopes: Scopes) {
  const lastWorker = new Map<string, string>();
  const open = new Map<string, Episode>();
  const startedTasks = new Set<string>();
  const categories: string[] = [];
  const revived = new Set<string>();
  const revivedRecovered = new Set<string>();
  const samples: number[] = [];
  let started = 0;
  let revivals = 0;
  let stalls = 0;
  const stalled = new Set<string>();
  let autoRecovered = 0;
  let unrecovered = 0;
  let inProgress = 0;
  let awaitingValidation = 0;

  for (const t of log) {
    const id = t.entityId;
    const here = inside(w, t.at);
    if (t.event === "task_started") {
      const worker = actorWorker(t.actor);
      if (worker !== null) lastWorker.set(id, worker);
      if (here) {
        started++;
        startedTasks.add(id);
        if (worker !== null) scopes.worker(worker);
      }
    }
    if (t.event === "task_revived" && here) {
      revivals++;
      revived.add(id);
    }
    if (t.event === "task_stalled" && here) {
      stalls++;
      stalled.add(id);
    }
    let ep = open.get(id);
    if (FAILED_ATTEMPT_EVENTS.has(t.event)) {
      // The monitor records a lost worker's failure, so the actor is not always the worker.
      const worker =
        nonEmptyString(t.detail?.worker) ?? actorWorker(t.actor) ?? lastWorker.get(id) ?? null;
      if (!ep) {
        ep = {
          workstream: t.workstreamId,
          startAt: t.at,
          workers: new Set(),
          person: false,
          settledAt: null,
          completedAt: null,
        };
        open.set(id, ep);
      }
      if (worker !== null) ep.workers.add(worker);
      if (here) {
        categories.push(failureCategory(t));
        for (const s of scopes.of(worker === null ? [] : [worker], t.workstreamId)) s.failures++;
      }
    }
    if (!ep) continue;
    if (isPerson(t.actor)) ep.person = true;
    if (COMPLETION_EVENTS.has(t.event)) ep.completedAt = t.at;
    if (ep.completedAt !== null && releasesLease(t)) {
      open.delete(id);
      if (!here) continue;
      // Clamped: records are replayed in seq order, and `at` comes from clocks that may step back.
      const seconds = Math.max(0, t.at - ep.startAt) / 1000;
      samples.push(seconds);
      if (!ep.person) autoRecovered++;
      if (revived.has(id)) revivedRecovered.add(id);
      for (const s of scopes.of(ep.workers, ep.workstream)) {
        s.ended++;
        s.recovered++;
        s.recoverySeconds += seconds;
      }
      continue;
    }
    ep.settledAt = SETTLED_TASK_STATES.has(t.to) ? t.at : null;
  }

  for (const ep of open.values()) {
    if (ep.settledAt === null) {
      inProgress++;
      if (ep.completedAt !== null) awaitingValidation++;
      scopes.of(ep.workers, ep.workstream); // listed, so a worker with an open episode is scored
    } else if (inside(w, ep.settledAt)) {
      unrecovered++;
      for (const s of scopes.of(ep.workers, ep.workstream)) s.ended++;
    }
  }

  samples.sort((a, b) => a - b);
  return {
    recovery: {
      ended: samples.length + unrecovered,
      recovered: samples.length,
      autoRecovered,
      unrecovered,
      inProgress,
      awaitingValidation,
      seconds: summarize(samples),
      samplesSeconds: samples,
    },
    attempts: {
      started,
      tasks: startedTasks.size,
      amplification: ratio(started, startedTasks.size),
    },
    categories,
    revivals: { count: revivals, tasks: revived.size, completed: revivedRecovered.size },
    stalls: { count: stalls, tasks: stalled.size },
  };
}

/** Compensation workstreams, keyed by the id `compensation_scheduled` created them under. */
function replayCompensation(log: readonly TransitionRecord[], w: Window) {
  const ends = new Map<string, { at: number; ok: boolean } | null>();
  let scheduled = 0;
  for (const t of log) {
    if (t.event === "compensation_scheduled") {
      ends.set(t.entityId, null);
      if (inside(w, t.at)) scheduled++;
    } else if (ends.has(t.entityId)) {
      if (ENDED_WORKSTREAM_STATES.has(t.to)) {
        ends.set(t.entityId, { at: t.at, ok: t.to === "completed" });
      } else if (t.to === "active") {
        ends.set(t.entityId, null);
      }
    }
  }
  const ended = [...ends.values()].filter(
    (e): e is { at: number; ok: boolean } => e !== null && inside(w, e.at),
  );
  const completed = ended.filter((e) => e.ok).length;
  return { scheduled, ended: ended.length, completed, successRate: ratio(completed, ended.length) };
}

function replayDegradation(log: readonly TransitionRecord[], w: Window) {
  let level = 0;
  let name: string | null = null;
  let since = w.from;
  let degradedMs = 0;
  let changes = 0;
  for (const t of log) {
    if (level > 0) degradedMs += overlapMs(w, since, t.at);
    const given = t.data.level;
    // `data` holds the changed fields only; without a level, `to` still says normal or not.
    level =
      typeof given === "number" && Number.isFinite(given)
        ? given
        : t.to === "normal"
          ? 0
          : Math.max(level, 1);
    name = nonEmptyString(t.data.name) ?? t.to;
    since = t.at;
    if (inside(w, t.at)) changes++;
  }
  if (level > 0) degradedMs += overlapMs(w, since, w.to);
  return { degradedMs, changes, level, name };
}

function replayBreakers(
  log: readonly TransitionRecord[],
  w: Window,
): Record<string, BreakerMetrics> {
  const breakers = new Map<string, BreakerMetrics & { since: number }>();
  for (const t of log) {
    let b = breakers.get(t.entityId);
    if (!b) breakers.set(t.entityId, (b = { opened: 0, state: "closed", openMs: 0, since: t.at }));
    if (b.state === "open") b.openMs += overlapMs(w, b.since, t.at);
    if (t.to === "open" && b.state !== "open" && inside(w, t.at)) b.opened++;
    b.state = t.to;
    b.since = t.at;
  }
  return sortedRecord(
    [...breakers].map(([id, { opened, state, openMs, since }]): [string, BreakerMetrics] => [
      id,
      { opened, state, openMs: openMs + (state === "open" ? overlapMs(w, since, w.to) : 0) },
    ]),
  );
}

function resolveWindow(input: MetricsInput): Window {
  const { to } = input;
  let from = input.from;
  if (from === undefined) {
    // A loop, not Math.min(...ats): the log can be longer than the argument limit.
    from = to;
    for (const r of input.transitions) from = Math.min(from, r.at);
    for (const r of input.interventions) from = Math.min(from, r.at);
  }
  if (!Number.isFinite(to) || !Number.isFinite(from) || from > to) {
    throw new MendError(
      "invalid_argument",
      `metrics window must be finite with from <= to, got from=${from} to=${to}`,
      { from, to },
    );
  }
  return { from, to };
}

/**
 * Computes the recovery metrics and health scores of the window `[from, to]` (both inclusive:
 * for back-to-back windows that share no event, end one at the next one's `from - 1`).
 *
 * @throws MendError `invalid_argument` when the window is not finite or `from > to`.
 */
export function computeMetrics(input: MetricsInput): RecoveryMetrics {
  const w = resolveWindow(input);
  const windowMs = w.to - w.from;
  const byEntity = new Map<string, TransitionRecord[]>();
  const scopes = new Scopes();
  for (const t of [...input.transitions].sort((a, b) => a.seq - b.seq)) {
    if (t.at > w.to) continue;
    // A string, not EntityKind: entity kinds are added over time and unknown ones are skipped.
    const entity: string = t.entity;
    let list = byEntity.get(entity);
    if (!list) byEntity.set(entity, (list = []));
    list.push(t);
    if (!inside(w, t.at)) continue;
    if (entity === "worker") scopes.worker(t.entityId);
    const ws = t.workstreamId ?? (entity === "workstream" ? t.entityId : null);
    if (ws !== null) scopes.workstream(ws);
  }
  const of = (entity: string) => byEntity.get(entity) ?? [];

  const tasks = replayTasks(of("task"), w, scopes);
  const { recovery } = tasks;
  const interventions = input.interventions.filter((r) => inside(w, r.at));
  const patterns = countBy(
    of("pattern")
      .filter((t) => inside(w, t.at))
      .map((t) => t.event),
  );
  const confirmed = patterns.pattern_confirmed ?? 0;
  const falsePositives = patterns.pattern_false_positive ?? 0;
  const score = (entries: Map<string, HealthInputs>) =>
    sortedRecord([...entries].map(([id, h]): [string, number] => [id, healthScore(h, windowMs)]));

  return {
    window: { from: w.from, to: w.to },
    recovery,
    recoverySuccessRate: ratio(recovery.recovered, recovery.ended),
    autoRecoveryRate: ratio(recovery.autoRecovered, recovery.ended),
    interventions: {
      total: interventions.length,
      byCommand: countBy(interventions.map((r) => r.command)),
    },
    attempts: tasks.attempts,
    failures: {
      total: tasks.categories.length,
      byCategory: countBy(tasks.categories),
      perMinute: failuresPerMinute(tasks.categories.length, windowMs),
    },
    revivals: tasks.revivals,
    stalls: tasks.stalls,
    patterns: {
      detected: patterns.pattern_detected ?? 0,
      confirmed,
      falsePositives,
      falsePositiveRate: ratio(falsePositives, confirmed + falsePositives),
    },
    degradation: replayDegradation(of("degradation"), w),
    breakers: replayBreakers(of("breaker"), w),
    compensation: replayCompensation(of("workstream"), w),
    health: {
      system: healthScore(scopes.system, windowMs),
      workers: score(scopes.workers),
      workstreams: score(scopes.workstreams),
    },
  };
}

/**
 * The metrics in Prometheus text exposition format (names prefixed `mend_`; listed in
 * docs/metrics.md). Durations are in seconds, Prometheus's base unit. Rates that are null are
 * left out rather than exported as NaN.
 */
export async function prometheusText(m: RecoveryMetrics): Promise<string> {
  // Loaded here, not with the module: every worker reads the event names above, few export.
  const { Gauge, Histogram, Registry } = await import("prom-client");
  // A fresh registry per call: every value is recomputed from the log, so nothing may linger from
  // an earlier call, and the process-wide default registry stays untouched.
  const registry = new Registry();
  const registers = [registry];
  // Counts are gauges, not counters: they are computed from the log for the window, never
  // incremented in-process, and a later window may hold fewer events than an earlier one.
  const gauge = (name: string, help: string, value: number | null): void => {
    if (value !== null) new Gauge({ name, help, registers }).set(value);
  };
  const labelled = (
    name: string,
    help: string,
    label: string,
    values: Record<string, number>,
  ): void => {
    const g = new Gauge({ name, help, labelNames: [label], registers });
    for (const [key, value] of Object.entries(values)) g.set({ [label]: key }, value);
  };

  const histogram = new Histogram({
    name: "mend_recovery_seconds",
    help: "Time to recover of the failure episodes that recovered in the window, in seconds.",
    buckets: [...RECOVERY_BUCKETS_SECONDS],
    registers,
  });
  for (const s of m.recovery.samplesSeconds) histogram.observe(s);

  const r = m.recovery;
  gauge(
    "mend_metrics_window_seconds",
    "Length of the window.",
    (m.window.to - m.window.from) / 1000,
  );
  gauge("mend_recovery_episodes_ended", "Failure episodes that ended in the window.", r.ended);
  gauge("mend_recovery_episodes_recovered", "Episodes that recovered.", r.recovered);
  gauge("mend_recovery_episodes_auto_recovered", "Recovered with no person.", r.autoRecovered);
  gauge("mend_recovery_episodes_unrecovered", "Ended without recovering.", r.unrecovered);
  gauge("mend_recovery_episodes_in_progress", "Episodes still open at the end.", r.inProgress);
  gauge("mend_recovery_success_ratio", "Recovered / ended episodes.", m.recoverySuccessRate);
  gauge("mend_auto_recovery_ratio", "Auto-recovered / ended episodes.", m.autoRecoveryRate);
  labelled(
    "mend_interventions",
    "Manual interventions in the window.",
    "command",
    m.interventions.byCommand,
  );
  gauge("mend_task_attempts", "Attempts started in the window.", m.attempts.started);
  gauge("mend_tasks_started", "Distinct tasks started in the window.", m.attempts.tasks);
  gauge("mend_retry_amplification", "Attempts per task started.", m.attempts.amplification);
  labelled(
    "mend_failed_attempts",
    "Failed attempts in the window.",
    "category",
    m.failures.byCategory,
  );
  gauge("mend_failures_per_minute", "Failed attempts per minute.", m.failures.perMinute);
  gauge("mend_revivals", "Automatic revivals in the window.", m.revivals.count);
  gauge("mend_revived_tasks", "Distinct tasks revived.", m.revivals.tasks);
  gauge("mend_revived_tasks_recovered", "Revived tasks that then recovered.", m.revivals.completed);
  gauge("mend_stalls", "Running tasks reported stalled in the window.", m.stalls.count);
  labelled("mend_patterns", "Pattern events in the window.", "outcome", {
    detected: m.patterns.detected,
    confirmed: m.patterns.confirmed,
    false_positive: m.patterns.falsePositives,
  });
  gauge(
    "mend_pattern_false_positive_ratio",
    "False positives / (confirmed + false positives).",
    m.patterns.falsePositiveRate,
  );
  gauge(
    "mend_degraded_seconds",
    "Time spent degraded in the window.",
    m.degradation.degradedMs / 1000,
  );
  gauge("mend_degradation_level", "Degradation level at the end.", m.degradation.level);

  const opened = new Gauge({
    name: "mend_breaker_opened",
    help: "Times the breaker opened in the window.",
    labelNames: ["breaker"],
    registers,
  });
  const openSeconds = new Gauge({
    name: "mend_breaker_open_seconds",
    help: "Time the breaker spent open in the window.",
    labelNames: ["breaker"],
    registers,
  });
  const state = new Gauge({
    name: "mend_breaker_state",
    help: "1 for the breaker's state at the end of the window, 0 for the others.",
    labelNames: ["breaker", "state"],
    registers,
  });
  for (const [breaker, b] of Object.entries(m.breakers)) {
    opened.set({ breaker }, b.opened);
    openSeconds.set({ breaker }, b.openMs / 1000);
    for (const s of new Set(["closed", "open", "half_open", b.state])) {
      state.set({ breaker, state: s }, b.state === s ? 1 : 0);
    }
  }

  const c = m.compensation;
  gauge("mend_compensations_scheduled", "Compensation workstreams scheduled.", c.scheduled);
  gauge("mend_compensations_ended", "Compensation workstreams that ended.", c.ended);
  gauge("mend_compensations_completed", "Compensation workstreams completed.", c.completed);
  gauge("mend_compensation_success_ratio", "Completed / ended compensations.", c.successRate);

  const health = new Gauge({
    name: "mend_health_score",
    help: "Health score in [0, 1] of the system, a worker or a workstream.",
    labelNames: ["scope", "id"],
    registers,
  });
  health.set({ scope: "system", id: "system" }, m.health.system);
  for (const [id, v] of Object.entries(m.health.workers)) health.set({ scope: "worker", id }, v);
  for (const [id, v] of Object.entries(m.health.workstreams)) {
    health.set({ scope: "workstream", id }, v);
  }

  return registry.metrics();
}
