import type { Command } from "commander";
import { submitWorkstream } from "../../engine/submit.js";
import { loadDefinitionFile, loadHandlersModule } from "../../model/load.js";
import { globals, withStore } from "../context.js";
import { print, printJson } from "../output.js";

/** `mend submit FILE [--handlers MODULE]`. */
export function registerSubmit(program: Command): void {
  program
    .command("submit")
    .description("validate a workstream definition (YAML or JSON) and store it; prints its id")
    .argument("<file>", "workstream definition, .yaml/.yml or .json")
    .option("--handlers <module>", "also check that every task's handler exists in this module")
    .addHelpText(
      "after",
      "\nA definition with any problem is refused whole (exit 2) and nothing is written.\nWorkers started with `mend worker` run the tasks.",
    )
    .action(async (file: string, opts: { handlers?: string }, cmd: Command) => {
      const definition = await loadDefinitionFile(file);
      const handlers = opts.handlers ? await loadHandlersModule(opts.handlers) : undefined;
      const { workstreamId, taskIds } = await withStore(cmd, (store) =>
        submitWorkstream(store, definition, { handlers, actor: "cli" }),
      );
      if (globals(cmd).json) printJson({ workstream: workstreamId, tasks: taskIds.length });
      else print(workstreamId);
    });
}
