import { Command } from "commander";
import { describe, expect, it, vi } from "vitest";
import { registerDag } from "../src/cli/commands/dag.js";
import { registerDeps } from "../src/cli/commands/deps.js";
import { registerDiagnose } from "../src/cli/commands/diagnose.js";
import { registerEvents } from "../src/cli/commands/events.js";
import { registerInterventions } from "../src/cli/commands/interventions.js";
import { registerShow } from "../src/cli/commands/show.js";
import { registerState } from "../src/cli/commands/state.js";
import { registerStatus } from "../src/cli/commands/status.js";
import { registerSubmit } from "../src/cli/commands/submit.js";
import { registerTaskActions } from "../src/cli/commands/task-actions.js";
import { registerWorkstream } from "../src/cli/commands/workstream.js";
import { FakeClock } from "../src/engine/clock.js";
import { Worker } from "../src/engine/Worker.js";
import type { Failure } from "../src/model/failure.js";
import type { TaskStatus, WorkstreamStatus } from "../src/model/states.js";
import {
  type DiagnosableTask,
  type DiagnosableWorkstream,
  type Diagnosis,
  type DiagnoseContext,
  diagnose,
  diagnoseWorkstream,
  type Suggestion,
  type WorkstreamDiagnosis,
} from "../src/recovery/escalate.js";
import { taskRecord } from "./helpers/records.js";
import { spec } from "./helpers/specs.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const NOW = Date.UTC(2026, 0, 1, 14, 3, 8);
const WS = "ws_test";

/** A task record as the store would hold it, in workstream WS, submitted a minute before NOW. */
function task(key: string, fields: Partial<DiagnosableTask> = {}): DiagnosableTask {
  return taskRecord(WS, key, NOW, {
    handler: "work",
    input: {},
    createdAt: NOW - 60_000,
    ...fields,
  });
}

function workstream(
  status: WorkstreamStatus = "failed",
  fields: Partial<DiagnosableWorkstream> = {},
): DiagnosableWorkstream {
  return {
    id: WS,
    name: "research",
    status,
    onFailure: "continue",
    createdAt: NOW - 60_000,
    updatedAt: NOW,
    ...fields,
  } as DiagnosableWorkstream;
}

function err(category: Failure["category"], recoverable: boolean, extra: Partial<Failure> = {}) {
  return { category, recoverable, message: `${category} happened`, ...extra } satisfies Failure;
}

/** A task that failed for good after `attempts` attempts with `failure`. */
function failedWith(key: string, failure: Failure, fields: Partial<DiagnosableTask> = {}) {
  return task(key, { status: "failed", attempts: 3, lastError: failure, ...fields });
}

const ctx = (fields: Partial<DiagnoseContext> = {}): DiagnoseContext => ({ now: NOW, ...fields });

describe("diagnose: the engine is on it (level 1)", () => {
  it("a completed task needs nothing", () => {
    const d = diagnose(task("a", { status: "completed", attempts: 1 }), ctx());
    expect(d).toMatchObject({ level: 1, automatic: "nothing to do: it completed" });
  });

  it("a queued retry says which attempt runs when", () => {
    const t = task("a", {
      status: "queued",
      attempts: 1,
      runAt: NOW + 4_000,
      lastError: err("network", true, { code: "ECONNRESET" }),
    });
    const d = diagnose(t, ctx());
    expect(d.level).toBe(1);
    expect(d.cause).toBe("transient");
    expect(d.automatic).toBe(
      "attempt 2 of 3 at 2026-01-01T14:03:12.000Z (in 4s), on the next worker that serves work",
    );
    expect(d.next.command).toBe(`mend show ${WS}/a`);
  });

  it("a queued task behind an open breaker waits for it", () => {
    const t = task("a", { status: "queued", attempts: 1, breaker: "search-api" });
    const d = diagnose(t, ctx({ breakers: { "search-api": "open" } }));
    expect(d.level).toBe(1);
    expect(d.automatic).toContain("when breaker search-api lets calls through");
  });

  it("a running task finishes on its worker or runs again when the lease expires", () => {
    const t = task("a", {
      status: "running",
      attempts: 2,
      leaseWorker: "w1",
      leaseExpiresAt: NOW + 5_000,
    });
    const d = diagnose(t, ctx());
    expect(d.level).toBe(1);
    expect(d.summary).toBe("a is running attempt 2 of 3.");
    expect(d.automatic).toMatch(/^finishes on worker w1; its lease runs to .* \(in 5s\)/);
  });

  it("a pending task whose dependencies are on their way waits for them", () => {
    const a = task("a", { status: "running", attempts: 1 });
    const b = task("b", { status: "completed" });
    const c = task("c", { deps: ["a", "b"] });
    const d = diagnose(c, ctx({ tasks: [a, b, c] }));
    expect(d).toMatchObject({ level: 1, automatic: "starts once a (running) complete" });
  });
});

describe("diagnose: failed for good", () => {
  it("transient, retries exhausted: retry with a budget larger than the policy (level 2)", () => {
    const d = diagnose(
      failedWith("a", err("external_service", true, { status: 503 })),
      ctx({ workstream: workstream() }),
    );
    expect(d.level).toBe(2);
    expect(d.cause).toBe("transient");
    expect(d.summary).toBe(
      "a failed for good after 3 attempts: external_service, external_service happened (HTTP 503). The policy allowed 3.",
    );
    expect(d.next.command).toBe(`mend retry ${WS}/a --max-attempts 6`);
    expect(d.alternatives.map((a) => a.command)).toContain(
      `mend skip ${WS}/a --reason "<why its result is not needed>"`,
    );
    expect(d.automatic).toBeNull();
  });

  it("timeout: twice the deadline as well", () => {
    const d = diagnose(failedWith("a", err("timeout", true)), ctx());
    expect(d.level).toBe(2);
    expect(d.next.command).toBe(`mend retry ${WS}/a --timeout 1m --max-attempts 6`);
    expect(d.next.why).toContain("30s deadline");
  });

  it("rate limited: its own cause, and the wait the service asked for", () => {
    const d = diagnose(failedWith("a", err("rate_limited", true, { retryAfterMs: 60_000 })), ctx());
    expect(d).toMatchObject({ level: 2, cause: "rate_limited" });
    expect(d.next.why).toContain("asked to wait 1m");
  });

  it("recoverable tool failure is transient; unrecoverable one needs a code change", () => {
    expect(diagnose(failedWith("a", err("tool_failure", true)), ctx()).level).toBe(2);
    const d = diagnose(failedWith("a", err("tool_failure", false)), ctx());
    expect(d).toMatchObject({ level: 4, cause: "logic" });
    expect(d.next.why).toContain("tool call");
  });

  it("breaker open and revival on: revived automatically (level 1); otherwise level 2", () => {
    const t = failedWith("a", err("network", true), { breaker: "search-api", revivals: 1 });
    const on = ctx({ workstream: workstream("active", { revive: true }) });
    const d = diagnose(t, { ...on, breakers: { "search-api": "open" } });
    expect(d.level).toBe(1);
    expect(d.automatic).toBe("revived when breaker search-api closes (revived 1 time so far)");
    expect(d.alternatives[0]!.command).toBe(`mend retry ${WS}/a --max-attempts 6`);

    expect(diagnose(t, { ...on, breakers: { "search-api": "closed" } }).level).toBe(2);
    expect(diagnose(t, { ...on, breakers: {} }).level).toBe(2);
    const off = ctx({ workstream: workstream("active", { revive: false }) });
    expect(diagnose(t, { ...off, breakers: { "search-api": "open" } }).level).toBe(2);
  });

  it("quarantined after losing its worker repeatedly: investigate the handler (level 3)", () => {
    const t = failedWith("a", err("worker_lost", true), { workerLostStreak: 3 });
    const d = diagnose(t, ctx());
    expect(d).toMatchObject({ level: 3, cause: "worker" });
    expect(d.summary).toContain("quarantined");
    expect(d.next.command).toBe(`mend show ${WS}/a`);
    expect(d.alternatives.map((a) => a.command)).toEqual([
      "mend events --severity warning",
      `mend retry ${WS}/a --reason "<what was fixed>"`,
      `mend skip ${WS}/a --reason "<why its result is not needed>"`,
    ]);
  });

  it("a lost worker short of quarantine is retried with a larger budget", () => {
    const t = failedWith("a", err("worker_lost", true), { workerLostStreak: 1 });
    expect(diagnose(t, ctx())).toMatchObject({ level: 2, cause: "worker" });
  });

  it("logic (TypeError): fix the handler, then retry (level 4)", () => {
    const t = failedWith(
      "a",
      err("logic", false, { name: "TypeError", message: "x is undefined" }),
      {
        attempts: 1,
      },
    );
    const d = diagnose(t, ctx());
    expect(d).toMatchObject({ level: 4, cause: "logic" });
    expect(d.summary).toBe("a failed for good after 1 attempt: logic, TypeError: x is undefined.");
    expect(d.next.command).toBe(`mend retry ${WS}/a --reason "<what was fixed>"`);
    expect(d.next.why).toContain("handler work");
  });

  it("HTTP 401/403 point at credentials", () => {
    const d = diagnose(failedWith("a", err("logic", false, { status: 403 })), ctx());
    expect(d).toMatchObject({ level: 4, cause: "logic" });
    expect(d.next.why).toContain("credentials");
  });

  it("input rejected (HTTP 400/422, validation): update the definition (level 4, cause definition)", () => {
    for (const f of [
      err("logic", false, { status: 422 }),
      err("logic", false, { status: 400 }),
      err("logic", false, { name: "ZodError" }),
    ]) {
      const d = diagnose(failedWith("a", f), ctx());
      expect(d).toMatchObject({ level: 4, cause: "definition" });
      expect(d.next.command).toBe("mend submit <corrected definition file>");
      expect(d.next.why).toContain("cannot be edited");
      expect(d.alternatives[0]!.command).toBe(`mend retry ${WS}/a --reason "<what was fixed>"`);
    }
  });

  it("data corruption: validate, then repair or restore (level 3)", () => {
    const d = diagnose(failedWith("a", err("data_corruption", false)), ctx());
    expect(d).toMatchObject({ level: 3, cause: "data" });
    expect(d.next.command).toBe("mend state validate");
    expect(d.alternatives.map((a) => a.command)).toEqual([
      "mend state repair --dry-run",
      "mend state restore --from-backup latest",
      `mend retry ${WS}/a --reason "<what was fixed>"`,
    ]);
  });

  it("invalid state and coordination: manual investigation (level 3)", () => {
    for (const category of ["invalid_state", "coordination"] as const) {
      const d = diagnose(failedWith("a", err(category, false)), ctx());
      expect(d).toMatchObject({ level: 3, cause: "coordination" });
      expect(d.next.command).toBe(`mend show ${WS}/a`);
    }
  });

  it("quality: retry, or a fallback (level 2)", () => {
    const d = diagnose(failedWith("a", err("quality", true)), ctx());
    expect(d.level).toBe(2);
    expect(d.next.command).toBe(`mend retry ${WS}/a --max-attempts 6`);
    expect(d.next.why).toContain("fallback");
  });

  it("an error Mend could not classify: read it (level 3)", () => {
    const d = diagnose(failedWith("a", err("unknown", true)), ctx());
    expect(d).toMatchObject({ level: 3, cause: "unknown" });
    expect(diagnose(task("a", { status: "failed" }), ctx()).level).toBe(3);
  });

  it("a non-critical failure says its dependents went on", () => {
    const d = diagnose(failedWith("a", err("network", true), { critical: false }), ctx());
    expect(d.summary).toContain("not critical");
  });
});

describe("diagnose: stopped tasks and closed workstreams", () => {
  it.each<TaskStatus>(["cancelled", "skipped"])("%s: mend retry (level 2)", (status) => {
    const d = diagnose(task("a", { status }), ctx({ workstream: workstream("active") }));
    expect(d).toMatchObject({ level: 2, next: { command: `mend retry ${WS}/a` } });
  });

  it("a task of an archived workstream can only run again as a new workstream", () => {
    const d = diagnose(
      failedWith("a", err("network", true)),
      ctx({ workstream: workstream("archived") }),
    );
    expect(d.level).toBe(2);
    expect(d.next.command).toBe("mend submit <definition file>");
  });
});

describe("diagnose: dependency", () => {
  const a = failedWith("a", err("logic", false, { name: "TypeError" }));

  it("a pending task blocked by a failed dependency: that dependency's level and command", () => {
    const b = task("b", { deps: ["a"] });
    const d = diagnose(b, ctx({ tasks: [a, b] }));
    const ofA = diagnose(a, ctx());
    expect(d).toMatchObject({ level: 4, cause: "dependency" });
    expect(d.summary).toMatch(/^b cannot start: it depends on a, which failed\. a failed/);
    expect(d.next.command).toBe(ofA.next.command);
    expect(d.next.command).toContain(`${WS}/a`);
    expect(d.alternatives.map((x) => x.command)).toContain(
      `mend deps remove --from ${WS}/b --to a --reason "<why it is not needed>"`,
    );
  });

  it("through a pending dependency, and at the dependency's level (revival: 1)", () => {
    const b = task("b", { deps: ["a"] });
    const c = task("c", { deps: ["b"] });
    expect(diagnose(c, ctx({ tasks: [a, b, c] }))).toMatchObject({
      level: 4,
      cause: "dependency",
    });
    expect(diagnose(c, ctx({ tasks: [a, b, c] })).summary).toContain("depends indirectly on a");

    const revivable = failedWith("a", err("network", true), { breaker: "api" });
    const d = diagnose(
      c,
      ctx({
        tasks: [revivable, b, c],
        workstream: workstream("active", { revive: true }),
        breakers: { api: "half_open" },
      }),
    );
    expect(d.level).toBe(1);
    expect(d.automatic).toBe("c starts after a: revived when breaker api closes");
  });

  it("a cancelled dependency blocks too; a non-critical failed one does not", () => {
    const cancelled = task("a", { status: "cancelled" });
    const b = task("b", { deps: ["a"] });
    expect(diagnose(b, ctx({ tasks: [cancelled, b] }))).toMatchObject({
      level: 2,
      cause: "dependency",
      next: { command: `mend retry ${WS}/a` },
    });
    const soft = failedWith("a", err("logic", false), { critical: false });
    expect(diagnose(b, ctx({ tasks: [soft, b] })).level).toBe(1);
  });
});

describe("diagnoseWorkstream", () => {
  const run = (status: WorkstreamStatus, tasks: DiagnosableTask[]): WorkstreamDiagnosis =>
    diagnoseWorkstream(workstream(status), tasks, { now: NOW });

  it("all tasks failed, all losing workers: a systemic worker problem (level 3)", () => {
    const lost = err("worker_lost", true);
    const d = run("failed", [
      failedWith("a", lost, { workerLostStreak: 3 }),
      failedWith("b", lost, { workerLostStreak: 3 }),
      task("c", { deps: ["a"] }),
    ]);
    expect(d.level).toBe(3);
    expect(d.summary).toContain("workers");
    expect(d.next.command).toBe("mend events --severity warning");
    expect(d.tasksNeedingAPerson).toEqual([
      { taskId: `${WS}/a`, key: "a", level: 3 },
      { taskId: `${WS}/b`, key: "b", level: 3 },
    ]);
  });

  it("all tasks failed with a shared outage: the workstream's errors side by side", () => {
    const d = run("failed", [
      failedWith("a", err("network", true)),
      failedWith("b", err("network", true)),
    ]);
    expect(d.level).toBe(3);
    expect(d.summary).toContain("a service or the network they share is down");
    expect(d.next.command).toBe(`mend events --workstream ${WS} --severity error`);
  });

  it("a critical task failed: fix it (its level), then retry the failed part", () => {
    const d = run("failed", [
      task("a", { status: "completed", attempts: 1 }),
      failedWith("b", err("network", true)),
      failedWith("c", err("logic", false, { name: "TypeError" })),
      task("d", { deps: ["c"] }),
    ]);
    expect(d.level).toBe(4);
    expect(d.next.command).toBe(`mend retry ${WS}/c --reason "<what was fixed>"`);
    expect(d.alternatives.map((x) => x.command)).toContain(`mend workstream retry-failed ${WS}`);
    expect(d.tasksNeedingAPerson.map((t) => [t.key, t.level])).toEqual([
      ["b", 2],
      ["c", 4],
    ]);
  });

  it("non-critical failures only: nothing blocks; retry-failed is the option", () => {
    const d = run("completed", [
      task("a", { status: "completed", attempts: 1 }),
      failedWith("b", err("network", true), { critical: false }),
    ]);
    expect(d.level).toBe(1);
    expect(d.summary).toBe("research completed without non-critical b.");
    expect(d.alternatives.map((x) => x.command)).toEqual([`mend workstream retry-failed ${WS}`]);
  });

  it("cancelled with nothing failed: retry the failed part (level 2)", () => {
    const d = run("cancelled", [
      task("a", { status: "completed", attempts: 1 }),
      task("b", { status: "cancelled" }),
    ]);
    expect(d).toMatchObject({
      level: 2,
      next: { command: `mend workstream retry-failed ${WS}` },
    });
  });

  it("a running workstream needs nothing", () => {
    const d = run("active", [task("a", { status: "running", attempts: 1 })]);
    expect(d).toMatchObject({ level: 1, next: { command: `mend status ${WS}` } });
  });
});

/** The commands a person can paste: the program as `mend` registers them (main.ts runs on import). */
function program(): Command {
  const p = new Command("mend")
    .option("--store <url>")
    .option("--json")
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
  for (const register of [
    registerSubmit,
    registerStatus,
    registerShow,
    registerEvents,
    registerTaskActions,
    registerWorkstream,
    registerDag,
    registerDeps,
    registerInterventions,
    registerState,
    registerDiagnose,
  ]) {
    register(p);
  }
  return p;
}

/** Fails unless `command` names a real subcommand and only options it has. */
function expectRealCommand(command: string): void {
  const words = command.match(/"[^"]*"|\S+/g) ?? [];
  expect(words.shift()).toBe("mend");
  let cmd = program();
  while (words[0] !== undefined) {
    const sub = cmd.commands.find((c) => c.name() === words[0]);
    if (!sub) break;
    cmd = sub;
    words.shift();
  }
  expect(cmd.name(), command).not.toBe("mend");
  for (const w of words.filter((x) => x.startsWith("--"))) {
    expect(
      cmd.options.some((o) => o.long === w),
      `${command}: ${cmd.name()} has no ${w}`,
    ).toBe(true);
  }
}

it("every suggested command is a real mend command with real flags", () => {
  const suggestions: Suggestion[] = [];
  const add = (d: Diagnosis | WorkstreamDiagnosis) => suggestions.push(d.next, ...d.alternatives);
  const tasks = [
    failedWith("a", err("timeout", true)),
    failedWith("b", err("worker_lost", true), { workerLostStreak: 3 }),
    failedWith("c", err("logic", false, { status: 422 })),
    failedWith("d", err("data_corruption", false)),
    failedWith("e", err("coordination", false)),
    failedWith("f", err("unknown", true)),
    failedWith("g", err("network", true), { breaker: "api" }),
    task("h", { deps: ["c"] }),
    task("i", { status: "cancelled" }),
    task("j", { status: "queued" }),
  ];
  const full = ctx({
    tasks,
    workstream: workstream("failed", { revive: true }),
    breakers: { api: "open" },
  });
  for (const t of tasks) add(diagnose(t, full));
  add(diagnose(tasks[0]!, ctx({ workstream: workstream("archived") })));
  add(diagnoseWorkstream(workstream("failed"), tasks, { now: NOW }));
  add(diagnoseWorkstream(workstream("failed"), tasks.slice(0, 2), { now: NOW }));
  add(diagnoseWorkstream(workstream("cancelled"), [tasks[8]!], { now: NOW }));
  for (const s of suggestions) expectRealCommand(s.command);
  expect(suggestions.length).toBeGreaterThan(30);
});

describe("mend diagnose (CLI, real SQLite store)", () => {
  /** Runs `mend --store URL ...args` in this process and returns what it printed. */
  async function mend(url: string, ...args: string[]): Promise<string> {
    let out = "";
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      out += String(chunk);
      return true;
    });
    try {
      await program().parseAsync(["node", "mend", "--store", url, ...args]);
    } finally {
      spy.mockRestore();
    }
    return out;
  }

  it("a handler's TypeError: level 4 for the task, its dependent points at it", async () => {
    const clock = new FakeClock();
    const { path, store } = tempStore(clock);
    const { workstreamId, taskIds } = await store.submit(
      spec([{ id: "fetch" }, { id: "summarize", deps: ["fetch"] }], { name: "broken" }),
    );
    const worker = new Worker({
      store,
      clock,
      handlers: {
        work: () => {
          throw new TypeError("Cannot read properties of undefined (reading 'url')");
        },
      },
    });
    await worker.start();
    await waitFor(
      async () => (await store.getTask(taskIds[0]!))!.status === "failed",
      5_000,
      "the task to fail",
    );
    await worker.stop(0);
    const url = `sqlite:${path}`;

    const text = await mend(url, "diagnose", `${workstreamId}/fetch`);
    expect(text).toContain(`task:      ${workstreamId}/fetch  (handler work)`);
    expect(text).toContain("status:    failed  attempts 1/3");
    expect(text).toContain(
      "error:     logic, TypeError: Cannot read properties of undefined (reading 'url') — not recoverable",
    );
    expect(text).toContain("level:     4 (code change), cause logic");
    expect(text).toContain(
      `next:      mend retry ${workstreamId}/fetch --reason "<what was fixed>"`,
    );
    expect(text).toContain("alternatives:");
    expect(text).toMatch(/recent events:\n.*task_created[\s\S]*task_started[\s\S]*task_failed/);

    const json = JSON.parse(await mend(url, "--json", "diagnose", `${workstreamId}/fetch`));
    expect(json).toMatchObject({ level: 4, cause: "logic", automatic: null });

    const dependent = JSON.parse(
      await mend(url, "--json", "diagnose", `${workstreamId}/summarize`),
    ) as Diagnosis;
    expect(dependent).toMatchObject({ level: 4, cause: "dependency" });
    expect(dependent.next.command).toBe(json.next.command);

    const ws = await mend(url, "diagnose", "broken");
    expect(ws).toContain(`workstream: broken  ${workstreamId}`);
    expect(ws).toContain("level:     4 (code change)");
    expect(ws).toMatch(/tasks needing a person[^\n]*\nTASK +LEVEL +ID\nfetch +4 \(code change\)/);
    expect(ws).not.toMatch(/^summarize /m);
  });
});
