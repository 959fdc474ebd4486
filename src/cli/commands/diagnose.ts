import type { Command } from "commander";
import { countByStatus } from "../../engine/inspect.js";
import { systemClock } from "../../engine/clock.js";
import type { TaskRecord, TransitionRecord } from "../../model/records.js";
import {
  type BreakerStatusName,
  type Diagnosis,
  type Suggestion,
  ESCALATION_LABELS,
  type EscalationLevel,
  describeFailure,
  diagnose,
  diagnoseWorkstream,
} from "../../recovery/escalate.js";
import type { Store } from "../../store/store.js";
import { globals, resolveTask, resolveWorkstream, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";
import { parseCountOption } from "./options.js";

function level(n: EscalationLevel): string {
  return `${n} (${ESCALATION_LABELS[n]})`;
}

function printAdvice(next: Suggestion, alternatives: Suggestion[], automatic: string | null): void {
  if (automatic) print(`automatic: ${automatic}`);
  print(`next:      ${next.command}`);
  print(`           ${next.why}`);
  if (alternatives.length) print("alternatives:");
  for (const a of alternatives) {
    print(`  ${a.command}`);
    print(`      ${a.why}`);
  }
}

/** One compact line per event: when, what, and the error or reason it carried. */
function eventLine(t: TransitionRecord): string {
  const d = (t.detail ?? {}) as {
    failure?: { category: string; message: string };
    decision?: { action: string; reason?: string };
    reason?: string | null;
  };
  const note = d.failure
    ? `${d.failure.category}: ${d.failure.message}${d.decision ? ` → ${d.decision.action}` : ""}`
    : (d.reason ?? "");
  const by = t.actor === "engine" || t.actor.startsWith("worker:") ? "" : ` by ${t.actor}`;
  return `  ${time(t.at)}  ${t.event.padEnd(24)}${`${t.from ?? "(new)"} → ${t.to}`.padEnd(22)}${note}${by}`.trimEnd();
}

/** Every breaker's status by name: a task behind an open breaker is the engine's to revive. */
async function breakerStatuses(store: Store): Promise<Record<string, BreakerStatusName>> {
  return Object.fromEntries((await store.listBreakers()).map((b) => [b.id, b.status]));
}

async function diagnoseTaskRef(
  store: Store,
  task: TaskRecord,
  json: boolean | undefined,
  events: number,
): Promise<void> {
  const [workstream, tasks, breakers] = await Promise.all([
    store.getWorkstream(task.workstreamId),
    store.listTasks(task.workstreamId),
    breakerStatuses(store),
  ]);
  const d: Diagnosis = diagnose(task, { now: systemClock.now(), tasks, workstream, breakers });
  if (json) return printJson(d);
  print(`task:      ${task.id}  (handler ${task.handler}${task.critical ? "" : ", not critical"})`);
  print(`status:    ${task.status}  attempts ${task.attempts}/${task.retry.maxAttempts}`);
  // A completed task's last error is history, not its state (as in `mend status`).
  if (task.lastError && task.status !== "completed") {
    const f = task.lastError;
    print(`error:     ${describeFailure(f)}${f.recoverable ? "" : " — not recoverable"}`);
  }
  print(`level:     ${level(d.level)}, cause ${d.cause}`);
  print(`summary:   ${d.summary}`);
  printAdvice(d.next, d.alternatives, d.automatic);
  if (events === 0) return;
  const recent = await store.listTransitions({
    entityId: task.id,
    newestFirst: true,
    limit: events,
  });
  print("recent events:");
  for (const t of recent.reverse()) print(eventLine(t));
}

/**
 * `mend diagnose TASK|WORKSTREAM`: the escalation level of a task or workstream and the exact
 * command to try next (DESIGN.md "Recovery policies"). Reads only.
 */
export function registerDiagnose(program: Command): void {
  program
    .command("diagnose")
    .description("say what a task or workstream needs: its escalation level and the command to try")
    .argument("<ref>", "WORKSTREAM/TASK or a task id; or a workstream id, id prefix or name")
    .option("--events <n>", "recent events of the task to show (0: none)", parseCountOption, 5)
    .action(async (ref: string, opts: { events: number }, cmd: Command) => {
      const json = globals(cmd).json;
      await withStore(cmd, async (store) => {
        // Task ids are `WORKSTREAM/KEY`; anything without a slash names a workstream.
        if (ref.includes("/")) {
          return diagnoseTaskRef(store, await resolveTask(store, ref), json, opts.events);
        }
        const ws = await resolveWorkstream(store, ref);
        const [tasks, breakers] = await Promise.all([
          store.listTasks(ws.id),
          breakerStatuses(store),
        ]);
        const d = diagnoseWorkstream(ws, tasks, { now: systemClock.now(), breakers });
        if (json) return printJson(d);
        const counts = Object.entries(countByStatus(tasks))
          .filter(([, n]) => n > 0)
          .map(([s, n]) => `${n} ${s}`)
          .join(", ");
        print(`workstream: ${ws.name}  ${ws.id}`);
        print(`status:    ${ws.status}  tasks: ${counts || "none"}`);
        print(`level:     ${level(d.level)}`);
        print(`summary:   ${d.summary}`);
        printAdvice(d.next, d.alternatives, null);
        if (d.tasksNeedingAPerson.length === 0) return;
        print("tasks needing a person (mend diagnose TASK for each):");
        print(
          table(
            ["TASK", "LEVEL", "ID"],
            d.tasksNeedingAPerson.map((t) => [t.key, level(t.level), t.taskId]),
          ),
        );
      });
    });
}
