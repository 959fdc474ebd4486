import { type Command, InvalidArgumentError } from "commander";
import {
  DEFAULT_FAULT_RATE,
  DEFAULT_SEED,
  demoEnv,
  parseFaultRate,
  parseSeed,
} from "../../demo/config.js";
import { LiveDisplay } from "../../demo/display.js";
import { formatReport } from "../../demo/report.js";
import { MAX_AGENTS } from "../../demo/research.js";
import {
  type DemoResult,
  freshDemoStoreUrl,
  MAX_WORKERS,
  runDemo,
  validateDemoOptions,
} from "../../demo/run.js";
import { DEMO_HANDLERS_PATH } from "../../demo/workers.js";
import { isMendError } from "../../errors.js";
import { formatDuration } from "../../model/duration.js";
import { globals } from "../context.js";
import { print, printJson } from "../output.js";
import { parseIntOption } from "./options.js";

interface DemoCliOptions {
  seed: number;
  agents: number;
  faultRate: number;
  workers: number;
  outage: boolean;
}

/** A config parser as a commander option parser, so bad values are usage errors. */
function optionParser<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      if (isMendError(err)) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

/** Where to look next, as commands a person can paste. */
function nextSteps(result: DemoResult): string {
  const ws = result.report.workstream.id;
  const store = `--store ${result.store}`;
  // A revived task's history shows the most: its outage failure, the revival and the recovery.
  const shown = result.revived[0]?.task ?? result.report.failedTasks.find((t) => t.recovered)?.task;
  return [
    "Look around:",
    `  mend status ${ws} ${store}`,
    `  mend events --workstream ${ws} --limit 0 ${store}`,
    `  mend breakers ${store}`,
    `  mend metrics ${store}`,
    ...(shown
      ? [`  mend show ${ws}/${shown} ${store}`, `  mend diagnose ${ws}/${shown} ${store}`]
      : []),
    `  (worker output: ${result.workerLog}; side-effect ledger: ${result.ledger})`,
  ].join("\n");
}

/** The outage, the breaker and the revivals, in a few sentences. */
function strategies(result: DemoResult): string[] {
  const lines: string[] = [];
  const { outage, breaker } = result;
  if (outage) {
    const lasted =
      outage.endedAtMs === null
        ? ""
        : ` for ${formatDuration(outage.endedAtMs - outage.startedAtMs)}`;
    lines.push(`The search API was down${lasted} from ${formatDuration(outage.startedAtMs)}.`);
  }
  if (breaker) {
    lines.push(
      `Breaker ${breaker.name} opened ${breaker.opened} time${breaker.opened === 1 ? "" : "s"} (open ${formatDuration(breaker.openMs)} in all), probed ${breaker.halfOpened} time${breaker.halfOpened === 1 ? "" : "s"}, closed ${breaker.closed} time${breaker.closed === 1 ? "" : "s"}; it ends ${breaker.status.replace("_", "-")}.`,
    );
  }
  if (result.revived.length > 0) {
    const done = result.revived.filter((r) => r.completed).length;
    const tasks = [...new Set(result.revived.map((r) => r.task))].join(", ");
    lines.push(
      `${result.revived.length} revival${result.revived.length === 1 ? "" : "s"} (${tasks}): failed for good during the outage, queued again by the monitor once the cause cleared; ${done} then completed.`,
    );
  } else if (outage && result.report.workstream.status === "completed") {
    lines.push("No task failed for good during the outage, so none needed reviving.");
  }
  return lines;
}

/** The run's recovery metrics, as `mend metrics` shows them. */
function metricsLines(result: DemoResult): string[] {
  const m = result.metrics;
  const pct = (r: number | null) => (r === null ? "n/a" : `${(r * 100).toFixed(1)}%`);
  const s = m.recovery.seconds;
  const secs = (x: number) => formatDuration(Math.round(x * 1000));
  return [
    "Recovery metrics (mend metrics):",
    `  time to recover           ${s ? `mean ${secs(s.mean)}  p50 ${secs(s.p50)}  p90 ${secs(s.p90)}  p99 ${secs(s.p99)}  (${s.count} recoveries)` : "n/a"}`,
    `  auto-recovery rate        ${pct(m.autoRecoveryRate)}`,
    `  retry amplification       ${m.attempts.amplification === null ? "n/a" : `${m.attempts.amplification.toFixed(2)} attempts per task`}`,
    `  revivals                  ${m.revivals.count} (${m.revivals.completed} completed)`,
    `  manual interventions      ${m.interventions.total}`,
    `  patterns detected         ${m.patterns.detected} (false positives ${m.patterns.falsePositives}, rate ${pct(m.patterns.falsePositiveRate)})`,
    `  time degraded             ${formatDuration(m.degradation.degradedMs)}`,
    `  health score (system)     ${m.health.system}`,
  ];
}

function summary(result: DemoResult): string {
  const lines: string[] = [...strategies(result)];
  if (result.killed) {
    const k = result.killed;
    const requeued =
      k.requeuedAfterMs === null
        ? "its tasks were never requeued"
        : `the monitor requeued its tasks ${formatDuration(k.requeuedAfterMs)} later (lease expiry)`;
    const recovered =
      k.recoveredAfterMs === null
        ? "not all of them completed"
        : `all of them completed on other workers ${formatDuration(k.recoveredAfterMs)} after the kill`;
    lines.push(
      `Worker ${k.workerId} (pid ${k.pid}) was SIGKILLed at ${formatDuration(k.atMs)} holding ${k.tasks.join(", ")};\n${requeued}, and ${recovered}.`,
    );
  } else {
    lines.push("No worker was killed: no worker held two research tasks at once this time.");
  }
  lines.push(`Demo took ${formatDuration(result.elapsedMs)}.`);
  if (result.interrupted) {
    const env = Object.entries(
      demoEnv({ seed: result.seed, rate: result.faultRate, ledger: result.ledger, outage: null }),
    )
      .map(([name, value]) => `${name}=${value}`)
      .join(" ");
    lines.push(
      `Interrupted: the unfinished tasks stay in the store. To finish them, run a worker:\n  ${env} mend worker --handlers ${DEMO_HANDLERS_PATH} --store ${result.store}`,
    );
  } else if (result.timedOut) {
    lines.push("The workstream did not finish in time; see the worker output for why.");
  }
  return lines.join("\n");
}

/** `mend demo`: the multi-agent research demo with injected faults and a killed worker. */
export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "run the multi-agent research demo: flaky tools, a SIGKILLed worker, an outage behind a circuit breaker, and a recovery report",
    )
    .option("--seed <n>", "seed of the fault injector", optionParser(parseSeed), DEFAULT_SEED)
    .option("--agents <n>", `researcher agents (1-${MAX_AGENTS})`, parseIntOption, 8)
    .option(
      "--fault-rate <p>",
      "probability that an attempt hits a fault (0-1)",
      optionParser(parseFaultRate),
      DEFAULT_FAULT_RATE,
    )
    .option("--workers <n>", `worker processes (1-${MAX_WORKERS})`, parseIntOption, 2)
    .option("--no-outage", "do not stage the outage of the search API")
    .addHelpText(
      "after",
      `
A planner fans out to N researcher agents that call a simulated search API which fails on purpose
(429 with Retry-After, 503, ECONNRESET, a hang past the task's timeout); a writer and a reviewer
follow. Faults are a function of the seed, the task and the attempt. Worker processes run the
tasks; while they work, one is SIGKILLed and the others take over once its leases expire. Then
the search API goes down for a few seconds: the circuit breaker guarding it opens for every
worker, probes it, reopens, and closes once it is back; researchers that failed for good
meanwhile are revived by the monitor.

Each run uses a fresh store, .mend/demo-<time>.db, unless --store is given. At the end the
recovery report is computed from the store's transition log. Exit code 0 if the workstream
completed with no task lost and none completed twice, else 1.`,
    )
    .action(async (opts: DemoCliOptions, cmd: Command) => {
      validateDemoOptions(opts);
      const { json, store } = globals(cmd);
      const storeUrl = store ?? freshDemoStoreUrl();
      if (!json) {
        process.stderr.write(
          `mend demo: seed ${opts.seed}, ${opts.agents} researcher agents, fault rate ${opts.faultRate}, ${opts.workers} workers\nstore: ${storeUrl}\n`,
        );
      }
      const result = await runDemo({
        seed: opts.seed,
        agents: opts.agents,
        faultRate: opts.faultRate,
        workers: opts.workers,
        outage: opts.outage,
        storeUrl,
        display: json ? null : new LiveDisplay(),
      });
      if (json) printJson(result);
      else {
        print(
          `\n${formatReport(result.report)}\n\n${metricsLines(result).join("\n")}\n\n${summary(result)}\n\n${nextSteps(result)}`,
        );
      }
      process.exitCode = result.interrupted ? 130 : result.report.ok ? 0 : 1;
    });
}
