import type { Command } from "commander";
import { MendError } from "../../errors.js";
import { capabilityProblem } from "../../model/capabilities.js";
import type { ResourceView, Store } from "../../store/store.js";
import { globals, personActing, withStore } from "../context.js";
import { print, printJson, table } from "../output.js";
import { parseIntOption } from "./options.js";

/** The largest limit a person may set: as in a definition's `resources`. */
const MAX_HOLDERS_LIMIT = 1_000_000;

/** How many holders `mend resources` names before it says how many more there are. */
const HOLDERS_SHOWN = 3;

const LIST_HELP = `
Columns:
  STATUS   available; exhausted: every slot is held and tasks wait for one (the monitor says so;
           tasks start as slots free); unavailable: out of service (a person, a health check or
           a failure pattern took it out): tasks that need it wait, or take an alternative
  HOLDERS  running tasks holding it / its limit (a limit lowered below its holders applies as
           they end: no new holds until fewer hold it than the limit)
  WAITING  queued tasks that need it (as their only choice or one of their alternatives)
  HELD BY  the running tasks holding it (mend cancel TASK frees a hold at once)

A task holds what it needs only while it runs: the hold is taken with its claim and given back
in the same transaction as its end, retry, requeue or cancellation, so a crash never leaks one.
Waiting tasks get free slots by priority, then age.`;

/** Resource names follow capability names: letters, digits, ".", "_" and "-". */
function checkName(id: string): void {
  const problem = capabilityProblem(id);
  if (problem) {
    throw new MendError("invalid_argument", problem.replace(/capability/g, "resource"), {
      resource: id,
    });
  }
}

function requireReason(reason: string | undefined): string {
  if (reason === undefined || !reason.trim()) {
    throw new MendError("invalid_argument", "--reason must not be empty");
  }
  return reason;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The running tasks holding each resource, as WORKSTREAM/TASK, by resource. */
async function holdersByResource(store: Store): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const lease of await store.listLeases()) {
    const task = await store.getTask(lease.taskId);
    for (const r of new Set(task?.held ?? [])) {
      out.set(r, [...(out.get(r) ?? []), task!.id]);
    }
  }
  return out;
}

/** A resource with the running tasks holding it, as `mend resources --json` prints it. */
export type ResourceListing = ResourceView & { heldBy: string[] };

/** Every resource with its holders, for `mend resources`. */
export async function listResourcesWithHolders(store: Store): Promise<ResourceListing[]> {
  const all = await store.listResources();
  const held: Map<string, string[]> = all.some((r) => r.holders > 0)
    ? await holdersByResource(store)
    : new Map();
  return all.map((r) => ({ ...r, heldBy: held.get(r.id) ?? [] }));
}

/** Holders and the limit, as the tables show them: `2/3`. */
export function holdersCell(r: Pick<ResourceView, "holders" | "maxHolders">): string {
  return `${r.holders}/${r.maxHolders}`;
}

function heldByCell(ids: readonly string[]): string | null {
  if (ids.length === 0) return null;
  const shown = ids.slice(0, HOLDERS_SHOWN).join(", ");
  return ids.length > HOLDERS_SHOWN ? `${shown} +${ids.length - HOLDERS_SHOWN} more` : shown;
}

function printListing(all: readonly ResourceListing[]): void {
  if (all.length === 0) {
    print(
      "no resources (a task names one with resources: [NAME]; mend resources set-limit creates one)",
    );
    return;
  }
  print(
    table(
      ["ID", "STATUS", "HOLDERS", "WAITING", "HELD BY", "REASON"],
      all.map((r) => [r.id, r.status, holdersCell(r), r.waiting, heldByCell(r.heldBy), r.reason]),
    ),
  );
  const over = all.filter((r) => r.holders > r.maxHolders);
  if (over.length > 0) {
    print("");
    print(
      `over their limit: ${over.map((r) => r.id).join(", ")} (the limit was lowered; it applies as their holders end, and no task takes a new hold until fewer hold it than the limit)`,
    );
  }
}

/** What happens to the tasks holding a resource taken out of service. */
function holding(holders: number): string {
  if (holders === 0) return "";
  return holders === 1
    ? "; the task holding it keeps its hold until it ends"
    : `; the ${holders} tasks holding it keep their holds until they end`;
}

/** What `set-limit` did, in one line. */
function describeLimit(before: ResourceView, maxHolders: number): string {
  const id = before.id;
  if (before.maxHolders === maxHolders) {
    return `${id}: already at most ${plural(maxHolders, "holder")}; nothing changed`;
  }
  const now = `${id}: at most ${plural(maxHolders, "holder")} (was ${before.maxHolders}); ${before.holders} hold${before.holders === 1 ? "s" : ""} it now`;
  if (before.holders > maxHolders) {
    return `${now}. They keep their holds; no task takes a new one until its holders drop below the limit`;
  }
  if (maxHolders > before.maxHolders && before.waiting > 0) {
    return `${now}; ${plural(before.waiting, "waiting task")} may start now`;
  }
  return now;
}

/** Why marking changed nothing, as a refusal that says where the resource stands. */
function alreadySo(id: string, r: ResourceView | undefined, available: boolean): MendError {
  if (!r) return new MendError("refused", `resource ${id} changed meanwhile; see mend resources`);
  const context = { resource: r.id, status: r.status };
  const why = r.reason ? ` (${r.reason})` : "";
  if (!available) {
    // Marked again for the reason it has (another reason takes it over from a health check).
    return new MendError("refused", `resource ${r.id} is already unavailable${why}`, context);
  }
  if (r.status === "exhausted") {
    return new MendError(
      "refused",
      `resource ${r.id} is in service, exhausted${why}: tasks wait for a free slot; mend resources set-limit ${r.id} --max-holders N raises its limit`,
      context,
    );
  }
  return new MendError("refused", `resource ${r.id} is already available`, context);
}

/**
 * `mend resources` lists the resources (named capacities tasks hold while they run);
 * `mend resources set-limit ID --max-holders N` and `mend resources mark ID --unavailable|--available
 * --reason R` act on one, each logged as an intervention.
 */
export function registerResources(program: Command): void {
  const command = program
    .command("resources")
    .description(
      "list the resources tasks hold while they run: status, holders/limit, waiting tasks, who holds them, why not available",
    )
    .addHelpText("after", LIST_HELP)
    .action(async (_opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const all = await listResourcesWithHolders(store);
        if (globals(cmd).json) return printJson(all);
        printListing(all);
      });
    });

  command
    .command("set-limit")
    .description(
      "set how many tasks may hold a resource at once (an unknown name is created); a lower limit lets current holders finish",
    )
    .argument("<id>", "the resource's name (see mend resources)")
    .requiredOption(
      "--max-holders <n>",
      `most tasks holding it at once (1 to ${MAX_HOLDERS_LIMIT})`,
      parseIntOption,
    )
    .option("--reason <text>", "why, for the interventions log")
    .addHelpText(
      "after",
      "\nA workstream definition that gives the resource a limit (resources: { NAME: { maxHolders: N } })\nsets it again when it is submitted.",
    )
    .action(async (id: string, opts: { maxHolders: number; reason?: string }, cmd: Command) => {
      checkName(id);
      if (opts.maxHolders > MAX_HOLDERS_LIMIT) {
        throw new MendError(
          "invalid_argument",
          `--max-holders must be at most ${MAX_HOLDERS_LIMIT}, got ${opts.maxHolders}`,
          { maxHolders: opts.maxHolders },
        );
      }
      const reason = opts.reason === undefined ? null : requireReason(opts.reason);
      await withStore(cmd, async (store) => {
        const before = (await store.listResources()).find((r) => r.id === id);
        const after = await store.setResourceLimit(id, opts.maxHolders, personActing(reason));
        if (globals(cmd).json) {
          return printJson({
            resource: after,
            created: before === undefined,
            previousMaxHolders: before?.maxHolders ?? null,
          });
        }
        print(
          before === undefined
            ? `created resource ${id} (no task names it yet) with at most ${plural(opts.maxHolders, "holder")}`
            : describeLimit(before, opts.maxHolders),
        );
      });
    });

  command
    .command("mark")
    .description(
      "take a resource out of service (--unavailable: its tasks wait, or take an alternative) or put it back (--available)",
    )
    .argument("<id>", "the resource's name (see mend resources)")
    .option("--unavailable", "out of service: no task takes a new hold on it")
    .option("--available", "back in service: waiting tasks may take it")
    .requiredOption("--reason <text>", "why, for the interventions log and mend resources")
    .addHelpText(
      "after",
      "\nTasks already holding an unavailable resource keep their holds until they end (mend cancel\nTASK stops one). A resource a person marked unavailable stays so until a person marks it\navailable: health checks do not put it back (marking one a check took out, with your reason,\nkeeps it out). An unknown name marked unavailable is created. Exit 4 when it already is so.",
    )
    .action(
      async (
        id: string,
        opts: { unavailable?: boolean; available?: boolean; reason: string },
        cmd: Command,
      ) => {
        checkName(id);
        if (opts.unavailable === opts.available) {
          throw new MendError(
            "invalid_argument",
            "say exactly one of --unavailable (take it out of service) or --available (put it back)",
          );
        }
        const available = opts.available === true;
        const reason = requireReason(opts.reason);
        await withStore(cmd, async (store) => {
          const before = (await store.listResources()).find((r) => r.id === id);
          const after = await store.markResource(id, available, reason, personActing(reason));
          if (after === null) throw alreadySo(id, before, available);
          if (globals(cmd).json) return printJson({ resource: after, created: !before });
          if (!before) {
            return print(`created resource ${id} (no task names it yet), unavailable: ${reason}`);
          }
          print(
            available
              ? `${id}: now available${before.waiting > 0 ? `; ${plural(before.waiting, "waiting task")} may take it` : ""}`
              : `${id}: now unavailable (${reason}); tasks that need it wait, or take an alternative their definition allows${holding(before.holders)}`,
          );
        });
      },
    );
}
