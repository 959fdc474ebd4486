import type { Command } from "commander";
import { countByStatus, viewWorkstream, type WorkstreamView } from "../../engine/inspect.js";
import { globals, resolveWorkstream, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";

/** `mend status [WORKSTREAM]`. */
export function registerStatus(program: Command): void {
  program
    .command("status")
    .description("list workstreams, or show one workstream's tasks")
    .argument("[workstream]", "workstream id, id prefix or name (newest of that name)")
    .action(async (ref: string | undefined, _opts: unknown, cmd: Command) => {
      const json = globals(cmd).json;
      await withStore(cmd, async (store) => {
        if (ref === undefined) {
          const all = await store.listWorkstreams();
          const perWorkstream = await store.countTasks();
          const rows = all.map((ws) => ({
            ws,
            counts: { ...countByStatus([]), ...perWorkstream.get(ws.id) },
          }));
          if (json) {
            printJson(
              rows.map(({ ws, counts }) => ({
                id: ws.id,
                name: ws.name,
                status: ws.status,
                createdAt: ws.createdAt,
                tasks: counts,
              })),
            );
            return;
          }
          if (rows.length === 0) return print("no workstreams (submit one with: mend submit FILE)");
          print(
            table(
              ["ID", "NAME", "STATUS", "DONE", "RUNNING", "FAILED", "CREATED"],
              rows.map(({ ws, counts }) => [
                ws.id,
                ws.name,
                ws.status,
                `${counts.completed + counts.skipped}/${Object.values(counts).reduce((a, b) => a + b, 0)}`,
                counts.running,
                counts.failed,
                time(ws.createdAt),
              ]),
            ),
          );
          return;
        }
        const ws = await resolveWorkstream(store, ref);
        const view = viewWorkstream(ws, await store.listTasks(ws.id));
        if (json) return printJson(view);
        printWorkstream(view);
      });
    });
}

/** A workstream's header and its tasks, with what each is waiting on or failed with. */
export function printWorkstream(view: WorkstreamView): void {
  print(`${view.name}  ${view.id}  ${view.status}`);
  print(
    table(
      ["TASK", "HANDLER", "STATUS", "ATTEMPTS", "NOTE"],
      view.tasks.map((t) => [
        t.id,
        t.handler,
        t.status,
        `${t.attempts}/${t.maxAttempts}`,
        t.blockedBy
          ? `blocked by ${t.blockedBy}`
          : t.lastError && t.status !== "completed"
            ? `${t.lastError.category}: ${t.lastError.message}`
            : t.runAt && t.attempts > 0
              ? `retry at ${time(t.runAt)}`
              : "",
      ]),
    ),
  );
}
