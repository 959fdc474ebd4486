import type { Command } from "commander";
import { globals, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";

/** `mend interventions`. */
export function registerInterventions(program: Command): void {
  program
    .command("interventions")
    .description("list every manual action: who, when, which command, on what, and why")
    .action(async (_opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const all = await store.listInterventions();
        if (globals(cmd).json) return printJson(all);
        if (all.length === 0) return print("no interventions recorded");
        print(
          table(
            ["TIME", "ACTOR", "COMMAND", "TARGET", "REASON", "CHANGE"],
            all.map((i) => [
              time(i.at),
              i.actor,
              i.command,
              i.target,
              i.reason,
              `${(i.before as { status?: string })?.status ?? "?"} → ${(i.after as { status?: string })?.status ?? "?"}`,
            ]),
          ),
        );
      });
    });
}
