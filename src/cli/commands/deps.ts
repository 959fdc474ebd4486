import type { Command } from "commander";
import type { TaskRecord } from "../../model/records.js";
import type { Store } from "../../store/store.js";
import { confirm, globals, personActing, resolveTask, withStore } from "../context.js";
import { print, printJson } from "../output.js";

interface RemoveOptions {
  from: string;
  to: string;
  reason?: string;
  dryRun?: boolean;
  yes?: boolean;
}

/** `mend deps remove --from A --to B`: edits a workstream's dependencies, as an intervention. */
export function registerDeps(program: Command): void {
  const group = program.command("deps").description("edit a workstream's dependencies");
  group
    .command("remove")
    .description('remove "A depends on B", e.g. to break a cycle found at run time')
    .requiredOption("--from <task>", "the task that depends (A): WORKSTREAM/TASK or a task id")
    .requiredOption(
      "--to <task>",
      "the dependency to remove (B): WORKSTREAM/TASK, a task id, or a task of A's workstream",
    )
    .option("--reason <text>", "why, for the interventions log")
    .option("--dry-run", "show what would change, and change nothing")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (opts: RemoveOptions, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const task = await resolveTask(store, opts.from);
        const dep = await dependencyOf(store, task, opts.to);
        const who = personActing(opts.reason);
        if (!opts.dryRun) {
          await confirm(`remove "${task.id} depends on ${dep.key}"?`, opts.yes);
        }
        const r = await store.removeDependency(task.id, dep.id, who, { dryRun: opts.dryRun });
        if (globals(cmd).json) return printJson({ ...r, dryRun: Boolean(opts.dryRun) });
        const now = r.status.to === "queued" ? "ready: queued" : "still waiting: pending";
        print(
          opts.dryRun
            ? `dry run: ${r.taskId} would no longer depend on ${r.removed}; it would be ${r.status.to} (nothing was changed)`
            : `${r.taskId} no longer depends on ${r.removed}; ${now}`,
        );
        print(`depends on: ${r.deps.to.length ? r.deps.to.join(", ") : "nothing"}`);
      });
    });
}

/** B as typed: a task of A's workstream by its key, else any task reference. */
async function dependencyOf(store: Store, task: TaskRecord, ref: string): Promise<TaskRecord> {
  if (!ref.includes("/")) {
    const sibling = await store.getTask(`${task.workstreamId}/${ref}`);
    if (sibling) return sibling;
  }
  return resolveTask(store, ref);
}
