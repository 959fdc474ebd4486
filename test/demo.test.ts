import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { FAULT_KINDS, faultFor, MAX_FAULTY_ATTEMPT } from "../src/demo/faults.js";
import type { LedgerEntry } from "../src/demo/ledger.js";
import { computeReport, percentile, type ReportInput } from "../src/demo/report.js";
import type { DemoResult } from "../src/demo/run.js";
import type { TaskRecord, TransitionRecord } from "../src/model/records.js";
import type { TaskStatus } from "../src/model/states.js";
import { openStore } from "../src/store/open.js";

const WS = "ws_test";
const T0 = Date.UTC(2026, 0, 1);

let seq = 0;
/** A task transition of workstream `ws` at `T0 + ms`. */
function tr(
  event: string,
  key: string,
  ms: number,
  extra: Partial<TransitionRecord> & { category?: string } = {},
): TransitionRecord {
  const { category, ...rest } = extra;
  seq++;
  return {
    seq,
    at: T0 + ms,
    entity: "task",
    entityId: `${rest.workstreamId ?? WS}/${key}`,
    workstreamId: WS,
    from: "running",
    to: "queued",
    event,
    severity: "info",
    data: {},
    detail: category
      ? { attempt: 1, failure: { category, recoverable: true, message: "x" } }
      : null,
    actor: "worker:w_1",
    hash: `h${seq}`,
    ...rest,
  };
}

function created(key: string, ms = 0): TransitionRecord {
  return tr("task_created", key, ms, { from: null, to: "queued", actor: "demo" });
}

function task(key: string, status: TaskStatus): Pick<TaskRecord, "id" | "key" | "status"> {
  return { id: `${WS}/${key}`, key, status };
}

function input(
  tasks: Pick<TaskRecord, "id" | "key" | "status">[],
  transitions: TransitionRecord[],
  extra: Partial<ReportInput> = {},
): ReportInput {
  return {
    workstream: {
      id: WS,
      name: "research",
      status: "completed",
      createdAt: T0,
      updatedAt: T0 + 5000,
    },
    tasks,
    transitions,
    ...extra,
  };
}

describe("recovery report", () => {
  it("counts failures by category, automatic recoveries and time to recover", () => {
    const report = computeReport(
      input(
        [task("plan", "completed"), task("s1", "completed"), task("s2", "completed")],
        [
          created("plan"),
          created("s1"),
          created("s2"),
          tr("task_started", "plan", 10),
          tr("task_completed", "plan", 100, { to: "completed" }),
          tr("task_started", "s1", 110),
          tr("task_retry_scheduled", "s1", 200, { category: "rate_limited" }),
          tr("task_started", "s1", 1200),
          tr("task_timeout", "s1", 3200, { category: "timeout" }),
          tr("task_started", "s1", 3300),
          tr("task_recovered", "s1", 3700, { to: "completed" }),
          tr("task_started", "s2", 110),
          tr("worker_lost", "s2", 5110, { category: "worker_lost", actor: "monitor" }),
          tr("task_started", "s2", 5200),
          tr("task_recovered", "s2", 6110, { to: "completed" }),
        ],
      ),
    );
    expect(report.tasks).toMatchObject({ total: 3, completed: 3 });
    expect(report.attempts).toBe(6);
    expect(report.failures).toEqual({
      total: 3,
      byCategory: { rate_limited: 1, timeout: 1, worker_lost: 1 },
    });
    expect(report.tasksWithFailures).toBe(2);
    expect(report.automaticRecoveries).toBe(2);
    expect(report.autoRecoveryRate).toBe(1);
    // s1: 200 → 3700; s2: 5110 → 6110.
    expect(report.timeToRecoverMs).toEqual({ p50: 1000, p90: 3500, max: 3500 });
    expect(report.failedTasks.find((f) => f.task === "s1")?.categories).toEqual([
      "rate_limited",
      "timeout",
    ]);
    expect(report.lost.count).toBe(0);
    expect(report.duplicateCompletions.count).toBe(0);
    expect(report.wallMs).toBe(5000);
    expect(report.ok).toBe(true);
  });

  it("does not count a completion after an intervention as automatic", () => {
    const report = computeReport(
      input(
        [task("a", "completed"), task("b", "failed")],
        [
          created("a"),
          created("b"),
          tr("task_failed", "a", 100, { category: "logic", to: "failed" }),
          tr("task_retried", "a", 500, { from: "failed", actor: "alice@host" }),
          tr("task_recovered", "a", 900, { to: "completed" }),
          tr("task_failed", "b", 100, { category: "logic", to: "failed" }),
        ],
        {
          workstream: {
            id: WS,
            name: "research",
            status: "failed",
            createdAt: T0,
            updatedAt: T0 + 100,
          },
        },
      ),
    );
    expect(report.interventions).toBe(1);
    expect(report.tasksWithFailures).toBe(2);
    expect(report.automaticRecoveries).toBe(0);
    expect(report.autoRecoveryRate).toBe(0);
    expect(report.timeToRecoverMs).toBeNull();
    expect(report.ok).toBe(false);
  });

  it("finds lost tasks and duplicate completions, ignoring other workstreams", () => {
    const report = computeReport(
      input(
        [task("a", "completed"), task("b", "running")],
        [
          created("a"),
          created("b"),
          created("vanished"),
          tr("task_completed", "a", 100, { to: "completed" }),
          tr("task_recovered", "a", 200, { to: "completed" }),
          tr("task_completed", "other", 100, { to: "completed", workstreamId: "ws_other" }),
          tr("task_completed", "other", 200, { to: "completed", workstreamId: "ws_other" }),
        ],
      ),
    );
    expect(report.lost).toEqual({ count: 2, tasks: ["b", "vanished"] });
    expect(report.duplicateCompletions).toEqual({ count: 1, tasks: ["a"] });
    expect(report.tasks.total).toBe(3);
    expect(report.autoRecoveryRate).toBeNull();
    expect(report.ok).toBe(false);
  });

  it("counts repeated handler side effects per idempotency key", () => {
    const run = (task: string, key: string, workstreamId = WS): LedgerEntry => ({
      workstreamId,
      task,
      idempotencyKey: key,
      attempt: 1,
      pid: 1,
      at: T0,
    });
    const report = computeReport(
      input([task("a", "completed"), task("b", "completed")], [created("a"), created("b")], {
        executions: [
          run("a", "k-a"),
          run("a", "k-a"),
          run("a", "k-a"),
          run("b", "k-b"),
          run("c", "k-c", "ws_other"),
          run("c", "k-c", "ws_other"),
        ],
      }),
    );
    expect(report.sideEffectsRepeated).toEqual({ count: 2, tasks: ["a"] });
    expect(report.ok).toBe(true);
  });

  it("takes percentiles by nearest rank", () => {
    const values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(values, 50)).toBe(5);
    expect(percentile(values, 90)).toBe(9);
    expect(percentile([7], 90)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });
});

describe("fault injector", () => {
  const config = { seed: 42, rate: 0.5 };

  it("is a function of the seed, the task and the attempt", () => {
    for (const key of ["plan", "search-1", "search-2", "write"]) {
      for (let attempt = 1; attempt <= MAX_FAULTY_ATTEMPT; attempt++) {
        expect(faultFor(config, key, attempt, 3)).toEqual(faultFor(config, key, attempt, 3));
      }
    }
    const keys = Array.from({ length: 50 }, (_, i) => `search-${i}`);
    const a = keys.map((k) => faultFor(config, k, 1, 3));
    const b = keys.map((k) => faultFor({ ...config, seed: 43 }, k, 1, 3));
    expect(a).not.toEqual(b);
  });

  it("injects faults at about the given rate, of every kind, and only on early attempts", () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `search-${i}`);
    const faults = keys.map((k) => faultFor(config, k, 1, 3));
    const rate = faults.filter((f) => f !== null).length / keys.length;
    expect(rate).toBeGreaterThan(0.45);
    expect(rate).toBeLessThan(0.55);
    expect(new Set(faults.map((f) => f?.kind).filter(Boolean))).toEqual(new Set(FAULT_KINDS));
    expect(faults.every((f) => f === null || (f.call >= 0 && f.call < 3))).toBe(true);
    expect(keys.every((k) => faultFor(config, k, MAX_FAULTY_ATTEMPT + 1, 3) === null)).toBe(true);
    expect(keys.every((k) => faultFor({ ...config, rate: 0 }, k, 1, 3) === null)).toBe(true);
    expect(keys.every((k) => faultFor({ ...config, rate: 1 }, k, 1, 3) !== null)).toBe(true);
  });
});

describe("mend demo", () => {
  const main = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "mend-demo-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("recovers from injected faults and a killed worker, losing and duplicating nothing", async () => {
    expect(existsSync(main), "dist/cli/main.js is missing: run npm run build first").toBe(true);
    const store = `sqlite:${join(dir, "d.db")}`;
    const { code, stdout, stderr } = await new Promise<{
      code: number;
      stdout: string;
      stderr: string;
    }>((resolve) => {
      execFile(
        process.execPath,
        [main, "demo", "--json", "--agents", "4", "--seed", "7", "--store", store],
        { timeout: 45_000 },
        (err, stdout, stderr) => {
          const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout) as DemoResult;
    const { report } = result;
    expect(report.workstream.status).toBe("completed");
    expect(report.tasks).toMatchObject({ total: 7, completed: 7 });
    expect(report.lost.count).toBe(0);
    expect(report.duplicateCompletions.count).toBe(0);
    expect(report.ok).toBe(true);

    expect(result.killed).not.toBeNull();
    expect(result.killed!.tasks.length).toBeGreaterThanOrEqual(2);
    const workerLost = report.failedTasks.filter((t) => t.categories.includes("worker_lost"));
    expect(workerLost.length).toBeGreaterThanOrEqual(1);
    expect(workerLost.every((t) => t.recovered)).toBe(true);
    expect(report.failures.byCategory.worker_lost).toBeGreaterThanOrEqual(1);

    // The staged outage: the breaker opened for every worker, and what failed for good meanwhile
    // was revived once it closed, with no person involved.
    expect(result.outage).not.toBeNull();
    expect(result.breaker).toMatchObject({ name: "search-api", status: "closed" });
    expect(result.breaker!.opened).toBeGreaterThanOrEqual(1);
    expect(result.revived.length).toBeGreaterThanOrEqual(1);
    expect(result.revived.every((r) => r.completed && r.confidence > 0)).toBe(true);
    expect(result.metrics.revivals.count).toBe(result.revived.length);
    expect(result.metrics.autoRecoveryRate).toBe(1);
    expect(result.metrics.interventions.total).toBe(0);
    expect(result.metrics.health.system).toBeGreaterThan(0);

    // Every worker the demo started is gone, and the log it reported from is intact.
    for (const w of result.workers) expect(() => process.kill(w.pid, 0)).toThrow();
    const opened = await openStore(store);
    try {
      expect((await opened.verifyChain()).ok).toBe(true);
    } finally {
      await opened.close();
    }
  }, 50_000);
});
