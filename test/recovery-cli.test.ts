import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { validateDefinition } from "../src/model/definition.js";
import type { BreakerRecord, InterventionRecord } from "../src/model/records.js";
import type { RecoveryMetrics } from "../src/observe/metrics.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { ClaimedTask, Outcome } from "../src/store/store.js";
import { type CliResult, FIXTURES, runCli, json } from "./helpers/cli.js";
import { complete, fail, settle, start } from "./helpers/exchange.js";
import { failureOf, spec } from "./helpers/specs.js";
import { openSqlite, tmpDir } from "./helpers/tmp.js";

const ACTOR = "erin@test";
const POLICY_HANDLERS = join(FIXTURES, "policy-handlers.mjs");

/**
 * A store in a temp dir, written in this process on a clock ten minutes behind (so the CLI, on
 * the real clock, sees it all in the past), and a runner of CLI commands against it.
 */
function cliStore() {
  const path = join(tmpDir(), "mend.db");
  const clock = new FakeClock(Date.now() - 600_000);
  const mend = (...args: string[]) =>
    runCli(["--store", `sqlite:${path}`, ...args], { env: { MEND_ACTOR: ACTOR } });
  /** Runs `fn` on the store, closing it before any CLI command opens it. */
  const writing = async <T>(fn: (store: SqliteStore) => Promise<T>): Promise<T> => {
    const store = openSqlite(path, clock);
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  };
  return { clock, mend, writing };
}

function ok(r: CliResult): string {
  expect(r.code, `stderr: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** A recoverable failure of `category`: the policy retries it. */
function failWith(t: ClaimedTask, category: "network" | "logic" = "network"): Outcome {
  return { kind: "fail", taskId: t.id, token: t.leaseToken, failure: failureOf(category) };
}

describe("mend breakers / mend breaker open|close|reset", () => {
  it("opens an unknown breaker (saying it created it), lists it, closes and resets it, logging each", async () => {
    const { mend } = cliStore();
    expect(ok(await mend("breakers"))).toContain("no circuit breakers");
    expect(json(await mend("--json", "breakers"))).toEqual([]);

    const opened = ok(await mend("breaker", "open", "search-api", "--reason", "vendor outage"));
    expect(opened).toContain(
      "created breaker search-api (no task names it yet) with the default settings, forced open",
    );
    expect(opened).toContain("search-api: now open until closed by a person");

    const table = ok(await mend("breakers"));
    expect(table).toMatch(/NAME\s+STATUS\s+MODE\s+COUNTED\s+OPENED\s+OPEN UNTIL\s+SETTINGS/);
    expect(table).toMatch(
      /search-api\s+open\s+consecutive\s+-\s+\d{4}-\d\d-\d\dT\S+\s+until closed by a person\s+opens after 5 failures in a row, stays open 5m, closes after 3 of 3 probes succeed/,
    );
    const [listed] = json<BreakerRecord[]>(await mend("--json", "breakers"));
    expect(listed).toMatchObject({
      id: "search-api",
      status: "open",
      forced: true,
      openUntil: null,
    });

    // Opening it again is no creation.
    const again = json<{ breaker: BreakerRecord; created: boolean }>(
      await mend("--json", "breaker", "open", "search-api", "--reason", "still down"),
    );
    expect(again).toMatchObject({ created: false, breaker: { status: "open", forced: true } });

    expect(ok(await mend("breaker", "close", "search-api", "--reason", "vendor is back"))).toBe(
      "search-api: now closed\n",
    );
    const closedAgain = await mend("breaker", "close", "search-api", "--reason", "twice");
    expect(closedAgain.code).toBe(4);
    expect(closedAgain.stderr).toContain(
      'breaker "search-api" is already closed; use reset to clear its counters',
    );
    const reset = json<{ breaker: BreakerRecord; created: boolean }>(
      await mend("--json", "breaker", "reset", "search-api", "--reason", "clear counters"),
    );
    expect(reset).toMatchObject({ created: false, breaker: { status: "closed", failures: 0 } });

    const interventions = json<InterventionRecord[]>(await mend("--json", "interventions"));
    expect(interventions.map((i) => [i.actor, i.target, i.reason])).toEqual([
      [ACTOR, "breaker:search-api", "vendor outage"],
      [ACTOR, "breaker:search-api", "still down"],
      [ACTOR, "breaker:search-api", "vendor is back"],
      [ACTOR, "breaker:search-api", "clear counters"],
    ]);
    expect(interventions[0]!.command).toMatch(/breaker open search-api --reason vendor outage$/);
    const human = ok(await mend("interventions"));
    expect(human).toMatch(/breaker:search-api\s+vendor outage\s+\? → open/);
    expect(human).toMatch(/breaker:search-api\s+vendor is back\s+open → closed/);
  });

  it("refuses bad input (2) and unknown names for close and reset (3), writing nothing", async () => {
    const { mend } = cliStore();
    const results = await Promise.all([
      mend("breaker", "close", "nope", "--reason", "x"),
      mend("breaker", "reset", "nope", "--reason", "x"),
      mend("--json", "breaker", "reset", "nope", "--reason", "x"),
      mend("breaker", "open", "nope"),
      mend("breaker", "open", "nope", "--reason", "  "),
      mend("breaker", "open", "no spaces", "--reason", "x"),
      mend("breaker", "jam", "nope", "--reason", "x"),
    ]);
    expect(results.map((r) => r.code)).toEqual([3, 3, 3, 2, 2, 2, 2]);
    expect(results[0]!.stderr).toContain('no breaker named "nope"');
    expect(JSON.parse(results[2]!.stdout)).toMatchObject({ error: { code: "not_found" } });
    expect(results[3]!.stderr).toContain("required option '--reason <text>'");
    expect(results[4]!.stderr).toContain("--reason must not be empty");
    expect(results[5]!.stderr).toContain('breaker name "no spaces" must start with');
    expect(json(await mend("--json", "breakers"))).toEqual([]);
    expect(json(await mend("--json", "interventions"))).toEqual([]);
  });
});

describe("mend metrics", () => {
  /** A task that failed once with a network error and completed on its retry 2 s later. */
  async function failedAndRecovered() {
    const store = cliStore();
    await store.writing(async (s) => {
      await s.submit(spec([{ id: "flaky" }], { name: "metrics" }));
      const [first] = await start(s, ["flaky"]);
      await settle(s, [failWith(first!)]);
      store.clock.advance(2000);
      const [second] = await start(s, ["flaky"]);
      await settle(s, [complete(second!)]);
      await s.controlBreaker("search-api", "open", {
        actor: ACTOR,
        reason: "planned maintenance",
        command: "mend breaker open search-api --reason planned maintenance",
      });
    });
    return store;
  }

  it("prints the report: recovery times, rates, amplification, failures, interventions, breakers, health", async () => {
    const { mend } = await failedAndRecovered();
    const text = ok(await mend("metrics"));
    expect(text).toMatch(/^window: \S+ → \S+ \(.*, overall\)$/m);
    expect(text).toContain(
      "time to recover        1 recovered, mean 2s, p50 2s, p90 2s, p99 2s, max 2s",
    );
    expect(text).toContain(
      "episodes               1 ended: 1 recovered (1 automatically), 0 not; 0 in progress",
    );
    expect(text).toContain("auto-recovery rate     100.0%");
    expect(text).toContain("recovery success rate  100.0%");
    expect(text).toContain("retry amplification    2.00× (2 attempts for 1 task)");
    expect(text).toMatch(/failed attempts {8}1 \(\S+\/min\): network 1/);
    expect(text).toContain("interventions          1: breaker open 1");
    expect(text).toContain("degradation            0ms degraded, 0 changes; now level 0");
    expect(text).toMatch(/NAME\s+STATE\s+OPENED\s+OPEN TIME\n\s+search-api\s+open\s+1\s+\S+/);
    expect(text).toMatch(/system {17}\d\.\d\d/);
    expect(text).toMatch(/worst workers {10}w1 \d\.\d\d/);
  });

  it("--json is computeMetrics' result, --since narrows the window, --prometheus the exposition", async () => {
    const { mend } = await failedAndRecovered();
    const [all, recent, prom] = await Promise.all([
      mend("--json", "metrics"),
      mend("--json", "metrics", "--since", "1m"),
      mend("metrics", "--prometheus"),
    ]);
    const m = json<RecoveryMetrics>(all);
    expect(m.recovery).toMatchObject({ ended: 1, recovered: 1, autoRecovered: 1, inProgress: 0 });
    expect(m.recovery.samplesSeconds).toEqual([2]);
    expect(m.attempts).toEqual({ started: 2, tasks: 1, amplification: 2 });
    expect(m.failures.byCategory).toEqual({ network: 1 });
    expect(m.interventions.total).toBe(1);
    expect(m.breakers["search-api"]).toMatchObject({ opened: 1, state: "open" });

    // Everything happened ten minutes ago: the last minute has no episode, but the breaker is
    // still open in it.
    const last = json<RecoveryMetrics>(recent);
    expect(last.window.to - last.window.from).toBe(60_000);
    expect(last.recovery.ended).toBe(0);
    expect(last.breakers["search-api"]).toMatchObject({ opened: 0, state: "open", openMs: 60_000 });

    const text = ok(prom);
    expect(text).toContain("# TYPE mend_recovery_seconds histogram");
    expect(text).toMatch(/^mend_recovery_episodes_recovered 1$/m);
    expect(text).toMatch(/^mend_failed_attempts\{category="network"\} 1$/m);
    expect(text).toMatch(/^mend_breaker_state\{breaker="search-api",state="open"\} 1$/m);
  });

  it("refuses a bad --since, a future one, and two formats at once (exit 2)", async () => {
    const { mend } = cliStore();
    const results = await Promise.all([
      mend("metrics", "--since", "yesterday"),
      mend("metrics", "--since", "2999-01-01T00:00:00Z"),
      mend("--json", "metrics", "--prometheus"),
    ]);
    expect(results.map((r) => r.code)).toEqual([2, 2, 2]);
    expect(results[0]!.stderr).toContain("--since must be a duration before now");
    expect(results[1]!.stderr).toContain("is in the future");
    expect(JSON.parse(results[2]!.stdout)).toMatchObject({ error: { code: "invalid_argument" } });
  });

  it("an empty store: an overall window of nothing", async () => {
    const { mend } = cliStore();
    const m = json<RecoveryMetrics>(await mend("--json", "metrics"));
    expect(m.recovery.ended).toBe(0);
    expect(m.recoverySuccessRate).toBeNull();
    expect(ok(await mend("metrics"))).toContain("breakers: none");
  });
});

describe("mend describe", () => {
  it("a stored task: its layers outermost first, with the breaker and workers from the store, then problems", async () => {
    const { mend, writing } = cliStore();
    const ws = await writing(async (s) => {
      const { workstreamId } = await s.submit(
        validateDefinition({
          name: "described",
          breakers: { "search-api": { open: "30s" } },
          tasks: [
            {
              id: "search",
              handler: "work",
              breaker: "search-api",
              deadline: "1m",
              timeout: "2m",
              retry: { maxAttempts: 2, backoff: "constant", initial: "5s", jitter: "none" },
              fallbacks: [{ handler: "work" }],
              qualityThreshold: 0.5,
            },
          ],
        }),
      );
      await s.registerWorker({
        id: "w-desc",
        host: "h",
        pid: 1,
        concurrency: 4,
        handlers: ["work"],
      });
      return workstreamId;
    });

    const text = ok(await mend("describe", `${ws}/search`));
    const lines = text.split("\n");
    expect(lines[0]).toBe(`task ${ws}/search  (handler work, queued)`);
    expect(lines[1]).toMatch(/^#\s+LAYER\s+FROM\s+SETTING$/);
    expect(lines.slice(2, 7).map((l) => l.split(/\s+/).slice(0, 3))).toEqual([
      ["1", "deadline", "task"],
      ["2", "breaker", "store"],
      ["3", "retry", "task"],
      ["4", "concurrency", "workers"],
      ["5", "timeout", "task"],
    ]);
    expect(lines[2]).toContain("1m from submission, across every attempt");
    expect(lines[3]).toContain(
      "search-api: closed; opens after 5 failures in a row, stays open 30s",
    );
    expect(lines[4]).toContain("2 attempts, every 5s, no jitter");
    expect(lines[4]).toContain(
      "then fallbacks (sequential): work; revival on (from the workstream)",
    );
    expect(lines[5]).toContain("per worker: 4 on w-desc");
    expect(lines[6]).toContain("2m per attempt; a result below quality 0.5 is a quality failure");
    expect(lines[7]).toBe("problems:");
    expect(lines[8]).toMatch(
      /^ {2}error {4}timeout: the per-attempt timeout 2m is longer than the 1m overall deadline/,
    );

    const described = json<{
      subject: unknown;
      layers: { layer: string; summary: string }[];
      problems: { severity: string; layer: string }[];
    }>(await mend("--json", "describe", `${ws}/search`));
    expect(described.subject).toEqual({
      kind: "task",
      id: `${ws}/search`,
      handler: "work",
      status: "queued",
    });
    expect(described.layers.map((l) => l.layer)).toEqual([
      "deadline",
      "breaker",
      "retry",
      "concurrency",
      "timeout",
    ]);
    expect(described.layers[0]).toMatchObject({ deadlineMs: 60_000, summary: expect.any(String) });
    expect(described.problems).toEqual([
      { severity: "error", layer: "timeout", message: expect.any(String) },
    ]);

    const missing = await mend("describe", `${ws}/nope`);
    expect(missing.code).toBe(3);
  });

  it("a handler of a handlers module: its own settings, Mend's defaults for the rest, and problems", async () => {
    const { mend } = cliStore();
    const text = ok(await mend("describe", "search", "--handlers", POLICY_HANDLERS));
    expect(text).toContain(
      `handler search  (${POLICY_HANDLERS}; a workstream definition may override these)`,
    );
    expect(text).toMatch(/1\s+deadline\s+handler\s+1m from submission/);
    expect(text).toMatch(
      /2\s+breaker\s+default\s+search-api: opens after 5 failures in a row, stays open 5m, .* \(defaults; a stored breaker keeps its own: mend breakers\)/,
    );
    expect(text).toMatch(/3\s+retry\s+handler\s+4 attempts, exponential 10s ×3, no jitter/);
    expect(text).toMatch(/4\s+concurrency\s+default\s+per worker \(mend worker --concurrency\)/);
    expect(text).toMatch(/5\s+timeout\s+handler\s+2m per attempt; a result below quality 0.6/);
    expect(text).toMatch(
      /problems:\n {2}warning {2}breaker: breaker search-api stays open 5m \(default settings\)/,
    );
    expect(text).toContain("warning  retry: retries can wait 2m10s in all (3 retries, worst case)");
    expect(text).toContain(
      "error    timeout: the per-attempt timeout 2m is longer than the 1m overall deadline",
    );

    const plain = json<{ subject: unknown; problems: unknown[]; layers: { source: string }[] }>(
      await mend("--json", "describe", "cached", "--handlers", POLICY_HANDLERS),
    );
    expect(plain.subject).toEqual({ kind: "handler", name: "cached", module: POLICY_HANDLERS });
    expect(plain.problems).toEqual([]);
    expect(plain.layers.every((l) => l.source === "default")).toBe(true);
    expect(ok(await mend("describe", "cached", "--handlers", POLICY_HANDLERS))).toContain(
      "no problems found",
    );

    const [unknown, noModule] = await Promise.all([
      mend("describe", "nope", "--handlers", POLICY_HANDLERS),
      mend("describe", "search", "--handlers", join(FIXTURES, "missing.mjs")),
    ]);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toContain('unknown handler "nope" (handlers are: cached, search)');
    expect(noModule.code).toBe(3);
  });
});

describe("mend status: what needs a person", () => {
  it("lists failed tasks at level 2 or more with the next command, breakers not closed and the degradation", async () => {
    const { mend, writing } = cliStore();
    const { broken, waiting } = await writing(async (s) => {
      const { workstreamId: broken } = await s.submit(
        spec([{ id: "fetch", maxAttempts: 1 }, { id: "ok" }], { name: "broken" }),
      );
      const [fetch] = await start(s, ["fetch", "ok"]);
      await settle(s, [fail(fetch!)]);
      // A recoverable failure behind an open breaker in a reviving workstream: the engine's.
      const { workstreamId: waiting } = await s.submit(
        validateDefinition({
          name: "waiting",
          tasks: [{ id: "call", handler: "work", breaker: "api", retry: { maxAttempts: 1 } }],
        }),
      );
      const [call] = await start(s, ["call"]);
      await settle(s, [failWith(call!)]);
      await s.controlBreaker("api", "open", { actor: ACTOR, reason: "down", command: "test" });
      await s.setDegradation(
        { level: 2, name: "reduced", quality: 0.8, capabilities: {} },
        "search is slow",
        ACTOR,
      );
      return { broken, waiting };
    });

    const text = ok(await mend("status"));
    expect(text).toMatch(/needs a person \(mend diagnose TASK says why\):\nLEVEL\s+TASK\s+NEXT\n/);
    expect(text).toMatch(
      new RegExp(
        `4 \\(code change\\)\\s+${broken}/fetch\\s+mend retry ${broken}/fetch --reason "<what was fixed>"`,
      ),
    );
    expect(text).not.toContain(`${waiting}/call`);
    expect(text).toMatch(
      /circuit breakers not closed \(mend breakers\):\nNAME\s+STATUS\s+OPEN UNTIL\napi\s+open\s+until closed by a person/,
    );
    expect(text).toMatch(/degraded: level 2 \(reduced\), result quality ×0.8, since \S+/);

    const rows = json<
      { id: string; needsAPerson: { task: string; level: number; next: string }[] }[]
    >(await mend("--json", "status"));
    expect(rows.find((r) => r.id === broken)!.needsAPerson).toEqual([
      {
        task: `${broken}/fetch`,
        key: "fetch",
        level: 4,
        cause: "logic",
        next: `mend retry ${broken}/fetch --reason "<what was fixed>"`,
      },
    ]);
    expect(rows.find((r) => r.id === waiting)!.needsAPerson).toEqual([]);

    const one = json<Record<string, unknown>>(await mend("--json", "status", broken));
    expect(one).toMatchObject({
      id: broken,
      name: "broken",
      needsAPerson: [{ task: `${broken}/fetch`, level: 4 }],
      openBreakers: [{ name: "api", status: "open", forced: true, openUntil: null }],
      degradation: { level: 2, name: "reduced", status: "degraded", quality: 0.8 },
    });
    const human = ok(await mend("status", broken));
    expect(human).toMatch(/^broken {2}\S+ {2}\w+\nTASK\s+HANDLER/);
    expect(human).toContain("needs a person");

    // diagnose knows the breaker is open: the engine revives the task, nobody needs to act.
    const d = json<{ level: number; automatic: string }>(
      await mend("--json", "diagnose", `${waiting}/call`),
    );
    expect(d).toMatchObject({ level: 1, automatic: "revived when breaker api closes" });
  });

  it("says nothing more when nothing needs a person", async () => {
    const { mend, writing } = cliStore();
    await writing((s) => s.submit(spec([{ id: "a" }], { name: "calm" })));
    const text = ok(await mend("status"));
    expect(text).not.toContain("needs a person");
    expect(text).not.toContain("circuit breakers");
    expect(text).not.toContain("degraded");
  });
});
