import type { Command } from "commander";
import { MendError } from "../../errors.js";
import type { Severity, TransitionRecord } from "../../model/records.js";
import { SEVERITY_ORDER } from "../../observe/events.js";
import { globals, resolveWorkstream, withStore } from "../context.js";
import { print, time } from "../output.js";

interface EventsOptions {
  follow?: boolean;
  severity?: string;
  workstream?: string;
  limit?: string;
}

/** An event as `mend events --json` prints it: one JSON object per line. */
function toEvent(t: TransitionRecord) {
  return {
    seq: t.seq,
    at: new Date(t.at).toISOString(),
    event: t.event,
    severity: t.severity,
    entity: t.entity,
    id: t.entityId,
    workstream: t.workstreamId,
    from: t.from,
    to: t.to,
    actor: t.actor,
    detail: t.detail,
  };
}

function line(t: TransitionRecord): string {
  const d = t.detail as { failure?: { category: string; message: string }; reason?: string } | null;
  const note = d?.failure
    ? `  ${d.failure.category}: ${d.failure.message}`
    : d?.reason
      ? `  ${d.reason}`
      : "";
  return `${time(t.at)}  ${t.severity.padEnd(8)} ${t.event.padEnd(22)} ${t.entityId}${note}`;
}

/** `mend events [--follow] [--severity S]`. */
export function registerEvents(program: Command): void {
  program
    .command("events")
    .description("show events (every state change, with a severity); --follow to stream")
    .option("-f, --follow", "keep printing new events as they happen")
    .option("--severity <level>", `minimum severity: ${SEVERITY_ORDER.join(", ")}`)
    .option("--workstream <ws>", "only this workstream's events")
    .option("--limit <n>", "only the last N events (default 100; 0 for all)", "100")
    .action(async (opts: EventsOptions, cmd: Command) => {
      const json = globals(cmd).json;
      if (opts.severity && !SEVERITY_ORDER.includes(opts.severity as Severity)) {
        throw new MendError(
          "invalid_argument",
          `unknown severity "${opts.severity}": use one of ${SEVERITY_ORDER.join(", ")}`,
        );
      }
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 0) {
        throw new MendError(
          "invalid_argument",
          `--limit must be a whole number, got "${opts.limit}"`,
        );
      }
      await withStore(cmd, async (store) => {
        const workstreamId = opts.workstream
          ? (await resolveWorkstream(store, opts.workstream)).id
          : undefined;
        const base = { minSeverity: opts.severity as Severity | undefined, workstreamId };
        const emit = (t: TransitionRecord) => print(json ? JSON.stringify(toEvent(t)) : line(t));
        const first = await store.listTransitions({
          ...base,
          newestFirst: true,
          limit: limit || undefined,
        });
        first.reverse().forEach(emit);
        if (!opts.follow) return;
        let after = first.at(-1)?.seq ?? 0;
        let stop = false;
        process.once("SIGINT", () => {
          stop = true;
        });
        while (!stop) {
          await new Promise((r) => setTimeout(r, 250));
          const next = await store.listTransitions({ ...base, afterSeq: after, limit: 1000 });
          next.forEach(emit);
          after = next.at(-1)?.seq ?? after;
        }
      });
    });
}
