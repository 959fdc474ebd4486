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
              change(i.before, i.after),
            ]),
          ),
        );
      });
    });
}

/** Widest CHANGE cell; `--json` has everything. */
const MAX_CHANGE = 60;

/** A status change as `a → b`; anything else (a backup, a restore, a plan) as compact JSON. */
function change(before: unknown, after: unknown): string {
  const status = (v: unknown) => (v as { status?: unknown } | null)?.status;
  if (typeof status(before) === "string" || typeof status(after) === "string") {
    return `${String(status(before) ?? "?")} → ${String(status(after) ?? "?")}`;
  }
  const text = JSON.stringify(after ?? before ?? null);
  return text.length > MAX_CHANGE ? `${text.slice(0, MAX_CHANGE - 1)}…` : text;
}
