#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { isMendError } from "../errors.js";
import { registerBreakers } from "./commands/breakers.js";
import { registerDag } from "./commands/dag.js";
import { registerDemo } from "./commands/demo.js";
import { registerDeps } from "./commands/deps.js";
import { registerDescribe } from "./commands/describe.js";
import { registerDiagnose } from "./commands/diagnose.js";
import { registerEvents } from "./commands/events.js";
import { registerInterventions } from "./commands/interventions.js";
import { registerMetrics } from "./commands/metrics.js";
import { registerResources } from "./commands/resources.js";
import { registerRun } from "./commands/run.js";
import { registerShow } from "./commands/show.js";
import { registerState } from "./commands/state.js";
import { registerStatus } from "./commands/status.js";
import { registerSubmit } from "./commands/submit.js";
import { registerTaskActions } from "./commands/task-actions.js";
import { registerWorker } from "./commands/worker.js";
import { registerWorkers } from "./commands/workers.js";
import { registerWorkstream } from "./commands/workstream.js";
import { printJson } from "./output.js";

const EXIT_HELP = `
Exit codes:
  0  ok
  1  the operation ran and failed (e.g. the workstream failed)
  2  invalid input or usage
  3  not found
  4  refused in the current state

Store: --store, then MEND_STORE, then "store" in ./mend.config.json, then sqlite:.mend/mend.db`;

/** Builds the `mend` program. */
export function buildProgram(): Command {
  const program = new Command("mend")
    .description("Durable, self-healing task orchestrator for multi-agent systems")
    .option("--store <url>", "store URL: sqlite:PATH (default sqlite:.mend/mend.db)")
    .option("--json", "machine-readable output")
    .showHelpAfterError()
    .addHelpText("after", EXIT_HELP)
    .exitOverride();
  program.configureHelp({ sortSubcommands: false });
  for (const register of [
    registerDemo,
    registerSubmit,
    registerRun,
    registerWorker,
    registerWorkers,
    registerStatus,
    registerShow,
    registerDiagnose,
    registerDescribe,
    registerEvents,
    registerTaskActions,
    registerWorkstream,
    registerDag,
    registerDeps,
    registerBreakers,
    registerResources,
    registerInterventions,
    registerMetrics,
    registerState,
  ]) {
    register(program);
  }
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; everything else commander rejects is usage.
      return err.code === "commander.helpDisplayed" ||
        err.code === "commander.version" ||
        err.code === "commander.help"
        ? 0
        : 2;
    }
    const json = argv.includes("--json");
    if (isMendError(err)) {
      if (json)
        printJson({ error: { code: err.code, message: err.message, context: err.context } });
      else process.stderr.write(`error: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(
      `error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}

// A reader that stops early (`mend events | head`) closes the pipe: end quietly, as Unix tools do,
// instead of dying on the write with a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code !== "EPIPE") throw err;
  process.exit(0);
});

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`fatal: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
