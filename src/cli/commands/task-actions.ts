import type { Command } from "commander";
import { MendError } from "../../errors.js";
import { parseDuration } from "../../model/duration.js";
import type { TaskRecord } from "../../model/records.js";
import { confirm, globals, personActing, resolveTask, withStore } from "../context.js";
import { print, printJson } from "../output.js";
import { parseIntOption } from "./options.js";

function report(cmd: Command, verb: string, task: TaskRecord): void {
  if (globals(cmd).json) printJson({ task: task.id, status: task.status, attempts: task.attempts });
  else print(`${verb} ${task.id}: now ${task.status}`);
}

/** `mend retry|skip|cancel TASK`: operator actions on one task, each logged as an intervention. */
export function registerTaskActions(program: Command): void {
  program
    .command("retry")
    .description("queue a failed, cancelled or skipped task again, with a fresh attempt budget")
    .argument("<task>", "WORKSTREAM/TASK, or a unique task id")
    .option("--timeout <duration>", "new timeout for the task, e.g. 20m")
    .option(
      "--max-attempts <n>",
      "attempts allowed from now on (default: the task's policy)",
      parseIntOption,
    )
    .option("--reason <text>", "why, for the interventions log")
    .action(
      async (
        ref: string,
        opts: { timeout?: string; maxAttempts?: number; reason?: string },
        cmd: Command,
      ) => {
        const timeoutMs = opts.timeout === undefined ? undefined : parseDuration(opts.timeout);
        await withStore(cmd, async (store) => {
          const task = await resolveTask(store, ref);
          const after = await store.retryTask(
            task.id,
            { timeoutMs, maxAttempts: opts.maxAttempts },
            personActing(opts.reason),
          );
          report(cmd, "retried", after);
        });
      },
    );

  program
    .command("skip")
    .description("mark a task skipped: its dependents proceed without its result (with a warning)")
    .argument("<task>", "WORKSTREAM/TASK, or a unique task id")
    .requiredOption("--reason <text>", "why it is safe to skip, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (ref: string, opts: { reason: string; yes?: boolean }, cmd: Command) => {
      if (!opts.reason.trim())
        throw new MendError("invalid_argument", "--reason must not be empty");
      await withStore(cmd, async (store) => {
        const task = await resolveTask(store, ref);
        await confirm(
          `skip ${task.id} (now ${task.status})? Its dependents will run without its result.`,
          opts.yes,
        );
        const after = await store.skipTask(task.id, personActing(opts.reason));
        report(cmd, "skipped", after);
      });
    });

  program
    .command("cancel")
    .description(
      "cancel a pending, queued or running task (a running one's worker is told through its lease)",
    )
    .argument("<task>", "WORKSTREAM/TASK, or a unique task id")
    .option("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (ref: string, opts: { reason?: string; yes?: boolean }, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const task = await resolveTask(store, ref);
        await confirm(`cancel ${task.id} (now ${task.status})?`, opts.yes);
        const after = await store.cancelTask(task.id, personActing(opts.reason));
        report(cmd, "cancelled", after);
      });
    });
}
