import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import { countByStatus, viewWorkstream, type WorkstreamView } from "../../engine/inspect.js";
import type {
  BreakerRecord,
  DegradationRecord,
  TaskRecord,
  WorkstreamRecord,
} from "../../model/records.js";
import { FINAL_WORKSTREAM_STATUSES } from "../../model/states.js";
import {
  type BreakerStatusName,
  type DiagnosisCause,
  ESCALATION_LABELS,
  type EscalationLevel,
  diagnose,
} from "../../recovery/escalate.js";
import type { ResourceView, Store } from "../../store/store.js";
import { globals, resolveWorkstream, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";
import { openUntil } from "./breakers.js";
import { holdersCell } from "./resources.js";

/** A failed task whose diagnosis needs a person (level 2 or more), and the command to try. */
interface NeedsAPerson {
  task: string;
  key: string;
  level: EscalationLevel;
  cause: DiagnosisCause;
  next: string;
}

/** A running task reported stalled: no progress for its threshold (`task_stalled`). */
interface StalledTask {
  task: string;
  key: string;
  worker: string | null;
  attempt: number;
  /** When it was reported stalled (epoch ms). */
  stalledAt: number;
}

/** The workstream's running tasks reported stalled and not progressing since. */
function stalledTasks(tasks: readonly TaskRecord[]): StalledTask[] {
  return tasks
    .filter((t) => t.status === "running" && t.stalledAt !== null)
    .map((t) => ({
      task: t.id,
      key: t.key,
      worker: t.leaseWorker,
      attempt: t.attempts,
      stalledAt: t.stalledAt!,
    }));
}

/**
 * What `mend status` shows besides the workstreams: breakers not closed, resources out of
 * service or full, the degradation.
 */
interface SystemState {
  breakers: BreakerRecord[];
  breakerStatus: Record<string, BreakerStatusName>;
  /** Resources out of service or exhausted, or with every slot held while tasks wait. */
  resources: ResourceView[];
  degradation: DegradationRecord;
}

async function systemState(store: Store): Promise<SystemState> {
  const [all, resources, degradation] = await Promise.all([
    store.listBreakers(),
    store.listResources(),
    store.getDegradation(),
  ]);
  return {
    breakers: all.filter((b) => b.status !== "closed"),
    breakerStatus: Object.fromEntries(all.map((b) => [b.id, b.status])),
    resources: resources.filter(
      (r) => r.status !== "available" || (r.waiting > 0 && r.holders >= r.maxHolders),
    ),
    degradation,
  };
}

/**
 * The workstream's failed tasks at level 2 or more. An archived or merged workstream is closed
 * for good, so nothing in it waits on a person.
 */
function needingAPerson(
  ws: WorkstreamRecord,
  tasks: readonly TaskRecord[],
  system: SystemState,
): NeedsAPerson[] {
  if (FINAL_WORKSTREAM_STATUSES.has(ws.status)) return [];
  const context = {
    now: systemClock.now(),
    tasks,
    workstream: ws,
    breakers: system.breakerStatus,
  };
  return tasks
    .filter((t) => t.status === "failed")
    .map((t) => ({ t, d: diagnose(t, context) }))
    .filter(({ d }) => d.level >= 2)
    .map(({ t, d }) => ({
      task: t.id,
      key: t.key,
      level: d.level,
      cause: d.cause,
      next: d.next.command,
    }));
}

/**
 * The sections after the workstreams: who needs a person, stalled tasks, breakers not closed,
 * resources out of service or full, degradation.
 */
function printAttention(
  needs: readonly NeedsAPerson[],
  stalled: readonly StalledTask[],
  system: SystemState,
): void {
  if (needs.length > 0) {
    print("");
    print("needs a person (mend diagnose TASK says why):");
    print(
      table(
        ["LEVEL", "TASK", "NEXT"],
        needs.map((n) => [`${n.level} (${ESCALATION_LABELS[n.level]})`, n.task, n.next]),
      ),
    );
  }
  if (stalled.length > 0) {
    print("");
    print("stalled: running without progress (mend diagnose TASK):");
    print(
      table(
        ["TASK", "WORKER", "ATTEMPT", "STALLED SINCE"],
        stalled.map((s) => [s.task, s.worker ?? "?", s.attempt, time(s.stalledAt)]),
      ),
    );
  }
  if (system.breakers.length > 0) {
    print("");
    print("circuit breakers not closed (mend breakers):");
    print(
      table(
        ["NAME", "STATUS", "OPEN UNTIL"],
        system.breakers.map((b) => [b.id, b.status.replace("_", "-"), openUntil(b)]),
      ),
    );
  }
  if (system.resources.length > 0) {
    print("");
    print("resources out of service or full (mend resources):");
    print(
      table(
        ["ID", "STATUS", "HOLDERS", "WAITING", "REASON"],
        system.resources.map((r) => [r.id, r.status, holdersCell(r), r.waiting, r.reason]),
      ),
    );
  }
  const d = system.degradation;
  if (d.level > 0) {
    print("");
    print(
      `degraded: level ${d.level} (${d.name}), result quality ×${d.quality}, since ${time(d.updatedAt)}`,
    );
  }
}

/** `mend status [WORKSTREAM]`. */
export function registerStatus(program: Command): void {
  program
    .command("status")
    .description(
      "list workstreams, or show one workstream's tasks; then what needs a person, stalled tasks, open breakers, resources out of service or full, and degradation",
    )
    .argument("[workstream]", "workstream id, id prefix or name (newest of that name)")
    .action(async (ref: string | undefined, _opts: unknown, cmd: Command) => {
      const json = globals(cmd).json;
      await withStore(cmd, async (store) => {
        const system = await systemState(store);
        if (ref === undefined) {
          const all = await store.listWorkstreams();
          const perWorkstream = await store.countTasks();
          const rows = await Promise.all(
            all.map(async (ws) => {
              const counts = { ...countByStatus([]), ...perWorkstream.get(ws.id) };
              // Only workstreams with failed tasks can have one that needs a person, and only
              // those with running ones a stalled task.
              const tasks = counts.failed + counts.running > 0 ? await store.listTasks(ws.id) : [];
              const needs = counts.failed > 0 ? needingAPerson(ws, tasks, system) : [];
              return { ws, counts, needs, stalled: stalledTasks(tasks) };
            }),
          );
          if (json) {
            // Stays a list of workstreams (scripts read it so); breakers and the degradation
            // level are in `mend breakers --json` and `mend status WORKSTREAM --json`.
            printJson(
              rows.map(({ ws, counts, needs, stalled }) => ({
                id: ws.id,
                name: ws.name,
                status: ws.status,
                createdAt: ws.createdAt,
                tasks: counts,
                needsAPerson: needs,
                stalled,
              })),
            );
            return;
          }
          if (rows.length === 0) print("no workstreams (submit one with: mend submit FILE)");
          else {
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
          }
          printAttention(
            rows.flatMap((r) => r.needs),
            rows.flatMap((r) => r.stalled),
            system,
          );
          return;
        }
        const ws = await resolveWorkstream(store, ref);
        const tasks = await store.listTasks(ws.id);
        const view = viewWorkstream(ws, tasks);
        const needs = needingAPerson(ws, tasks, system);
        const stalled = stalledTasks(tasks);
        if (json) {
          const { level, name, status, quality } = system.degradation;
          return printJson({
            ...view,
            needsAPerson: needs,
            stalled,
            openBreakers: system.breakers.map((b) => ({
              name: b.id,
              status: b.status,
              forced: b.forced,
              openUntil: b.openUntil,
            })),
            blockedResources: system.resources.map((r) => ({
              id: r.id,
              status: r.status,
              holders: r.holders,
              maxHolders: r.maxHolders,
              waiting: r.waiting,
              reason: r.reason,
            })),
            degradation: { level, name, status, quality },
          });
        }
        printWorkstream(view, resourceWaits(tasks, system.resources));
        printAttention(needs, stalled, system);
      });
    });
}

/**
 * What each queued task that cannot take its resources now waits for, by task id: the first of
 * its needs whose every choice is out of service or full.
 */
function resourceWaits(
  tasks: readonly TaskRecord[],
  constrained: readonly ResourceView[],
): Map<string, string> {
  const blocked = new Map(
    constrained
      .filter((r) => r.status === "unavailable" || r.holders >= r.maxHolders)
      .map((r) => [r.id, r.status === "unavailable" ? "unavailable" : `${holdersCell(r)} held`]),
  );
  const waits = new Map<string, string>();
  for (const t of tasks) {
    if (t.status !== "queued" || t.resources === null) continue;
    const need = t.resources.find((choices) => choices.every((r) => blocked.has(r)));
    if (!need) continue;
    const said = need.map((r) => `${r} (${blocked.get(r)})`).join(", ");
    waits.set(
      t.id,
      need.length === 1 ? `waiting for resource ${said}` : `waiting for one of ${said}`,
    );
  }
  return waits;
}

/**
 * A workstream's header and its tasks, with what each is waiting on or failed with (`waits`:
 * the resources queued tasks wait for, by task id).
 */
export function printWorkstream(
  view: WorkstreamView,
  waits: ReadonlyMap<string, string> = new Map(),
): void {
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
          : t.stalledAt !== null
            ? `stalled: no progress (reported ${time(t.stalledAt)})`
            : waits.has(t.taskId)
              ? waits.get(t.taskId)
              : t.lastError && t.status !== "completed"
                ? `${t.lastError.category}: ${t.lastError.message}`
                : t.runAt && t.attempts > 0
                  ? `retry at ${time(t.runAt)}`
                  : "",
      ]),
    ),
  );
}
