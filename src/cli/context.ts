import { hostname, userInfo } from "node:os";
import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { MendError } from "../errors.js";
import type { TaskRecord, WorkstreamRecord } from "../model/records.js";
import { openStore, resolveStoreUrl } from "../store/open.js";
import { SqliteStore } from "../store/sqlite/SqliteStore.js";
import type { Actor, Store } from "../store/store.js";

/** Options every command accepts. */
export interface GlobalOptions {
  store?: string;
  json?: boolean;
}

/** The global options as seen from inside a subcommand. */
export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/** Opens the store named by the options, runs `fn`, and always closes it. */
export async function withStore<T>(cmd: Command, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(resolveStoreUrl(globals(cmd).store));
  const warning = store instanceof SqliteStore ? store.journalWarning() : null;
  if (warning) process.stderr.write(`warning: ${warning}\n`);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Who is acting, for the interventions log: `MEND_ACTOR`, else `user@host`. */
export function actorName(): string {
  if (process.env.MEND_ACTOR) return process.env.MEND_ACTOR;
  let user = "unknown";
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (some containers): the host still tells people where it came from.
  }
  return `${user}@${hostname()}`;
}

/** The command as typed, for the interventions log. */
export function commandLine(): string {
  return ["mend", ...process.argv.slice(2)].join(" ");
}

/** The person running this command, as the interventions log records them. */
export function personActing(reason?: string | null): Actor {
  return { actor: actorName(), reason: reason ?? null, command: commandLine() };
}

/**
 * Resolves what a person typed to a workstream: an exact id, a unique id prefix, or a name (the
 * newest workstream of that name).
 */
export async function resolveWorkstream(store: Store, ref: string): Promise<WorkstreamRecord> {
  const exact = await store.getWorkstream(ref);
  if (exact) return exact;
  const { workstreams } = await store.findIds(ref, 10);
  if (workstreams.length === 1) return (await store.getWorkstream(workstreams[0]!))!;
  if (workstreams.length > 1) {
    throw new MendError(
      "ambiguous_id",
      `"${ref}" matches several workstreams: ${workstreams.join(", ")}`,
      {
        ref,
        matches: workstreams,
      },
    );
  }
  const byName = await store.findWorkstreamsByName(ref);
  const newest = byName.at(-1);
  if (newest) return newest;
  throw new MendError(
    "not_found",
    `no workstream "${ref}" (give an id, an id prefix or a name; see mend status)`,
    {
      ref,
    },
  );
}

/** Resolves `WORKSTREAM/TASK` (workstream as for {@link resolveWorkstream}) or a unique task id prefix. */
export async function resolveTask(store: Store, ref: string): Promise<TaskRecord> {
  const exact = await store.getTask(ref);
  if (exact) return exact;
  const slash = ref.indexOf("/");
  if (slash > 0) {
    const ws = await resolveWorkstream(store, ref.slice(0, slash));
    const key = ref.slice(slash + 1);
    const task = await store.getTask(`${ws.id}/${key}`);
    if (task) return task;
    throw new MendError("not_found", `workstream ${ws.id} has no task "${key}"`, {
      workstream: ws.id,
      task: key,
    });
  }
  const { tasks } = await store.findIds(ref, 10);
  if (tasks.length === 1) return (await store.getTask(tasks[0]!))!;
  if (tasks.length > 1) {
    throw new MendError("ambiguous_id", `"${ref}" matches several tasks: ${tasks.join(", ")}`, {
      ref,
      matches: tasks,
    });
  }
  throw new MendError("not_found", `no task "${ref}" (address a task as WORKSTREAM/TASK)`, { ref });
}

/**
 * Asks before a destructive action. `--yes` skips the question; without a terminal to ask on,
 * the action is refused rather than taken silently.
 */
export async function confirm(question: string, yes: boolean | undefined): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY) {
    throw new MendError(
      "invalid_argument",
      `${question} — refusing without a terminal; pass --yes to confirm`,
    );
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    if (!/^y(es)?$/i.test(answer.trim())) {
      throw new MendError("refused", "not confirmed; nothing was changed");
    }
  } finally {
    rl.close();
  }
}
