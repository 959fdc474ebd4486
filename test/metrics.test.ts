import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import type { InterventionRecord, TransitionRecord } from "../src/model/records.js";
import { healthScore } from "../src/observe/health.js";
import {
  computeMetrics,
  isPerson,
  prometheusText,
  type RecoveryMetrics,
} from "../src/observe/metrics.js";

/** Events that leave the task failed for good; the others of a failed attempt queue it again. */
const FOR_GOOD = new Set(["task_failed", "task_failed_noncritical", "task_quarantined"]);

/** Builds a transition log by hand, numbering records in the order they are added. */
class Log {
  readonly records: TransitionRecord[] = [];

  add(
    entity: string,
    entityId: string,
    event: string,
    at: number,
    fields: Partial<Omit<TransitionRecord, "entity" | "entityId" | "event" | "at">> = {},
  ): this {
    this.records.push({
      seq: this.records.length + 1,
      at,
      entity: entity as TransitionRecord["entity"],
      entityId,
      workstreamId: entity === "task" ? "ws1" : null,
      from: null,
      to: "queued",
      event,
      severity: "info",
      data: {},
      detail: null,
      actor: "engine",
      hash: "",
      ...fields,
    });
    return this;
  }

  start(task: string, worker: string, at: number, attempts = 1): this {
    return this.add("task", task, "task_started", at, {
      from: "queued",
      to: "running",
      actor: `worker:${worker}`,
      data: { attempts, leaseToken: at, leaseWorker: worker },
    });
  }

  fail(
    task: string,
    event: string,
    at: number,
    opts: { category?: string; worker?: string | null; actor?: string } = {},
  ): this {
    const worker = opts.worker === undefined ? "w1" : opts.worker;
    return this.add("task", task, event, at, {
      from: "running",
      to: FOR_GOOD.has(event) ? "failed" : "queued",
      actor: opts.actor ?? (worker === null ? "monitor" : `worker:${worker}`),
      data: { leaseToken: null, leaseWorker: null },
      detail: {
        attempt: 1,
        failure: { category: opts.category ?? "network", recoverable: true, message: "x" },
        decision: { action: FOR_GOOD.has(event) ? "fail" : "retry" },
        worker,
      },
    });
  }

  complete(
    task: string,
    at: number,
    opts: { event?: string; worker?: string; leaseToken?: number | null } = {},
  ): this {
    return this.add("task", task, opts.event ?? "task_recovered", at, {
      from: "running",
      to: "completed",
      actor: `worker:${opts.worker ?? "w1"}`,
      data: { output: null, leaseToken: opts.leaseToken ?? null, leaseWorker: null },
    });
  }

  reopen(task: string, event: "task_revived" | "task_retried", at: number, actor: string): this {
    return this.add("task", task, event, at, { from: "failed", to: "queued", actor });
  }
}

function metrics(log: Log, to: number, from?: number, interventions: InterventionRecord[] = []) {
  return computeMetrics({ transitions: log.records, interventions, from, to });
}

function intervention(at: number, command: string): InterventionRecord {
  return {
    id: `i${at}`,
    at,
    actor: "alice",
    command,
    target: "t1",
    reason: null,
    before: null,
    after: null,
  };
}

/** Every number in `value`, with its path. */
function numbers(value: unknown, path = "m"): [string, number][] {
  if (typeof value === "number") return [[path, value]];
  if (Array.isArray(value)) return value.flatMap((v, i) => numbers(v, `${path}[${i}]`));
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).flatMap(([k, v]) => numbers(v, `${path}.${k}`));
  }
  return [];
}

function rates(m: RecoveryMetrics): (number | null)[] {
  return [
    m.recoverySuccessRate,
    m.autoRecoveryRate,
    m.patterns.falsePositiveRate,
    m.compensation.successRate,
    m.health.system,
    ...Object.values(m.health.workers),
    ...Object.values(m.health.workstreams),
  ];
}

describe("recovery episodes", () => {
  it("a first-attempt success is no episode", () => {
    const m = metrics(
      new Log().start("t1", "w1", 0).complete("t1", 500, { event: "task_completed" }),
      1000,
    );
    expect(m.recovery).toMatchObject({ ended: 0, recovered: 0, inProgress: 0, seconds: null });
    expect(m.recoverySuccessRate).toBeNull();
    expect(m.autoRecoveryRate).toBeNull();
    expect(m.attempts).toEqual({ started: 1, tasks: 1, amplification: 1 });
    expect(m.health.system).toBe(1);
    expect(m.health.workers).toEqual({ w1: 1 });
  });

  it("a retry that recovers is an automatic recovery timed from the first failed attempt", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_retry_scheduled", 1000, { category: "network" })
      .start("t1", "w2", 3000, 2)
      .complete("t1", 5000, { worker: "w2" });
    const m = metrics(log, 60_000, 0);
    expect(m.recovery).toMatchObject({ ended: 1, recovered: 1, autoRecovered: 1, unrecovered: 0 });
    expect(m.recovery.seconds).toEqual({ count: 1, mean: 4, p50: 4, p90: 4, p99: 4, max: 4 });
    expect(m.recovery.samplesSeconds).toEqual([4]);
    expect(m.autoRecoveryRate).toBe(1);
    expect(m.failures.byCategory).toEqual({ network: 1 });
    expect(m.attempts.amplification).toBe(2);
  });

  it("an operator retry after a permanent failure makes the recovery manual", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_failed", 1000, { category: "logic" })
      .reopen("t1", "task_retried", 10_000, "alice")
      .start("t1", "w1", 11_000, 2)
      .complete("t1", 20_000);
    const before = metrics(log, 5000, 0);
    expect(before.recovery).toMatchObject({ ended: 1, recovered: 0, unrecovered: 1 });
    expect(before.recoverySuccessRate).toBe(0);

    const m = metrics(log, 30_000, 0);
    expect(m.recovery).toMatchObject({ ended: 1, recovered: 1, autoRecovered: 0, unrecovered: 0 });
    expect(m.recovery.samplesSeconds).toEqual([19]);
    expect(m.recoverySuccessRate).toBe(1);
    expect(m.autoRecoveryRate).toBe(0);
  });

  it("a revival that completes is automatic and counts as a successful revival", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_failed", 1000, { category: "external_service" })
      .reopen("t1", "task_revived", 4000, "monitor")
      .start("t1", "w1", 5000, 2)
      .complete("t1", 7000)
      .start("t2", "w1", 0)
      .fail("t2", "task_failed", 1000)
      .reopen("t2", "task_revived", 4000, "monitor");
    const m = metrics(log, 10_000, 0);
    expect(m.revivals).toEqual({ count: 2, tasks: 2, completed: 1 });
    expect(m.recovery).toMatchObject({ recovered: 1, autoRecovered: 1, inProgress: 1 });
    expect(m.autoRecoveryRate).toBe(1);
  });

  it("episodes still open are in progress and outside every rate", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_timeout", 1000, { category: "timeout" });
    const m = metrics(log, 2000, 0);
    expect(m.recovery).toMatchObject({ ended: 0, inProgress: 1 });
    expect(m.autoRecoveryRate).toBeNull();
  });

  it("an episode that ended before the window belongs to the earlier window", () => {
    const log = new Log().start("t1", "w1", 0).fail("t1", "task_failed", 1000);
    expect(metrics(log, 9000, 5000).recovery).toMatchObject({ ended: 0, inProgress: 0 });
    expect(metrics(log, 9000).recovery).toMatchObject({ ended: 1, unrecovered: 1 });
  });

  it("a completion that keeps its lease waits for validation", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_retry_scheduled", 1000)
      .start("t1", "w1", 2000, 2)
      .complete("t1", 3000, { leaseToken: 2000 });
    expect(metrics(log, 4000, 0).recovery).toMatchObject({
      recovered: 0,
      inProgress: 1,
      awaitingValidation: 1,
    });
    log.add("task", "t1", "task_repaired", 6000, {
      from: "completed",
      to: "completed",
      data: { leaseToken: null },
    });
    expect(metrics(log, 7000, 0).recovery.samplesSeconds).toEqual([5]);
  });

  it("a fallback is a failed attempt that opens an episode", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_fallback", 1000, { category: "quality" })
      .start("t1", "w1", 2000, 2)
      .complete("t1", 3000);
    const m = metrics(log, 4000, 0);
    expect(m.failures.byCategory).toEqual({ quality: 1 });
    expect(m.recovery.samplesSeconds).toEqual([2]);
  });
});

describe("attribution and health", () => {
  it("worker_lost episodes count against the worker that was lost", () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "worker_lost", 6000, { category: "worker_lost", worker: "w1", actor: "monitor" })
      .start("t1", "w2", 7000, 2)
      .complete("t1", 8000, { worker: "w2" })
      // No worker in the detail: the last worker that started the task is the one lost.
      .start("t2", "w3", 0)
      .fail("t2", "worker_lost", 6000, { category: "worker_lost", worker: null })
      .start("t2", "w2", 7000, 2)
      .complete("t2", 8000, { worker: "w2" });
    const m = metrics(log, 60_000, 0);
    expect(m.failures.byCategory).toEqual({ worker_lost: 2 });
    // w1: 1 episode recovered in 2 s, 1 failure per minute: 0.5 + 0.3/3 + 0.2/2.
    expect(m.health.workers).toEqual({ w1: 0.7, w2: 1, w3: 0.7 });
    expect(m.health.workstreams.ws1).toBe(
      healthScore({ ended: 2, recovered: 2, recoverySeconds: 4, failures: 2 }, 60_000),
    );
  });

  it("matches the formula on a known example", () => {
    // t1 recovers in 4 s; t2 fails for good. Two failures over two minutes: 1 per minute.
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_retry_scheduled", 1000)
      .start("t1", "w1", 3000, 2)
      .complete("t1", 5000)
      .start("t2", "w1", 0)
      .fail("t2", "task_failed", 2000, { category: "logic" });
    const m = metrics(log, 120_000, 0);
    // 0.5 × 1/2 + 0.3 × 1/(1 + 4) + 0.2 × 1/(1 + 1)
    expect(m.health.system).toBe(0.41);
    expect(m.failures.perMinute).toBe(1);
  });

  it("gives no speed credit when episodes ended but none recovered", () => {
    expect(healthScore({ ended: 1, recovered: 0, recoverySeconds: 0, failures: 0 }, 60_000)).toBe(
      0.2,
    );
    expect(healthScore({ ended: 0, recovered: 0, recoverySeconds: 0, failures: 0 }, 0)).toBe(1);
  });

  it("tells people from the system's own actors", () => {
    expect(["engine", "monitor", "cli", "worker:w1"].map(isPerson)).toEqual([
      false,
      false,
      false,
      false,
    ]);
    expect(isPerson("alice")).toBe(true);
  });
});

describe("system metrics", () => {
  it("counts interventions in the window by command", () => {
    const m = metrics(new Log(), 10_000, 1000, [
      intervention(500, "retry"),
      intervention(1000, "retry"),
      intervention(2000, "skip"),
      intervention(10_000, "retry"),
    ]);
    expect(m.interventions).toEqual({ total: 3, byCommand: { retry: 2, skip: 1 } });
  });

  it("measures degraded time across the window's edges", () => {
    const log = new Log()
      .add("degradation", "system", "degradation_changed", 0, {
        to: "degraded",
        data: { level: 2, name: "reduced" },
      })
      .add("degradation", "system", "degradation_recovered", 30_000, {
        to: "normal",
        data: { level: 0, name: "normal" },
      })
      .add("degradation", "system", "degradation_changed", 50_000, {
        to: "degraded",
        data: { level: 1, name: "lite" },
      });
    const m = metrics(log, 60_000, 10_000);
    expect(m.degradation).toEqual({ degradedMs: 30_000, changes: 2, level: 1, name: "lite" });
  });

  it("measures breaker open time and counts openings", () => {
    const b = (id: string, event: string, at: number, from: string | null, to: string) =>
      ["breaker", id, event, at, { from, to }] as const;
    const log = new Log();
    for (const args of [
      b("api", "breaker_opened", 1000, "closed", "open"),
      b("api", "breaker_half_opened", 6000, "open", "half_open"),
      b("api", "breaker_opened", 7000, "half_open", "open"),
      b("api", "breaker_closed", 9000, "open", "closed"),
      b("db", "breaker_opened", -5000, "closed", "open"),
      b("search", "breaker_opened", 15_000, "closed", "open"),
    ]) {
      log.add(...args);
    }
    const m = metrics(log, 20_000, 0);
    expect(m.breakers).toEqual({
      api: { opened: 2, state: "closed", openMs: 7000 },
      db: { opened: 0, state: "open", openMs: 20_000 },
      search: { opened: 1, state: "open", openMs: 5000 },
    });
  });

  it("computes the pattern false-positive rate", () => {
    const log = new Log()
      .add("pattern", "p1", "pattern_detected", 0, { to: "active" })
      .add("pattern", "p2", "pattern_detected", 0, { to: "active" })
      .add("pattern", "p3", "pattern_detected", 0, { to: "active" })
      .add("pattern", "p1", "pattern_confirmed", 100, { from: "active", to: "confirmed" })
      .add("pattern", "p2", "pattern_false_positive", 100, { from: "active", to: "false_positive" })
      .add("pattern", "p3", "pattern_false_positive", 100, {
        from: "active",
        to: "false_positive",
      });
    const m = metrics(log, 1000, 0);
    expect(m.patterns).toEqual({
      detected: 3,
      confirmed: 1,
      falsePositives: 2,
      falsePositiveRate: 2 / 3,
    });
  });

  it("computes compensation success from the compensation workstreams' ends", () => {
    const ws = (id: string, event: string, at: number, to: string, data = {}) =>
      ["workstream", id, event, at, { to, data, workstreamId: id }] as const;
    const log = new Log();
    for (const args of [
      ws("c1", "compensation_scheduled", 0, "active", { compensates: "ws1" }),
      ws("c2", "compensation_scheduled", 0, "active", { compensates: "ws2" }),
      ws("c3", "compensation_scheduled", 0, "active", { compensates: "ws3" }),
      ws("c1", "workstream_completed", 1000, "completed"),
      ws("c2", "workstream_failed", 1000, "failed"),
      ws("other", "workstream_completed", 1000, "completed"),
    ]) {
      log.add(...args);
    }
    const m = metrics(log, 2000, 0);
    expect(m.compensation).toEqual({ scheduled: 3, ended: 2, completed: 1, successRate: 0.5 });
  });

  it("has no NaN on an empty log", () => {
    const m = computeMetrics({ transitions: [], interventions: [], to: 1000 });
    expect(m.window).toEqual({ from: 1000, to: 1000 });
    expect(numbers(m).filter(([, n]) => !Number.isFinite(n))).toEqual([]);
    expect(m.recoverySuccessRate).toBeNull();
    expect(m.attempts.amplification).toBeNull();
    expect(m.degradation).toEqual({ degradedMs: 0, changes: 0, level: 0, name: null });
    expect(m.health).toEqual({ system: 1, workers: {}, workstreams: {} });
  });

  it("refuses a window that is not one", () => {
    expect(() => computeMetrics({ transitions: [], interventions: [], from: 2, to: 1 })).toThrow(
      MendError,
    );
    expect(() => computeMetrics({ transitions: [], interventions: [], to: Number.NaN })).toThrow(
      /finite/,
    );
  });
});

describe("prometheusText", () => {
  it("exports a histogram and gauges, leaving null rates out", async () => {
    const log = new Log()
      .start("t1", "w1", 0)
      .fail("t1", "task_retry_scheduled", 1000)
      .start("t1", "w1", 3000, 2)
      .complete("t1", 5000)
      .add("breaker", "api", "breaker_opened", 1000, { from: "closed", to: "open" });
    const text = await prometheusText(metrics(log, 60_000, 0));
    expect(text).toContain("# TYPE mend_recovery_seconds histogram");
    expect(text).toContain('mend_recovery_seconds_bucket{le="2.5"} 0');
    expect(text).toContain('mend_recovery_seconds_bucket{le="5"} 1');
    expect(text).toContain("mend_recovery_seconds_count 1");
    expect(text).toContain("# TYPE mend_health_score gauge");
    expect(text).toContain('mend_health_score{scope="worker",id="w1"}');
    expect(text).toContain('mend_failed_attempts{category="network"} 1');
    expect(text).toContain('mend_breaker_state{breaker="api",state="open"} 1');
    expect(text).toContain('mend_breaker_open_seconds{breaker="api"} 59');
    expect(text).not.toContain("mend_pattern_false_positive_ratio");
    expect(text).not.toContain("NaN");
    // Every sample line is `name{labels} value` with a finite value.
    for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
      expect(line).toMatch(/^mend_[a-z_]+(\{[^}]*\})? -?\d+(\.\d+)?(e[-+]?\d+)?$/);
    }
  });
});

const ACTORS = ["engine", "monitor", "cli", "worker:a", "worker:b", "alice"];
const TASK_EVENTS: [string, string][] = [
  ["task_started", "running"],
  ["task_completed", "completed"],
  ["task_recovered", "completed"],
  ["task_retry_scheduled", "queued"],
  ["task_timeout", "queued"],
  ["worker_lost", "queued"],
  ["task_fallback", "queued"],
  ["task_failed", "failed"],
  ["task_quarantined", "failed"],
  ["task_retried", "queued"],
  ["task_revived", "queued"],
  ["task_skipped", "skipped"],
  ["task_cancelled", "cancelled"],
];
const OTHER_EVENTS: [string, string, string][] = [
  ["breaker", "breaker_opened", "open"],
  ["breaker", "breaker_half_opened", "half_open"],
  ["breaker", "breaker_closed", "closed"],
  ["degradation", "degradation_changed", "degraded"],
  ["degradation", "degradation_recovered", "normal"],
  ["pattern", "pattern_detected", "active"],
  ["pattern", "pattern_confirmed", "confirmed"],
  ["pattern", "pattern_false_positive", "false_positive"],
  ["workstream", "compensation_scheduled", "active"],
  ["workstream", "workstream_completed", "completed"],
  ["workstream", "workstream_failed", "failed"],
];

const record = fc.record({
  at: fc.integer({ min: 0, max: 100_000 }),
  kind: fc.oneof(
    fc.constantFrom(...TASK_EVENTS).map(([event, to]) => ({ entity: "task", event, to })),
    fc.constantFrom(...OTHER_EVENTS).map(([entity, event, to]) => ({ entity, event, to })),
  ),
  id: fc.constantFrom("a", "b", "c"),
  actor: fc.constantFrom(...ACTORS),
  leaseToken: fc.option(fc.integer({ min: 1, max: 9 })),
  level: fc.integer({ min: 0, max: 3 }),
  category: fc.constantFrom("network", "timeout", "worker_lost"),
  worker: fc.option(fc.constantFrom("a", "b")),
});

describe("metrics property", () => {
  it("never holds NaN or Infinity, and rates stay in [0, 1]", () => {
    fc.assert(
      fc.property(
        fc.array(record, { maxLength: 60 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        (records, a, b) => {
          const log = new Log();
          for (const r of records.sort((x, y) => x.at - y.at)) {
            log.add(r.kind.entity, r.id, r.kind.event, r.at, {
              to: r.kind.to,
              actor: r.actor,
              workstreamId: r.kind.entity === "task" ? `ws-${r.id}` : null,
              data: { leaseToken: r.leaseToken, level: r.level },
              detail: { failure: { category: r.category }, worker: r.worker },
            });
          }
          const m = metrics(log, Math.max(a, b), Math.min(a, b));
          expect(numbers(m).filter(([, n]) => !Number.isFinite(n))).toEqual([]);
          for (const rate of rates(m)) {
            if (rate !== null) expect(rate).toBeGreaterThanOrEqual(0);
            if (rate !== null) expect(rate).toBeLessThanOrEqual(1);
          }
          expect(m.recovery.recovered + m.recovery.unrecovered).toBe(m.recovery.ended);
          expect(m.recovery.autoRecovered).toBeLessThanOrEqual(m.recovery.recovered);
          expect(m.revivals.completed).toBeLessThanOrEqual(m.revivals.tasks);
        },
      ),
      { numRuns: 300 },
    );
  });
});
