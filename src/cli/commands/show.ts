import type { Command } from "commander";
import type { Failure } from "../../model/failure.js";
import type { TransitionRecord } from "../../model/records.js";
import { globals, resolveTask, withStore } from "../context.js";
import { print, printJson, time } from "../output.js";

/** One line of a task's history: what happened and what the engine did. */
function describe(t: TransitionRecord): string {
  const d = (t.detail ?? {}) as {
    attempt?: number;
    failure?: Failure;
    decision?: { action: string; reason?: string; delayMs?: number };
    reason?: string | null;
  };
  const parts = [`${time(t.at)}  ${t.event.padEnd(22)} ${t.from ?? "(new)"} → ${t.to}`];
  // A start records the attempt in its data; other transitions in their detail.
  const attempt = d.attempt ?? (t.event === "task_started" ? t.data.attempts : undefined);
  if (attempt) parts.push(`attempt ${attempt}`);
  if (t.actor !== "engine") parts.push(`by ${t.actor}`);
  let line = parts.join("  ");
  if (d.failure) {
    line += `\n      error: ${d.failure.category}${d.failure.recoverable ? "" : " (not recoverable)"}: ${d.failure.message}`;
    if (d.failure.status) line += ` [HTTP ${d.failure.status}]`;
    if (d.failure.code) line += ` [${d.failure.code}]`;
  }
  if (d.decision) {
    line += `\n      engine: ${d.decision.action}${d.decision.delayMs !== undefined ? ` in ${d.decision.delayMs} ms` : ""}${d.decision.reason ? ` — ${d.decision.reason}` : ""}`;
  }
  if (d.reason) line += `\n      reason: ${d.reason}`;
  return line;
}

/** `mend show TASK`. */
export function registerShow(program: Command): void {
  program
    .command("show")
    .description("show a task: its attempts, classified errors and what the engine did")
    .argument("<task>", "WORKSTREAM/TASK, or a unique task id")
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const task = await resolveTask(store, ref);
        const history = await store.listTransitions({ entityId: task.id });
        if (globals(cmd).json) return printJson({ task, history });
        print(
          `${task.id}  ${task.status}  handler=${task.handler}  attempts=${task.attempts}/${task.retry.maxAttempts}  timeout=${task.timeoutMs}ms`,
        );
        if (task.deps.length) print(`depends on: ${task.deps.join(", ")}`);
        if (task.lastError)
          print(`last error: ${task.lastError.category}: ${task.lastError.message}`);
        if (task.output !== null) print(`output: ${JSON.stringify(task.output).slice(0, 500)}`);
        print("");
        for (const t of history) print(describe(t));
      });
    });
}
