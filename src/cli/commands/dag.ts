import type { Command } from "commander";
import { MendError } from "../../errors.js";
import { DAG_FORMATS, type DagFormat, renderDag } from "../../state/dag-render.js";
import { globals, resolveWorkstream, withStore } from "../context.js";
import { print, printJson } from "../output.js";

/** `mend dag WORKSTREAM [--format ascii|mermaid|dot]`. */
export function registerDag(program: Command): void {
  program
    .command("dag")
    .description("show a workstream's DAG with each task's state")
    .argument("<workstream>", "workstream id, id prefix or name (newest of that name)")
    .option("--format <format>", `${DAG_FORMATS.join(" | ")}`, "ascii")
    .action(async (ref: string, opts: { format: string }, cmd: Command) => {
      if (!(DAG_FORMATS as readonly string[]).includes(opts.format)) {
        throw new MendError(
          "invalid_argument",
          `unknown format "${opts.format}": use one of ${DAG_FORMATS.join(", ")}`,
          { format: opts.format },
        );
      }
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        const dag = {
          id: ws.id,
          name: ws.name,
          status: ws.status,
          tasks: (await store.listTasks(ws.id)).map((t) => ({
            key: t.key,
            status: t.status,
            deps: t.deps,
          })),
        };
        if (globals(cmd).json) return printJson(dag);
        print(renderDag(dag, opts.format as DagFormat));
      });
    });
}
