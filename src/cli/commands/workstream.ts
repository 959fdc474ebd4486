import { type Command, InvalidArgumentError } from "commander";
import { MendError } from "../../errors.js";
import { formatDuration } from "../../model/duration.js";
import type { WorkstreamRecord } from "../../model/records.js";
import type { TaskStatus } from "../../model/states.js";
import {
  COMPENSATION_ORDERS,
  type CompensationOrder,
  type CompensationPlan,
} from "../../recovery/compensate.js";
import type { Checkpoint, CheckpointRef } from "../../state/checkpoints.js";
import type { RecoveryPlan } from "../../state/recovery-plan.js";
import type { Store } from "../../store/store.js";
import {
  confirm,
  globals,
  resolveTask,
  resolveWorkstream,
  withStore,
  personActing,
} from "../context.js";
import { print, printJson, table, time } from "../output.js";
import { parseCountOption } from "./options.js";

interface ChangeOptions {
  reason?: string;
  dryRun?: boolean;
  yes?: boolean;
}

/**
 * `mend workstream checkpoints|rollback|retry|retry-failed|resume|cancel|compensate|archive|merge`:
 * a whole workstream's checkpoints and recovery. Every change is logged as an intervention.
 */
export function registerWorkstream(program: Command): void {
  const group = program
    .command("workstream")
    .description(
      "a workstream's checkpoints, rollback, re-runs, cancel, compensation, archive and merge",
    );

  group
    .command("checkpoints")
    .description("list a workstream's checkpoints (one after every task transition), newest first")
    .argument("<workstream>", "workstream id, id prefix or name (newest of that name)")
    .option("--limit <n>", "only the newest N (0 for all)", parseCountOption, 20)
    .action(async (ref: string, opts: { limit: number }, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        const found = await store.listCheckpoints(ws.id, opts.limit || undefined);
        if (globals(cmd).json) return printJson(found.map(seedShape));
        printCheckpoints(ws, found);
      });
    });

  withChangeOptions(
    group
      .command("rollback")
      .description(
        "roll back to a checkpoint: stop running tasks, restore task states (completed tasks stay)",
      )
      .argument("<workstream>", "workstream id, id prefix or name")
      .requiredOption(
        "--to <checkpoint>",
        "a seq from `mend workstream checkpoints`, or latest (the newest with nothing running)",
      )
      .option(
        "--compensate",
        "undo the tasks completed since the checkpoint that declare a compensation, and run them again once undone (default: keep them)",
      )
      .requiredOption("--reason <text>", "why, for the interventions log"),
  ).action(
    async (
      ref: string,
      opts: ChangeOptions & { to: string; compensate?: boolean },
      cmd: Command,
    ) => {
      const to = parseCheckpointRef(opts.to);
      requireReason(opts.reason);
      const compensate = opts.compensate === true;
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        await recover(cmd, opts, ws, (dryRun) =>
          store.rollbackWorkstream(ws.id, to, personActing(opts.reason), { dryRun, compensate }),
        );
      });
    },
  );

  for (const [name, scope, description] of [
    ["retry", "all", "run the whole workstream again: every task, completed ones too"],
    [
      "retry-failed",
      "failed",
      "run the failed and cancelled tasks again, and what depends on them",
    ],
  ] as const) {
    withChangeOptions(
      group
        .command(name)
        .description(description)
        .argument("<workstream>", "workstream id, id prefix or name")
        .option("--reason <text>", "why, for the interventions log"),
    ).action(async (ref: string, opts: ChangeOptions, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        await recover(cmd, opts, ws, (dryRun) =>
          store.retryWorkstream(ws.id, scope, personActing(opts.reason), { dryRun }),
        );
      });
    });
  }

  withChangeOptions(
    group
      .command("resume")
      .description("run a task and everything downstream of it again; upstream stays")
      .argument("<workstream>", "workstream id, id prefix or name")
      .requiredOption(
        "--from-task <task>",
        "the task to start from: its id as written in the definition, or WORKSTREAM/TASK",
      )
      .option("--reason <text>", "why, for the interventions log"),
  ).action(async (ref: string, opts: ChangeOptions & { fromTask: string }, cmd: Command) => {
    await withStore(cmd, async (store) => {
      const ws = await resolveWorkstream(store, ref);
      const from = await taskKeyIn(store, ws, opts.fromTask);
      await recover(cmd, opts, ws, (dryRun) =>
        store.resumeWorkstream(ws.id, from, personActing(opts.reason), { dryRun }),
      );
    });
  });

  group
    .command("cancel")
    .description(
      "cancel an active or failed workstream: its open tasks are cancelled (running ones stopped), and its completed tasks compensated if its policy says so (the default)",
    )
    .argument("<workstream>", "workstream id, id prefix or name")
    .requiredOption("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (ref: string, opts: ChangeOptions, cmd: Command) => {
      requireReason(opts.reason);
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        const undo = ws.compensation.on.includes("cancelled")
          ? ` Its completed tasks are then compensated (${ws.compensation.order} order).`
          : "";
        await confirm(
          `cancel ${ws.name} ${ws.id} (now ${ws.status})? Its pending, queued and running tasks are cancelled.${undo}`,
          opts.yes,
        );
        const done = await store.cancelWorkstream(ws.id, personActing(opts.reason));
        if (globals(cmd).json) {
          return printJson({
            workstream: done.workstream.id,
            status: done.workstream.status,
            cancelled: done.cancelled,
            compensation: done.compensation,
          });
        }
        print(
          `cancelled ${done.workstream.id}: ${plural(done.cancelled.length, "task")} cancelled${done.cancelled.length ? ` (${done.cancelled.join(", ")})` : ""}`,
        );
        if (done.compensation) printCompensation(done.compensation, "scheduled");
      });
    });

  withChangeOptions(
    group
      .command("compensate")
      .description(
        "undo a finished workstream's completed tasks: a new workstream runs each one's compensation",
      )
      .argument("<workstream>", "workstream id, id prefix or name")
      .option(
        "--order <order>",
        "reverse (last completed first, one at a time), parallel, or dependency (a task's dependents first); default: the workstream's policy",
        parseOrder,
      )
      .requiredOption("--reason <text>", "why, for the interventions log"),
  ).action(
    async (ref: string, opts: ChangeOptions & { order?: CompensationOrder }, cmd: Command) => {
      requireReason(opts.reason);
      await withStore(cmd, async (store) => {
        const ws = await resolveWorkstream(store, ref);
        const run = (dryRun: boolean) =>
          store.compensateWorkstream(ws.id, personActing(opts.reason), {
            order: opts.order,
            dryRun,
          });
        if (opts.dryRun) return reportCompensation(cmd, ws, await run(true), true);
        if (!opts.yes) {
          const preview = await run(true);
          if (preview.steps.length === 0) return reportCompensation(cmd, ws, preview, false);
          await confirm(
            `compensate ${ws.name} ${ws.id}? ${plural(preview.steps.length, "compensating task")} run in ${preview.order} order (see --dry-run)`,
            opts.yes,
          );
        }
        reportCompensation(cmd, ws, await run(false), false);
      });
    },
  );

  for (const [name, to, description] of [
    ["archive", "archived", "close a completed, failed or cancelled workstream for good"],
    ["merge", "merged", "record that a completed workstream's results were merged (final)"],
  ] as const) {
    group
      .command(name)
      .description(description)
      .argument("<workstream>", "workstream id, id prefix or name")
      .requiredOption("--reason <text>", "why, for the interventions log")
      .option("-y, --yes", "do not ask for confirmation")
      .action(async (ref: string, opts: ChangeOptions, cmd: Command) => {
        requireReason(opts.reason);
        await withStore(cmd, async (store) => {
          const ws = await resolveWorkstream(store, ref);
          await confirm(
            `mark ${ws.name} ${ws.id} (now ${ws.status}) ${to}? It is final: no rollback, retry or resume afterwards.`,
            opts.yes,
          );
          const after =
            to === "archived"
              ? await store.archiveWorkstream(ws.id, personActing(opts.reason))
              : await store.mergeWorkstream(ws.id, personActing(opts.reason));
          if (globals(cmd).json) printJson({ workstream: after.id, status: after.status });
          else print(`${to} ${after.id}: now ${after.status}`);
        });
      });
  }
}

/** The options every workstream change takes. */
function withChangeOptions(cmd: Command): Command {
  return cmd
    .option("--dry-run", "show exactly what would change, and change nothing")
    .option("-y, --yes", "do not ask for confirmation");
}

function requireReason(reason: string | undefined): void {
  if (!reason?.trim()) throw new MendError("invalid_argument", "--reason must not be empty");
}

function parseOrder(value: string): CompensationOrder {
  if (!(COMPENSATION_ORDERS as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(
      `expected one of ${COMPENSATION_ORDERS.join(", ")}, got "${value}"`,
    );
  }
  return value as CompensationOrder;
}

/** `latest`, or a checkpoint's seq. */
function parseCheckpointRef(value: string): CheckpointRef {
  if (value === "latest") return "latest";
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) {
    throw new MendError(
      "invalid_argument",
      `--to must be latest or a checkpoint's seq (see mend workstream checkpoints), got "${value}"`,
      { to: value },
    );
  }
  return n;
}

/** The key of a task given as written in the definition, or as `WORKSTREAM/TASK` in `ws`. */
async function taskKeyIn(store: Store, ws: WorkstreamRecord, ref: string): Promise<string> {
  if (!ref.includes("/")) return ref;
  const task = await resolveTask(store, ref);
  if (task.workstreamId !== ws.id) {
    throw new MendError(
      "invalid_argument",
      `task ${task.id} is not in workstream ${ws.id}; give a task of that workstream`,
      { task: task.id, workstream: ws.id },
    );
  }
  return task.key;
}

/**
 * Runs a recovery: `--dry-run` shows the plan; otherwise the plan is confirmed (unless `--yes`)
 * and applied. A plan that changes nothing needs no confirmation.
 */
async function recover(
  cmd: Command,
  opts: ChangeOptions,
  ws: WorkstreamRecord,
  run: (dryRun: boolean) => Promise<RecoveryPlan>,
): Promise<void> {
  if (opts.dryRun) return report(cmd, ws, await run(true), true);
  if (!opts.yes) {
    const preview = await run(true);
    if (preview.changes.length === 0) return report(cmd, ws, preview, false);
    await confirm(question(ws, preview), opts.yes);
  }
  report(cmd, ws, await run(false), false);
}

function question(ws: WorkstreamRecord, plan: RecoveryPlan): string {
  const stopped = plan.changes.filter((c) => c.revokesLease).length;
  const rerun = plan.changes.filter((c) => c.from === "completed").length;
  const parts = [`${plural(plan.changes.length, "task")} change`];
  if (stopped) parts.push(`${plural(stopped, "running task")} stopped`);
  if (rerun) parts.push(`${plural(rerun, "completed task")} run again`);
  if (plan.kept.length) parts.push(`${plural(plan.kept.length, "completed task")} kept`);
  const undone = plan.compensation?.steps.length ?? 0;
  if (undone) parts.push(`${plural(undone, "completed task")} compensated, then run again`);
  return `${heading(ws, plan, "would")}? ${parts.join(", ")} (see --dry-run)`;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function heading(ws: WorkstreamRecord, plan: RecoveryPlan, mood: "did" | "would"): string {
  const verb = {
    rollback: mood === "did" ? "rolled back" : "roll back",
    retry: mood === "did" ? "retried" : "retry",
    "retry-failed": mood === "did" ? "retried the failed part of" : "retry the failed part of",
    resume: mood === "did" ? "resumed" : "resume",
  }[plan.operation];
  const target = `${ws.name} ${ws.id}`;
  if (plan.checkpoint) {
    const c = plan.checkpoint;
    return `${verb} ${target} to checkpoint ${c.seq} (${c.event} of ${c.task} at ${time(c.at)})`;
  }
  if (plan.fromTask) return `${verb} ${target} from task ${plan.fromTask}`;
  return `${verb} ${target}`;
}

function report(cmd: Command, ws: WorkstreamRecord, plan: RecoveryPlan, dryRun: boolean): void {
  if (globals(cmd).json) return printJson({ ...plan, dryRun });
  if (plan.changes.length === 0) {
    print(`nothing to change: ${heading(ws, plan, "would")} would leave every task as it is`);
    return;
  }
  print(dryRun ? `dry run: ${heading(ws, plan, "would")} would change:` : heading(ws, plan, "did"));
  print(
    table(
      ["TASK", "FROM", "TO", "ATTEMPTS", "NOTE"],
      plan.changes.map((c) => [
        c.key,
        c.from,
        c.to,
        c.attempts.from === c.attempts.to ? c.attempts.to : `${c.attempts.from} → ${c.attempts.to}`,
        [c.revokesLease ? "lease revoked: its worker is told to stop" : null, c.note]
          .filter(Boolean)
          .join("; "),
      ]),
    ),
  );
  if (plan.kept.length) {
    print(`kept: completed after the checkpoint, cannot be undone: ${plan.kept.join(", ")}`);
  }
  if (plan.resourcesReleased.length) {
    print(`resources released: ${plan.resourcesReleased.join(", ")}`);
  }
  if (plan.compensation) printCompensation(plan.compensation, dryRun ? "would" : "scheduled");
  print(`workstream: ${plan.workstream.from} → ${plan.workstream.to}`);
  if (dryRun) print("nothing was changed (dry run)");
}

function reportCompensation(
  cmd: Command,
  ws: WorkstreamRecord,
  plan: CompensationPlan,
  dryRun: boolean,
): void {
  if (globals(cmd).json) return printJson({ ...plan, dryRun });
  print(`${ws.name} ${ws.id} (${ws.status})`);
  printCompensation(plan, dryRun ? "would" : "scheduled");
  if (dryRun) print("nothing was changed (dry run)");
}

/** A compensation plan: each compensating task, what it undoes and what it waits for. */
function printCompensation(plan: CompensationPlan, mood: "would" | "scheduled"): void {
  if (plan.steps.length === 0) {
    print("compensation: nothing to compensate");
  } else {
    print(
      mood === "would"
        ? `compensation (${plan.order} order) would run:`
        : `compensation ${plan.compensationId} (${plan.order} order) scheduled:`,
    );
    print(
      table(
        ["UNDO", "TASK", "HANDLER", "AFTER", "ATTEMPTS", "TIMEOUT"],
        plan.steps.map((s) => [
          s.key,
          s.task,
          s.handler,
          s.after.join(", ") || null,
          s.idempotent ? "retried (idempotent)" : "1 (not idempotent)",
          formatDuration(s.timeoutMs),
        ]),
      ),
    );
  }
  for (const s of plan.skipped) print(`skipped: ${s.task} (${s.reason})`);
}

/** A checkpoint in the shape of the recovery procedures (`workstream_id`, `completed_tasks`, …). */
function seedShape(c: Checkpoint) {
  const keys = (...statuses: TaskStatus[]) =>
    c.tasks.filter((t) => statuses.includes(t.status)).map((t) => t.key);
  return {
    workstream_id: c.workstreamId,
    checkpoint_at: new Date(c.at).toISOString(),
    seq: c.seq,
    event: c.event,
    task: c.task,
    completed_tasks: keys("completed"),
    failed_tasks: keys("failed"),
    pending_tasks: keys("pending", "queued"),
    running_tasks: keys("running"),
    cancelled_tasks: keys("cancelled"),
    skipped_tasks: keys("skipped"),
    // Resources arrive with a later issue; until then no task holds any.
    resources_held: {},
  };
}

function printCheckpoints(ws: WorkstreamRecord, found: Checkpoint[]): void {
  print(`${ws.name}  ${ws.id}  ${ws.status}`);
  if (found.length === 0) return print("no checkpoints");
  const count = (c: Checkpoint, ...statuses: TaskStatus[]) =>
    c.tasks.filter((t) => statuses.includes(t.status)).length;
  print(
    table(
      [
        "SEQ",
        "TIME",
        "EVENT",
        "TASK",
        "COMPLETED",
        "FAILED",
        "PENDING",
        "RUNNING",
        "CANCELLED",
        "SKIPPED",
      ],
      found.map((c) => [
        c.seq,
        time(c.at),
        c.event,
        c.task,
        count(c, "completed"),
        count(c, "failed"),
        count(c, "pending", "queued"),
        count(c, "running"),
        count(c, "cancelled"),
        count(c, "skipped"),
      ]),
    ),
  );
  const quiet = found.find((c) => count(c, "running") === 0);
  if (quiet)
    print(`--to latest is checkpoint ${quiet.seq} (the newest shown with no task running)`);
}
