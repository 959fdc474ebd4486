import type { Command } from "commander";
import { viewWorkstream } from "../../engine/inspect.js";
import { runWorkstream } from "../../engine/run.js";
import { loadDefinitionFile, loadHandlersModule } from "../../model/load.js";
import { createLogger } from "../../observe/logger.js";
import { globals, withStore } from "../context.js";
import { printJson } from "../output.js";
import { ProgressLine } from "../progress.js";
import { parseIntOption } from "./options.js";
import { printWorkstream } from "./status.js";

/** `mend run FILE --handlers MODULE`: submit and run to the end in this process. */
export function registerRun(program: Command): void {
  program
    .command("run")
    .description("submit a workstream and run it to the end in this process, with live progress")
    .argument("<file>", "workstream definition, .yaml/.yml or .json")
    .requiredOption(
      "--handlers <module>",
      "module whose default export maps handler names to functions",
    )
    .option("--concurrency <n>", "tasks run at once", parseIntOption, 10)
    .addHelpText("after", "\nExit code 1 if the workstream failed.")
    .action(async (file: string, opts: { handlers: string; concurrency: number }, cmd: Command) => {
      const json = globals(cmd).json;
      const definition = await loadDefinitionFile(file);
      const handlers = await loadHandlersModule(opts.handlers);
      const progress = json ? null : new ProgressLine();
      const result = await withStore(cmd, (store) =>
        runWorkstream({
          store,
          definition,
          handlers,
          concurrency: opts.concurrency,
          logger: createLogger(),
          onProgress: (ws, tasks) => progress?.update(ws.name, tasks),
        }),
      );
      progress?.done();
      const view = viewWorkstream(result.workstream, result.tasks);
      if (json) printJson(view);
      else printWorkstream(view);
      if (view.status !== "completed") process.exitCode = 1;
    });
}
