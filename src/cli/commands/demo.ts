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
  const recovered = result.report.failedTasks.find((t) => t.recovered);
  return [
    "Look around:",
    `  mend status ${ws} ${store}`,
    `  mend events --workstream ${ws} --limit 0 ${store}`,
    ...(recovered ? [`  mend show ${ws}/${recovered.task} ${store}`] : []),
    `  (worker output: ${result.workerLog}; side-effect ledger: ${result.ledger})`,
  ].join("\n");
}

function summary(result: DemoResult): string {
  const lines: string[] = [];
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
      demoEnv({ seed: result.seed, rate: result.faultRate, ledger: result.ledger }),
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
      "run the multi-agent research demo: flaky tools, a SIGKILLed worker, and a recovery report",
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
    .addHelpText(
      "after",
      `
A planner fans out to N researcher agents that call a simulated search API which fails on purpose
(429 with Retry-After, 503, ECONNRESET, a hang past the task's timeout); a writer and a reviewer
follow. Faults are a function of the seed, the task and the attempt. Worker processes run the
tasks; while they work, one is SIGKILLed and the others take over once its leases expire.

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
        storeUrl,
        display: json ? null : new LiveDisplay(),
      });
      if (json) printJson(result);
      else print(`\n${formatReport(result.report)}\n\n${summary(result)}\n\n${nextSteps(result)}`);
      process.exitCode = result.interrupted ? 130 : result.report.ok ? 0 : 1;
    });
}
