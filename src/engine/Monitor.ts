import { newId } from "../model/ids.js";
import type { BreakerRecord, ResourceRecord, WorkerRecord } from "../model/records.js";
import type { DegradationConfig } from "../recovery/degrade.js";
import { DEFAULT_PATTERN_CONFIG, type PatternConfig } from "../recovery/patterns.js";
import { DEFAULT_REVIVAL } from "../recovery/revive.js";
import { WORKER_SHUTDOWN_MS, WORKER_UNRESPONSIVE_MS } from "../recovery/worker-check.js";
import { type Logger, silentLogger } from "../observe/logger.js";
import type { BackupInfo, RetentionPolicy } from "../state/backups.js";
import type {
  FailurePlanner,
  Revival,
  RevivalOptions,
  StallReport,
  Store,
  SweptTask,
} from "../store/store.js";
import { type Clock, systemClock, type TimerHandle } from "./clock.js";
import { createPlanner } from "./planner.js";
import { Watch, type WatchResult } from "./watch.js";

/** Options of a {@link Monitor}. Durations in milliseconds. */
export interface MonitorOptions {
  store: Store;
  /** How often to sweep (default 1000). */
  sweepMs?: number;
  /** A worker silent this long is `unresponsive` (default 30 000). */
  unresponsiveMs?: number;
  /** A worker silent this long is presumed `shutdown` (default 180 000). */
  shutdownMs?: number;
  /**
   * How often the leader backs up the store, when its log has advanced since the newest backup
   * (default 60 000: a restore loses at most a minute of updates; 0 disables).
   */
  backupIntervalMs?: number;
  /** Retention applied after each automatic backup (default 100 backups, 24 h). */
  backupRetention?: Partial<RetentionPolicy>;
  /**
   * Revival of failed tasks whose cause cleared (default on, with {@link DEFAULT_REVIVAL}'s
   * bounds); false turns it off for every workstream.
   */
  revival?: Partial<RevivalOptions> | false;
  /** Failure pattern detection (default on, {@link DEFAULT_PATTERN_CONFIG}); false: off. */
  patterns?: PatternConfig | false;
  /** Degradation levels; without them the system never degrades. */
  degradation?: DegradationConfig;
  /** Resource pressure in [0, 1] for degradation triggers (default: the worker pool's load). */
  pressure?: () => Promise<number | null>;
  /**
   * The escalation policy: a failed task still waiting for automatic recovery (a revival) after
   * this long is escalated to a person (default 10 minutes).
   */
  escalateAfterMs?: number;
  /**
   * A running task without progress (heartbeat details or `ctx.progress()`) for this long is
   * reported stalled (`task_stalled`), unless it sets its own `stallAfter` (default 30 minutes).
   */
  stallAfterMs?: number;
  /**
   * Health checks of resources, by name: one that fails (false, or throws) takes its resource out
   * of service (tasks needing it wait, or take an alternative); once it passes again the
   * resource is put back. A resource a person took out stays out.
   */
  resourceChecks?: ResourceChecks;
  /** How often the health checks run (default 10 s). */
  resourceCheckMs?: number;
  id?: string;
  clock?: Clock;
  logger?: Logger;
  planner?: FailurePlanner;
  /** Called after each sweep that changed something (for progress displays and tests). */
  onSweep?: (result: SweepResult) => void;
}

/** What one sweep did. */
export interface SweepResult {
  requeued: SweptTask[];
  workers: WorkerRecord[];
  /** The backup this sweep took, if one was due. */
  backup: BackupInfo | null;
  /** Breakers whose open time was up and that now let probes through. */
  probing: BreakerRecord[];
  /** Queued tasks failed because their overall deadline passed. */
  expired: string[];
  revived: Revival[];
  /** Failed tasks escalated to a person. */
  escalated: string[];
  /** Running tasks reported stalled, or progressing again after a stall. */
  stalls: StallReport[];
  /** Resources that became exhausted or available again, or that a health check changed. */
  resources: ResourceRecord[];
  /** Patterns detected, patterns judged, and a degradation change. */
  watch: WatchResult;
}

/** Health checks of resources, by resource name: true when it works. */
export type ResourceChecks = Record<string, () => Promise<boolean> | boolean>;

/** Why a health check took a resource out of service; only such a resource is put back by one. */
const HEALTH_CHECK_REASON = "health check failed";

/** How long a health check may take before it counts as failed. */
const CHECK_TIMEOUT_MS = 5_000;

/** How long a running task may go without progress before it is reported stalled: 30 minutes. */
export const DEFAULT_STALL_AFTER_MS = 1_800_000;

/** Name of the leadership lease that makes exactly one monitor act at a time. */
export const MONITOR_LEADERSHIP = "monitor";

/**
 * The lease reaper and worker-health watcher. Any number may run; one at a time holds the
 * leadership lease and acts, and another takes over within a few sweeps if its process dies.
 */
export class Monitor {
  readonly id: string;
  private readonly store: Store;
  private readonly sweepMs: number;
  private readonly unresponsiveMs: number;
  private readonly shutdownMs: number;
  private readonly backupIntervalMs: number;
  private readonly backupRetention: Partial<RetentionPolicy> | undefined;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly planner: FailurePlanner;
  private readonly onSweep: MonitorOptions["onSweep"];
  private readonly revival: RevivalOptions | null;
  private readonly escalateAfterMs: number;
  private readonly stallAfterMs: number;
  private readonly resourceChecks: ResourceChecks;
  private readonly resourceCheckMs: number;
  private nextResourceCheck = 0;
  private readonly watch: Watch;
  private timer: TimerHandle | null = null;
  private stopped = true;
  private leading = false;
  private ticking: Promise<void> | null = null;
  /** The newest backup as last seen; undefined until read after taking the lead. */
  private newestBackup: BackupInfo | null | undefined;
  /** After a failed backup, the next attempt waits a backup interval. */
  private backupPausedUntil = 0;

  constructor(options: MonitorOptions) {
    this.store = options.store;
    this.clock = options.clock ?? systemClock;
    this.sweepMs = options.sweepMs ?? 1000;
    this.unresponsiveMs = options.unresponsiveMs ?? WORKER_UNRESPONSIVE_MS;
    this.shutdownMs = options.shutdownMs ?? WORKER_SHUTDOWN_MS;
    this.backupIntervalMs = options.backupIntervalMs ?? 60_000;
    this.backupRetention = options.backupRetention;
    this.id = options.id ?? newId("m", this.clock.now());
    this.log = (options.logger ?? silentLogger).child({ monitor: this.id });
    this.planner = options.planner ?? createPlanner();
    this.onSweep = options.onSweep;
    this.revival = options.revival === false ? null : { ...DEFAULT_REVIVAL, ...options.revival };
    this.escalateAfterMs = options.escalateAfterMs ?? 600_000;
    this.stallAfterMs = options.stallAfterMs ?? DEFAULT_STALL_AFTER_MS;
    this.resourceChecks = options.resourceChecks ?? {};
    this.resourceCheckMs = options.resourceCheckMs ?? 10_000;
    this.watch = new Watch(this.store, {
      patterns: options.patterns === false ? null : (options.patterns ?? DEFAULT_PATTERN_CONFIG),
      degradation: options.degradation ?? null,
      pressure: options.pressure,
      log: this.log,
    });
  }

  /** True while this monitor holds the leadership lease. */
  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.clock.clearTimeout(this.timer);
    await this.ticking;
    if (this.leading) await this.store.releaseLeadership(MONITOR_LEADERSHIP, this.id);
    this.leading = false;
  }

  private schedule(ms: number): void {
    this.timer = this.clock.setTimeout(() => {
      this.ticking = this.tick()
        .then(() => undefined)
        .catch((err) => this.log.error("monitor sweep failed", { err: String(err) }))
        .finally(() => {
          this.ticking = null;
          if (!this.stopped) this.schedule(this.sweepMs);
        });
    }, ms);
  }

  /**
   * One sweep: take or keep leadership; if leading, requeue expired leases, mark workers, and
   * back up the store when a backup is due.
   */
  async tick(): Promise<SweepResult | null> {
    const wasLeading = this.leading;
    // The lease outlives three sweeps, so a live leader never loses it between ticks.
    this.leading = await this.store.acquireLeadership(
      MONITOR_LEADERSHIP,
      this.id,
      this.sweepMs * 3,
    );
    if (!this.leading) return null;
    // Another monitor may have acted while this one was not leading.
    if (!wasLeading) {
      this.newestBackup = undefined;
      this.watch.reset();
    }
    const requeued = await this.store.sweepExpiredLeases(this.planner);
    const workers = await this.store.markSilentWorkers(this.unresponsiveMs, this.shutdownMs);
    const probing = await this.store.advanceBreakers();
    const expired = await this.store.expireDeadlines();
    const revived = this.revival ? await this.store.reviveTasks(this.revival) : [];
    const escalated = await this.store.escalateStale(this.escalateAfterMs);
    const stalls = await this.store.detectStalls(this.stallAfterMs);
    const resources = [...(await this.checkResources()), ...(await this.store.refreshResources())];
    const watch = await this.watch.sweep(this.clock.now());
    const backup = await this.backupIfDue();
    const result = {
      requeued,
      workers,
      backup,
      probing,
      expired,
      revived,
      escalated,
      stalls,
      resources,
      watch,
    };
    for (const t of requeued) {
      this.log.warn("lease expired", {
        task: t.taskId,
        worker: t.workerId,
        action: t.decision.action,
      });
    }
    for (const r of revived) {
      this.log.info("task revived", { task: r.taskId, cause: r.cause, confidence: r.confidence });
    }
    for (const { status, ...stall } of stalls) {
      if (status === "stalled") this.log.warn("task stalled: no progress", stall);
      else this.log.info("stalled task progressing again", stall);
    }
    const changed =
      requeued.length +
        workers.length +
        probing.length +
        expired.length +
        revived.length +
        escalated.length +
        stalls.length +
        resources.length >
        0 ||
      watch.patterns.length + watch.judged.length > 0 ||
      watch.degradation !== null ||
      backup !== null;
    if (changed) this.onSweep?.(result);
    return result;
  }

  /**
   * Runs the resources' health checks when they are due: a failing check takes its resource out
   * of service, a passing one puts back a resource a check took out.
   */
  private async checkResources(): Promise<ResourceRecord[]> {
    const now = this.clock.now();
    const names = Object.keys(this.resourceChecks);
    if (names.length === 0 || now < this.nextResourceCheck) return [];
    this.nextResourceCheck = now + this.resourceCheckMs;
    const current = new Map((await this.store.listResources()).map((r) => [r.id, r]));
    const changed: ResourceRecord[] = [];
    for (const name of names) {
      const { ok, why } = await runCheck(this.resourceChecks[name]!, this.clock);
      const r = current.get(name);
      let marked: ResourceRecord | null = null;
      if (!ok && r?.status !== "unavailable") {
        marked = await this.store.markResource(name, false, `${HEALTH_CHECK_REASON}: ${why}`, {
          actor: "monitor",
        });
        this.log.warn("resource health check failed", { resource: name, why });
      } else if (ok && r?.status === "unavailable" && r.reason?.startsWith(HEALTH_CHECK_REASON)) {
        marked = await this.store.markResource(name, true, "health check passed", {
          actor: "monitor",
        });
        this.log.info("resource healthy again", { resource: name });
      }
      if (marked) changed.push(marked);
    }
    return changed;
  }

  /**
   * Backs the store up when the newest backup is a backup interval old and the log has moved on
   * from it. A failure is logged and never stops the reaper; the next attempt waits an interval.
   */
  private async backupIfDue(): Promise<BackupInfo | null> {
    const now = this.clock.now();
    if (!this.store.backupsSupported || this.backupIntervalMs === 0) return null;
    if (now < this.backupPausedUntil) return null;
    try {
      if (this.newestBackup === undefined) {
        this.newestBackup = (await this.store.listBackups())[0] ?? null;
      }
      const newest = this.newestBackup;
      if (newest && now - newest.createdAt < this.backupIntervalMs) return null;
      // By hash, not seq: after a restore the log may be shorter than the newest backup's.
      const [last] = await this.store.listTransitions({ newestFirst: true, limit: 1 });
      if (!last || last.hash === newest?.lastHash) return null;
      this.newestBackup = await this.store.backup({
        reason: "scheduled",
        retention: this.backupRetention,
      });
      this.log.info("backup taken", { backup: this.newestBackup.id });
      return this.newestBackup;
    } catch (err) {
      this.backupPausedUntil = now + this.backupIntervalMs;
      this.log.error("backup failed", { err: String(err) });
      return null;
    }
  }
}

/** Runs one health check, bounded by {@link CHECK_TIMEOUT_MS}: passed, or why not. */
async function runCheck(
  check: () => Promise<boolean> | boolean,
  clock: Clock,
): Promise<{ ok: boolean; why: string }> {
  let timer: TimerHandle | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimeout(
        () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)),
        CHECK_TIMEOUT_MS,
      );
    });
    const ok = await Promise.race([Promise.resolve().then(check), timeout]);
    return ok ? { ok: true, why: "" } : { ok: false, why: "it returned false" };
  } catch (err) {
    return { ok: false, why: err instanceof Error ? err.message : String(err) };
  } finally {
    if (timer !== undefined) clock.clearTimeout(timer);
  }
}
