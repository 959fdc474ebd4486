/**
 * The monitor's view of how tasks are faring: it reads new outcomes from the transition log each
 * sweep, feeds them to the pattern detectors and the degradation state machine, and records what
 * they conclude in the store (patterns, the degradation level) and acts on it (opens a breaker
 * early, degrades).
 */
import type { PatternRecord } from "../model/records.js";
import type { Logger } from "../observe/logger.js";
import {
  type DegradationConfig,
  type DegradationMetrics,
  type DegradationState,
  errorWindows,
  levelView,
  stepDegradation,
} from "../recovery/degrade.js";
import {
  type DetectedPattern,
  detectPatterns,
  emptyPatternState,
  judgePattern,
  type Observation,
  type PatternConfig,
  type PatternState,
} from "../recovery/patterns.js";
import type { Store, TaskOutcome } from "../store/store.js";

/** Outcomes read per query, and pages per sweep: a larger backlog is caught up over sweeps. */
const PAGE = 5000;
const MAX_PAGES = 4;
/** Most outcomes kept for latency and error rates: bounds memory under any load. */
const MAX_KEPT = 50_000;
/** Running tasks whose start is remembered, for latency. */
const MAX_STARTED = 100_000;

/** Options of a {@link Watch}. */
export interface WatchOptions {
  /** Pattern detection settings; null turns detection off. */
  patterns: PatternConfig | null;
  /** Degradation levels; null: the system never degrades. */
  degradation: DegradationConfig | null;
  /** Resource pressure in [0, 1] for the degradation triggers (default: {@link poolPressure}). */
  pressure?: () => Promise<number | null>;
  log: Logger;
}

/** What one sweep of the watch did. */
export interface WatchResult {
  patterns: PatternRecord[];
  judged: { id: string; verdict: "confirmed" | "false_positive" }[];
  degradation: { from: number; to: number; reason: string } | null;
}

/** An outcome as remembered for latency and error-rate windows. */
interface Kept {
  at: number;
  ok: boolean;
  durationMs: number | null;
}

/**
 * State of the watch. It lives in the leading monitor; detected patterns and the degradation
 * level are in the store, so a new leader starts from them (its detector baselines start over).
 */
export class Watch {
  private cursor: number | null = null;
  private patternState: PatternState = emptyPatternState();
  private degradationState: DegradationState | null = null;
  private readonly startedAt = new Map<string, number>();
  private kept: Kept[] = [];
  /** Patterns waiting for their verdict, with the outcomes seen since. */
  private pending: { pattern: DetectedPattern; after: Observation[] }[] = [];

  constructor(
    private readonly store: Store,
    private readonly options: WatchOptions,
  ) {}

  /** Forgets everything but what is in the store (after losing and regaining leadership). */
  reset(): void {
    this.cursor = null;
    this.patternState = emptyPatternState();
    this.degradationState = null;
    this.kept = [];
    this.pending = [];
  }

  /** Reads the log since the last sweep, detects, judges, and steps the degradation level. */
  async sweep(now: number): Promise<WatchResult> {
    const observations = await this.readOutcomes();
    const result: WatchResult = { patterns: [], judged: [], degradation: null };
    if (this.options.patterns) await this.detect(this.options.patterns, observations, now, result);
    if (this.options.degradation) await this.degrade(this.options.degradation, now, result);
    return result;
  }

  private async readOutcomes(): Promise<Observation[]> {
    if (this.cursor === null) {
      // Start at the log's end: history before this leader is the metrics' business.
      this.cursor = await this.store.lastSeq();
      return [];
    }
    const outcomes: TaskOutcome[] = [];
    for (let page = 0; page < MAX_PAGES; page++) {
      // Starts only matter for latency, which only degradation looks at.
      const starts = this.options.degradation !== null;
      const read = await this.store.listOutcomes(this.cursor, PAGE, starts);
      if (read.length > 0) this.cursor = read.at(-1)!.seq;
      outcomes.push(...read);
      if (read.length < PAGE) break;
    }
    const observations: Observation[] = [];
    for (const o of outcomes) {
      if (o.kind === "started") {
        if (this.startedAt.size >= MAX_STARTED) this.startedAt.clear();
        this.startedAt.set(o.taskId, o.at);
        continue;
      }
      const ok = o.kind === "ok";
      const started = this.startedAt.get(o.taskId);
      this.startedAt.delete(o.taskId);
      const durationMs = started === undefined ? null : o.at - started;
      this.kept.push({ at: o.at, ok, durationMs });
      observations.push({
        at: o.at,
        taskId: o.taskId,
        workstreamId: o.workstreamId,
        handler: o.handler,
        ok,
        ...(o.category === null ? {} : { category: o.category }),
        keys: keysOf(o),
        ...(durationMs === null ? {} : { durationMs }),
      });
    }
    if (this.kept.length > MAX_KEPT) this.kept = this.kept.slice(-MAX_KEPT);
    return observations;
  }

  private async detect(
    config: PatternConfig,
    observations: Observation[],
    now: number,
    result: WatchResult,
  ): Promise<void> {
    for (const p of this.pending) p.after.push(...observations);
    const still: typeof this.pending = [];
    for (const p of this.pending) {
      const verdict = judgePattern(p.pattern, p.after, now);
      if (verdict === null && now <= p.pattern.at + 2 * p.pattern.evidence.windowMs) {
        still.push(p);
        continue;
      }
      // Still undecided past twice its window (its subject had no outcomes, e.g. its breaker
      // held them back): it stays active in the store, counted neither way.
      if (verdict === null) continue;
      await this.store.judgePattern(p.pattern.id, verdict, verdictReason(verdict));
      result.judged.push({ id: p.pattern.id, verdict });
    }
    this.pending = still;

    const detected = detectPatterns(config, this.patternState, observations, now);
    this.patternState = detected.state;
    if (detected.patterns.length === 0) return;
    const recorded = await this.store.recordPatterns(
      detected.patterns.map((p) => ({
        id: `${p.id}@${p.at}`,
        detector: p.detector,
        subject: p.subject,
        confidence: p.confidence,
        message: p.message,
        action: p.action,
        detectedAt: p.at,
      })),
    );
    result.patterns.push(...recorded);
    for (const p of detected.patterns) {
      this.pending.push({ pattern: { ...p, id: `${p.id}@${p.at}` }, after: [] });
      this.options.log.warn("failure pattern", { pattern: p.id, message: p.message });
      if (p.action.kind === "open_breaker") {
        await this.store.tripBreaker(p.action.breaker, `${p.detector} pattern detected`);
      } else if (p.action.kind === "degrade") {
        await this.degradeEarly(p, now, result);
      } else if (p.action.kind === "mark_unhealthy") {
        const marked = await this.store.markResource(
          p.action.resource,
          false,
          `${p.detector} pattern: ${p.message}`,
          { actor: "monitor" },
        );
        if (marked) {
          this.options.log.warn("resource marked unavailable", { resource: p.action.resource });
        }
      }
    }
  }

  /**
   * An anomaly moves a normal system to the first degradation level at once, before the error
   * rate reaches that level's trigger; the level's recovery conditions bring it back as usual.
   */
  private async degradeEarly(p: DetectedPattern, now: number, result: WatchResult): Promise<void> {
    const config = this.options.degradation;
    if (!config || config.levels.length === 0 || (this.degradationState?.level ?? 0) > 0) return;
    const stored = await this.store.getDegradation();
    if (stored.level > 0) return;
    const reason = `${p.detector} pattern detected: ${p.message}`;
    await this.store.setDegradation(levelView(config, 1), reason, "monitor");
    this.degradationState = { level: 1, since: now, recoveringSince: null };
    result.degradation = { from: 0, to: 1, reason };
  }

  private async degrade(
    config: DegradationConfig,
    now: number,
    result: WatchResult,
  ): Promise<void> {
    if (this.degradationState === null) {
      const stored = await this.store.getDegradation();
      this.degradationState = {
        level: stored.level,
        since: stored.updatedAt,
        recoveringSince: null,
      };
    }
    const metrics = await this.metrics(config, now);
    const step = stepDegradation(config, this.degradationState, metrics);
    this.degradationState = step.state;
    if (!step.change) return;
    await this.store.setDegradation(
      levelView(config, step.change.to),
      step.change.reason,
      "monitor",
    );
    result.degradation = step.change;
    this.options.log.warn("degradation level changed", { ...step.change });
  }

  private async metrics(config: DegradationConfig, now: number): Promise<DegradationMetrics> {
    const longest = Math.max(config.windowMs, ...errorWindows(config));
    this.kept = this.kept.filter((k) => k.at > now - longest);
    const stats = (windowMs: number) => {
      const inWindow = this.kept.filter((k) => k.at > now - windowMs);
      const failed = inWindow.filter((k) => !k.ok).length;
      return {
        errorRate: inWindow.length === 0 ? 0 : failed / inWindow.length,
        outcomes: inWindow.length,
      };
    };
    const durations = this.kept
      .filter((k) => k.at > now - config.windowMs && k.durationMs !== null)
      .map((k) => k.durationMs!)
      .sort((a, b) => a - b);
    const p99 =
      durations.length === 0
        ? null
        : durations[Math.min(durations.length - 1, Math.ceil(durations.length * 0.99) - 1)]!;
    return {
      at: now,
      ...stats(config.windowMs),
      windows: Object.fromEntries(errorWindows(config).map((w) => [w, stats(w)])),
      p99LatencyMs: p99,
      pressure: usesPressure(config)
        ? await (this.options.pressure ?? (() => poolPressure(this.store)))()
        : null,
    };
  }
}

function verdictReason(verdict: "confirmed" | "false_positive"): string {
  return verdict === "confirmed"
    ? "its subject kept failing after it was detected"
    : "its subject's next outcomes succeeded";
}

/** Whether any level's trigger or recovery condition looks at pressure. */
function usesPressure(config: DegradationConfig): boolean {
  return config.levels.some(
    (l) => l.trigger.pressure !== undefined || l.recover.pressure !== undefined,
  );
}

/**
 * The worker pool's pressure: tasks running over the slots of the live workers, 1 when work is
 * queued and no worker is live; null when there is neither work nor workers.
 */
export async function poolPressure(store: Store): Promise<number | null> {
  const workers = (await store.listWorkers()).filter(
    (w) => w.status === "idle" || w.status === "busy",
  );
  const slots = workers.reduce((n, w) => n + w.concurrency, 0);
  let running = 0;
  let queued = 0;
  for (const counts of (await store.countTasks()).values()) {
    running += counts.running ?? 0;
    queued += counts.queued ?? 0;
  }
  if (slots === 0) return running + queued > 0 ? 1 : null;
  return Math.min(1, running / slots);
}

/**
 * What a pattern may be about besides the handler: the task's breaker, and the resources it
 * certainly held (needs with one choice; which alternative an attempt took is not known here),
 * for failures a resource can cause: a bug in the handler says nothing about the resource.
 */
function keysOf(o: TaskOutcome): string[] {
  const keys = o.breaker === null ? [] : [`breaker:${o.breaker}`];
  if (o.resources !== null && (o.category === null || RESOURCE_CAUSES.has(o.category))) {
    for (const need of JSON.parse(o.resources) as string[][]) {
      if (need.length === 1) keys.push(`resource:${need[0]}`);
    }
  }
  return keys;
}

/** Failure categories a resource's trouble can explain. */
const RESOURCE_CAUSES: ReadonlySet<string> = new Set([
  "network",
  "rate_limited",
  "external_service",
  "timeout",
  "resource_exhausted",
  "tool_failure",
]);
