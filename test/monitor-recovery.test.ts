/**
 * The monitor's recovery duties, end to end on a real SQLite store and a fake clock, calling
 * Monitor.tick() directly: degradation stepped from the outcomes in the log, failure patterns
 * detected (tripping a breaker) and judged, breaker probes and revival, escalation of tasks left
 * to automatic recovery too long, and overall deadlines.
 */
import { describe, expect, it } from "vitest";
import { Monitor, type SweepResult } from "../src/engine/Monitor.js";
import { Worker } from "../src/engine/Worker.js";
import { validateDefinition } from "../src/model/definition.js";
import type { TaskContext } from "../src/model/handler.js";
import { computeMetrics } from "../src/observe/metrics.js";
import { parseDegradationConfig } from "../src/recovery/degrade.js";
import { parsePatternConfig } from "../src/recovery/patterns.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import {
  claimAs,
  completed,
  eventsOf,
  expectConsistent,
  failed,
  planner,
  report,
  setupStore,
} from "./helpers/recovery.js";
import { waitFor } from "./helpers/wait.js";

const operator = { actor: "alice", reason: "api is down", command: "mend breaker open" };

/** A workstream of `keys`, all run by `handler`, failing for good at their first failure. */
function tasks(
  name: string,
  keys: string[],
  options: {
    handler?: string;
    breaker?: string;
    breakers?: Record<string, Record<string, unknown>>;
    deadline?: string;
    maxAttempts?: number;
  } = {},
) {
  return validateDefinition({
    name,
    ...(options.breakers ? { breakers: options.breakers } : {}),
    tasks: keys.map((id) => ({
      id,
      handler: options.handler ?? "search",
      ...(options.breaker ? { breaker: options.breaker } : {}),
      ...(options.deadline ? { deadline: options.deadline } : {}),
      retry: {
        maxAttempts: options.maxAttempts ?? 1,
        backoff: "constant",
        initial: "1s",
        jitter: "none",
      },
    })),
  });
}

/** Transitions of one entity with the given event. */
async function transitionsOf(store: SqliteStore, entityId: string, event: string) {
  return (await store.listTransitions({ entityId })).filter((t) => t.event === event);
}

async function breaker(store: SqliteStore, name: string) {
  return (await store.listBreakers()).find((b) => b.id === name);
}

/** A tick that must have run as the leader. */
async function tick(monitor: Monitor): Promise<SweepResult> {
  const result = await monitor.tick();
  expect(result).not.toBeNull();
  return result!;
}

// ------------------------------------------------------------------------------- degradation

const DEGRADATION = parseDegradationConfig({
  levels: [
    {
      name: "reduced",
      trigger: { errorRate: 0.5, window: "10s", minOutcomes: 4 },
      recover: { errorRate: 0.1, for: "5s" },
      quality: 0.7,
      capabilities: { concurrencyFactor: 0.5, skipOptional: true },
    },
  ],
});

describe("Monitor: degradation", () => {
  it("degrades on a burst of failures, hands the level to workers and handlers, and recovers after healthy outcomes", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({
      store,
      clock,
      planner,
      degradation: DEGRADATION,
      patterns: false,
      backupIntervalMs: 0,
    });
    // The watch starts reading the log at its end: this tick only positions it.
    expect((await tick(monitor)).watch.degradation).toBeNull();
    expect(await store.getDegradation()).toMatchObject({ level: 0, name: "normal" });

    await store.submit(tasks("burst", ["a", "b", "c", "d"]));
    const claimed = await claimAs(store, "w1", ["search"], 4);
    expect(claimed).toHaveLength(4);
    // Three failures are below the trigger's minimum of 4 outcomes: nothing happens yet.
    await report(
      store,
      "w1",
      claimed.slice(0, 3).map((t) => failed(t, "network")),
    );
    clock.advance(100);
    expect((await tick(monitor)).watch.degradation).toBeNull();
    await report(store, "w1", [failed(claimed[3]!, "network")]);
    clock.advance(100);

    const degraded = await tick(monitor);
    expect(degraded.watch.degradation).toMatchObject({ from: 0, to: 1 });
    expect(await store.getDegradation()).toMatchObject({
      status: "degraded",
      level: 1,
      name: "reduced",
      quality: 0.7,
      capabilities: { concurrencyFactor: 0.5, skipOptional: true },
    });
    const changed = await transitionsOf(store, "system", "degradation_changed");
    expect(changed).toHaveLength(1);
    expect(changed[0]).toMatchObject({ entity: "degradation", from: null, to: "degraded" });
    expect(JSON.stringify(changed[0]!.detail)).toMatch(/reduced/);
    // The same level again: nothing more is recorded.
    clock.advance(100);
    expect((await tick(monitor)).watch.degradation).toBeNull();
    expect(await transitionsOf(store, "system", "degradation_changed")).toHaveLength(1);

    // A worker's round trip carries the level.
    const result = await store.exchange({
      workerId: "w1",
      outcomes: [],
      claim: 0,
      leaseMs: 5000,
      handlers: ["search"],
      planner,
    });
    expect(result.degradation).toEqual({
      level: 1,
      name: "reduced",
      quality: 0.7,
      capabilities: { concurrencyFactor: 0.5, skipOptional: true },
    });

    // A real worker's handler sees it as ctx.degradation.
    const { taskIds } = await store.submit(tasks("degraded work", ["x"], { handler: "adapt" }));
    const seen: TaskContext["degradation"][] = [];
    const worker = new Worker({
      store,
      clock,
      id: "w-real",
      handlers: {
        adapt: (ctx: TaskContext) => {
          seen.push(ctx.degradation);
          return ctx.degradation.capabilities.skipOptional === true ? "summary" : "full";
        },
      },
    });
    await worker.start();
    await waitFor(
      async () => (await store.getTask(taskIds[0]!))?.status === "completed",
      5_000,
      "the handler to run",
    );
    await worker.stop(0);
    expect(seen).toEqual([
      {
        level: 1,
        name: "reduced",
        quality: 0.7,
        capabilities: { concurrencyFactor: 0.5, skipOptional: true },
      },
    ]);
    expect((await store.getTask(taskIds[0]!))?.output).toBe("summary");

    // The failures leave the 10 s window; healthy outcomes follow.
    clock.advance(10_000);
    await store.submit(tasks("healthy", ["h1", "h2", "h3", "h4", "h5"]));
    const healthy = await claimAs(store, "w1", ["search"], 5);
    expect(healthy).toHaveLength(5);
    await report(
      store,
      "w1",
      healthy.map((t) => completed(t)),
    );
    clock.advance(100);
    // The recovery conditions hold from now, but not yet for 5 s.
    expect((await tick(monitor)).watch.degradation).toBeNull();
    clock.advance(4_000);
    expect((await tick(monitor)).watch.degradation).toBeNull();
    expect((await store.getDegradation()).level).toBe(1);
    clock.advance(1_000);
    const recovered = await tick(monitor);
    expect(recovered.watch.degradation).toMatchObject({ from: 1, to: 0 });
    expect(await store.getDegradation()).toMatchObject({
      status: "normal",
      level: 0,
      name: "normal",
      quality: 1,
      capabilities: {},
    });
    const back = await transitionsOf(store, "system", "degradation_recovered");
    expect(back).toHaveLength(1);
    expect(back[0]).toMatchObject({ from: "degraded", to: "normal" });
    const after = await store.exchange({
      workerId: "w1",
      outcomes: [],
      claim: 0,
      leaseMs: 5000,
      handlers: ["search"],
      planner,
    });
    expect(after.degradation).toMatchObject({ level: 0, name: "normal" });

    // The metrics count the time spent degraded: from the change to the recovery.
    const metrics = computeMetrics({
      transitions: await store.listTransitions(),
      interventions: await store.listInterventions(),
      to: clock.now(),
    });
    expect(metrics.degradation.degradedMs).toBe(back[0]!.at - changed[0]!.at);
    expect(metrics.degradation.degradedMs).toBeGreaterThan(0);
    expect(metrics.degradation).toMatchObject({ changes: 2, level: 0 });
    await expectConsistent(store, clock);
  });
});

// ------------------------------------------------------------------------------- patterns

/** Breakers that never open by themselves in these tests: only a pattern opens them. */
const PATIENT = { failureThreshold: 100, open: "10m" };

describe("Monitor: failure patterns", () => {
  it("a burst of failures behind a breaker is detected, trips the breaker, and is judged by what follows", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({ store, clock, planner, backupIntervalMs: 0 });
    await tick(monitor);

    // Six tasks behind each breaker; all are claimed before anything fails.
    await store.submit(
      tasks("keeps failing", ["a1", "a2", "a3", "a4", "a5", "a6"], {
        handler: "h1",
        breaker: "b1",
        breakers: { b1: PATIENT },
      }),
    );
    await store.submit(
      tasks("recovers", ["b1", "b2", "b3", "b4", "b5", "b6"], {
        handler: "h2",
        breaker: "b2",
        breakers: { b2: PATIENT },
      }),
    );
    const one = await claimAs(store, "w1", ["h1"], 6);
    const two = await claimAs(store, "w2", ["h2"], 6);
    expect(one).toHaveLength(6);
    expect(two).toHaveLength(6);
    await report(
      store,
      "w1",
      one.slice(0, 5).map((t) => failed(t, "network")),
    );
    await report(
      store,
      "w2",
      two.slice(0, 5).map((t) => failed(t, "external_service")),
    );
    expect((await store.listBreakers()).map((b) => [b.id, b.status])).toEqual([
      ["b1", "closed"],
      ["b2", "closed"],
    ]);
    clock.advance(100);

    const detectedAt = clock.now();
    const sweep = await tick(monitor);
    const ids = sweep.watch.patterns.map((p) => p.id);
    expect(ids).toContain(`frequency:key:breaker:b1@${detectedAt}`);
    expect(ids).toContain(`correlation:key:breaker:b1@${detectedAt}`);
    expect(ids).toContain(`frequency:key:breaker:b2@${detectedAt}`);
    expect(ids).toContain(`correlation:key:breaker:b2@${detectedAt}`);
    const active = await store.listPatterns("active");
    expect(active.map((p) => p.id).sort()).toEqual([...ids].sort());
    const b1Pattern = active.find((p) => p.id === `correlation:key:breaker:b1@${detectedAt}`)!;
    expect(b1Pattern).toMatchObject({
      detector: "correlation",
      subject: "breaker:b1",
      action: { kind: "open_breaker", breaker: "b1" },
      detectedAt,
    });
    expect(await eventsOf(store, b1Pattern.id)).toEqual(["pattern_detected"]);

    // The monitor opened both breakers early, saying why.
    for (const name of ["b1", "b2"]) {
      expect(await breaker(store, name)).toMatchObject({ status: "open", forced: false });
      const opened = await transitionsOf(store, name, "breaker_opened");
      expect(opened).toHaveLength(1);
      expect(opened[0]!.actor).toBe("monitor");
      expect(String((opened[0]!.detail as { reason: string }).reason)).toMatch(/pattern/);
    }
    // Their queued tasks wait: nothing behind an open breaker is claimed.
    expect(await claimAs(store, "w3", ["h1", "h2"], 10)).toEqual([]);

    // What follows: b1's last task fails too (its call started before the breaker opened), b2's
    // last task succeeds.
    clock.advance(1);
    await report(store, "w1", [failed(one[5]!, "network")]);
    await report(store, "w2", [completed(two[5]!)]);
    clock.advance(1);
    const judged = await tick(monitor);
    // A failure of the subject confirms at once; a success waits for the window's end.
    expect(judged.watch.judged).toEqual(
      expect.arrayContaining([
        { id: `frequency:key:breaker:b1@${detectedAt}`, verdict: "confirmed" },
        { id: `correlation:key:breaker:b1@${detectedAt}`, verdict: "confirmed" },
      ]),
    );
    expect(judged.watch.judged.map((j) => j.id)).not.toContain(
      `correlation:key:breaker:b2@${detectedAt}`,
    );

    // Past the windows (correlation 30 s, frequency 60 s): b2's patterns were false positives.
    clock.advance(60_000);
    await tick(monitor);
    const byId = new Map((await store.listPatterns()).map((p) => [p.id, p.status]));
    expect(byId.get(`frequency:key:breaker:b1@${detectedAt}`)).toBe("confirmed");
    expect(byId.get(`correlation:key:breaker:b1@${detectedAt}`)).toBe("confirmed");
    expect(byId.get(`frequency:key:breaker:b2@${detectedAt}`)).toBe("false_positive");
    expect(byId.get(`correlation:key:breaker:b2@${detectedAt}`)).toBe("false_positive");
    expect(byId.get(`frequency:handler:h1@${detectedAt}`)).toBe("confirmed");
    expect(byId.get(`frequency:handler:h2@${detectedAt}`)).toBe("false_positive");
    expect(await eventsOf(store, `correlation:key:breaker:b2@${detectedAt}`)).toEqual([
      "pattern_detected",
      "pattern_false_positive",
    ]);
    expect(await eventsOf(store, `correlation:key:breaker:b1@${detectedAt}`)).toEqual([
      "pattern_detected",
      "pattern_confirmed",
    ]);

    const metrics = computeMetrics({
      transitions: await store.listTransitions(),
      interventions: await store.listInterventions(),
      to: clock.now(),
    });
    expect(metrics.patterns.detected).toBe(ids.length);
    expect(metrics.patterns.confirmed + metrics.patterns.falsePositives).toBeGreaterThanOrEqual(6);
    await expectConsistent(store, clock);
  });

  it("an ongoing pattern is reported once, and a breaker already open is not tripped again", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({ store, clock, planner, backupIntervalMs: 0 });
    await tick(monitor);
    await store.submit(
      tasks("w", ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"], {
        breaker: "b",
        breakers: { b: PATIENT },
      }),
    );
    const claimed = await claimAs(store, "w1", ["search"], 8);
    await report(
      store,
      "w1",
      claimed.slice(0, 5).map((t) => failed(t, "network")),
    );
    clock.advance(100);
    const first = await tick(monitor);
    expect(first.watch.patterns.length).toBeGreaterThan(0);
    expect(await transitionsOf(store, "b", "breaker_opened")).toHaveLength(1);
    // More failures of the same kind within the window: the same patterns, not reported again.
    await report(
      store,
      "w1",
      claimed.slice(5).map((t) => failed(t, "network")),
    );
    clock.advance(100);
    const second = await tick(monitor);
    expect(second.watch.patterns).toEqual([]);
    expect(await transitionsOf(store, "b", "breaker_opened")).toHaveLength(1);
    expect((await store.listPatterns()).length).toBe(first.watch.patterns.length);
    await expectConsistent(store, clock);
  });
});

// ------------------------------------------------------------------------ revival, escalation

describe("Monitor: a pattern that degrades", () => {
  it("an anomaly moves a normal system to the first degradation level before its own trigger fires", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({
      store,
      clock,
      planner,
      // The level's own trigger needs far more outcomes than the test makes: only the anomaly
      // can degrade here.
      degradation: parseDegradationConfig({
        levels: [
          {
            name: "reduced",
            trigger: { errorRate: 0.9, window: "10s", minOutcomes: 1000 },
            recover: { errorRate: 0.1, for: "5s" },
          },
        ],
      }),
      patterns: parsePatternConfig({
        frequency: { enabled: false },
        sequence: { enabled: false },
        correlation: { enabled: false },
        trend: { enabled: false },
        anomaly: { windowMs: "10s", minOutcomes: 5, warmupWindows: 3 },
      }),
      backupIntervalMs: 0,
    });
    await tick(monitor);
    // A healthy baseline: ten windows of successes.
    for (let w = 0; w < 10; w++) {
      await store.submit(tasks(`ok-${w}`, ["a", "b", "c", "d", "e", "f"]));
      const ok = await claimAs(store, "w1", ["search"], 6);
      await report(
        store,
        "w1",
        ok.map((t) => completed(t)),
      );
      clock.advance(10_000);
      expect((await tick(monitor)).watch.degradation).toBeNull();
    }
    // Then a window where almost everything fails.
    await store.submit(tasks("bad", ["a", "b", "c", "d", "e", "f"]));
    const bad = await claimAs(store, "w1", ["search"], 6);
    await report(store, "w1", [
      ...bad.slice(0, 5).map((t) => failed(t, "external_service")),
      completed(bad[5]!),
    ]);
    clock.advance(1_000);
    let degraded = null;
    for (let i = 0; i < 12 && !degraded; i++) {
      degraded = (await tick(monitor)).watch.degradation;
      clock.advance(1_000);
    }
    expect(degraded).toMatchObject({ from: 0, to: 1 });
    expect(degraded!.reason).toMatch(/anomaly pattern detected/);
    expect(await store.getDegradation()).toMatchObject({ level: 1, name: "reduced" });
    expect((await store.listPatterns()).some((p) => p.detector === "anomaly")).toBe(true);
    await expectConsistent(store, clock);
  });
});

describe("Monitor: breaker probes, revival and escalation", () => {
  it("a breaker's failed tasks wait while it is open; after its open time one is revived as the probe, and the breaker closes", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({ store, clock, planner, patterns: false, backupIntervalMs: 0 });
    await tick(monitor);
    const { workstreamId: ws, taskIds } = await store.submit(
      tasks("outage", ["t1", "t2"], {
        breaker: "api",
        breakers: {
          api: { failureThreshold: 2, open: "10s", halfOpenMaxCalls: 1, successThreshold: 1 },
        },
      }),
    );
    const [t1, t2] = taskIds as [string, string];
    const claimed = await claimAs(store, "w1", ["search"], 2);
    expect(claimed.map((t) => t.id)).toEqual([t1, t2]);
    await report(store, "w1", [failed(claimed[0]!, "network")]);
    clock.advance(10);
    await report(store, "w1", [failed(claimed[1]!, "network")]);
    expect(await breaker(store, "api")).toMatchObject({ status: "open" });
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    // t2's failure opened the breaker: it waits on an open breaker with revival on, automatic
    // (level 1). (t1 failed while the breaker was still closed: its escalation was set then.)
    expect((await store.getTask(t2))?.escalation).toMatchObject({ level: 1 });

    // While it is open, sweeps do nothing.
    const log = (await store.listTransitions()).length;
    for (let i = 0; i < 3; i++) {
      clock.advance(3_000);
      const idle = await tick(monitor);
      expect(idle).toMatchObject({ probing: [], revived: [], escalated: [], expired: [] });
    }
    expect((await store.listTransitions()).length).toBe(log);
    expect(await breaker(store, "api")).toMatchObject({ status: "open" });

    // Its open time is up: half-open, and with nothing else waiting the oldest failure probes.
    clock.advance(1_000);
    const probing = await tick(monitor);
    expect(probing.probing.map((b) => [b.id, b.status])).toEqual([["api", "half_open"]]);
    expect(probing.revived).toEqual([
      expect.objectContaining({ taskId: t1, workstreamId: ws, revival: 1 }),
    ]);
    expect(probing.revived[0]!.cause).toMatch(/half-open/);
    const revived = await transitionsOf(store, t1, "task_revived");
    expect(revived).toHaveLength(1);
    expect(revived[0]).toMatchObject({ from: "failed", to: "queued", actor: "monitor" });
    expect(String((revived[0]!.detail as { cause: string }).cause)).toMatch(/half-open/);
    expect(await store.getTask(t1)).toMatchObject({
      status: "queued",
      revivals: 1,
      attempts: 0,
      escalation: null,
    });
    // One probe at a time: t2 stays failed.
    expect((await store.getTask(t2))?.status).toBe("failed");
    expect((await store.getWorkstream(ws))?.status).toBe("active");

    const probe = await claimAs(store, "w1", ["search"], 2);
    expect(probe.map((t) => t.id)).toEqual([t1]);
    await report(store, "w1", [completed(probe[0]!)]);
    expect(await breaker(store, "api")).toMatchObject({ status: "closed" });
    expect((await store.getTask(t1))?.status).toBe("completed");

    // Closed again after failing: that is evidence for t2, which the next sweep revives.
    clock.advance(1_000);
    const next = await tick(monitor);
    expect(next.revived).toEqual([expect.objectContaining({ taskId: t2, revival: 1 })]);
    expect(next.revived[0]!.cause).toMatch(/closed again/);
    const last = await claimAs(store, "w1", ["search"], 2);
    expect(last.map((t) => t.id)).toEqual([t2]);
    await report(store, "w1", [completed(last[0]!)]);
    expect((await store.getWorkstream(ws))?.status).toBe("completed");
    expect(await eventsOf(store, "api")).toEqual([
      "breaker_created",
      "breaker_opened",
      "breaker_half_opened",
      "breaker_closed",
    ]);
    await expectConsistent(store, clock);
  });

  it("a failure with no evidence to wait for is level 2 at once; one left on a breaker held open is escalated after escalateAfterMs", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({
      store,
      clock,
      planner,
      patterns: false,
      backupIntervalMs: 0,
      escalateAfterMs: 60_000,
    });
    await tick(monitor);

    // No breaker, a network failure: nothing will bring it back by itself.
    const plain = await store.submit(tasks("plain", ["p"]));
    const [p] = await claimAs(store, "w1", ["search"], 1);
    await report(store, "w1", [failed(p!, "network")]);
    const plainTask = await store.getTask(plain.taskIds[0]!);
    expect(plainTask?.status).toBe("failed");
    expect(plainTask?.escalation).toMatchObject({ level: 2, automatic: null });
    expect(plainTask?.escalation?.next).toMatch(/^mend retry /);

    // Behind a breaker a person holds open: level 1, waiting for the breaker.
    const guarded = await store.submit(
      tasks("guarded", ["g"], { handler: "call", breaker: "dead" }),
    );
    const g = guarded.taskIds[0]!;
    const [running] = await claimAs(store, "w1", ["call"], 1);
    await store.controlBreaker("dead", "open", operator);
    await report(store, "w1", [failed(running!, "network")]);
    const waiting = await store.getTask(g);
    expect(waiting?.status).toBe("failed");
    expect(waiting?.escalation).toMatchObject({ level: 1 });
    expect(waiting?.escalation?.automatic).toMatch(/dead/);

    // Within the escalation policy: nothing happens, however often the monitor sweeps.
    for (let i = 0; i < 5; i++) {
      clock.advance(10_000);
      const r = await tick(monitor);
      expect(r.escalated).toEqual([]);
      expect(r.revived).toEqual([]);
      expect(r.probing).toEqual([]);
    }
    expect(await breaker(store, "dead")).toMatchObject({ status: "open", forced: true });

    clock.advance(10_000);
    const escalated = await tick(monitor);
    expect(escalated.escalated).toEqual([g]);
    const task = await store.getTask(g);
    expect(task?.status).toBe("failed");
    expect(task?.escalation?.level).toBeGreaterThanOrEqual(2);
    expect(task?.escalation?.next).toMatch(/^mend /);
    expect(task?.escalation?.automatic).toBeNull();
    const events = await transitionsOf(store, g, "task_escalated");
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ from: "failed", to: "failed", actor: "monitor" });
    expect(events[0]!.detail).toMatchObject({
      level: task!.escalation!.level,
      next: task!.escalation!.next,
    });
    // Escalated once: later sweeps leave it alone, and the level-2 task was never level 1.
    clock.advance(120_000);
    expect((await tick(monitor)).escalated).toEqual([]);
    expect(await transitionsOf(store, plain.taskIds[0]!, "task_escalated")).toEqual([]);
    await expectConsistent(store, clock);
  });
});

// ------------------------------------------------------------------------------- deadlines

describe("Monitor: deadlines", () => {
  it("a queued task past its overall deadline is failed by a sweep", async () => {
    const { store, clock } = setupStore();
    const monitor = new Monitor({ store, clock, planner, patterns: false, backupIntervalMs: 0 });
    const { workstreamId: ws, taskIds } = await store.submit(
      tasks("hurry", ["late", "free"], { deadline: "5s" }),
    );
    const [late, free] = taskIds as [string, string];
    // One task runs in time; the other is never claimed.
    const [running] = await claimAs(store, "w1", ["search"], 1);
    expect(running!.id).toBe(late);
    await report(store, "w1", [completed(running!)]);

    clock.advance(4_999);
    expect((await tick(monitor)).expired).toEqual([]);
    expect((await store.getTask(free))?.status).toBe("queued");
    clock.advance(1);
    const swept = await tick(monitor);
    expect(swept.expired).toEqual([free]);
    const task = await store.getTask(free);
    expect(task).toMatchObject({ status: "failed" });
    expect(task?.lastError).toMatchObject({ category: "timeout", recoverable: false });
    const failedEvents = (await store.listTransitions({ entityId: free })).filter(
      (t) => t.from === "queued" && t.to === "failed",
    );
    expect(failedEvents).toHaveLength(1);
    expect(failedEvents[0]!.actor).toBe("monitor");
    expect((await store.getTask(late))?.status).toBe("completed");
    expect((await store.getWorkstream(ws))?.status).toBe("failed");
    // Nothing more to expire.
    clock.advance(1_000);
    expect((await tick(monitor)).expired).toEqual([]);
    await expectConsistent(store, clock);
  });
});
