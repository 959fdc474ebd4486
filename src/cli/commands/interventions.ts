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

/**
 * A status change as `a → b` (with the other fields that changed when the status did not, e.g.
 * a resource's `maxHolders 1 → 2`); anything else (a backup, a restore, a plan) as compact JSON.
 */
function change(before: unknown, after: unknown): string {
  const status = (v: unknown) => (v as { status?: unknown } | null)?.status;
  if (typeof status(before) === "string" || typeof status(after) === "string") {
    const moved = `${String(status(before) ?? "?")} → ${String(status(after) ?? "?")}`;
    if (status(before) !== status(after)) return moved;
    const fields = changedFields(
      before as Record<string, unknown>,
      after as Record<string, unknown>,
    );
    return fields.length === 0 ? moved : `${String(status(after))}; ${fields.join(", ")}`;
  }
  const text = JSON.stringify(after ?? before ?? null);
  return text.length > MAX_CHANGE ? `${text.slice(0, MAX_CHANGE - 1)}…` : text;
}

/** The scalar fields other than `status` whose values differ, as `name a → b`. */
function changedFields(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const scalar = (v: unknown) => v === null || ["string", "number", "boolean"].includes(typeof v);
  return Object.keys(after)
    .filter((k) => k !== "status" && scalar(after[k]) && scalar(before[k]))
    .filter((k) => before[k] !== after[k])
    .map((k) => `${k} ${String(before[k])} → ${String(after[k])}`);
}
