/**
 * Compensation on the SQLite store. A workstream's completed tasks are undone by a new workstream,
 * `compensate <name>`, of durable compensating tasks (`undo-<key>`, each running the task's
 * compensation handler with its input and output), created in the same write transaction as what
 * asked for it: a person (`mend workstream compensate`), a rollback with `--compensate`, or the
 * workstream ending `failed` or `cancelled` when its policy compensates then.
 */
import { MendError } from "../../errors.js";
import type { WorkstreamRecord } from "../../model/records.js";
import type { TaskSpec, WorkstreamSpec } from "../../model/spec.js";
import { FINAL_WORKSTREAM_STATUSES } from "../../model/states.js";
import {
  type CompensationOrder,
  type CompensationPlan,
  planCompensation,
  undoKey,
} from "../../recovery/compensate.js";
import { DEFAULT_RETRY } from "../../recovery/retry.js";
import type { Actor, CompensateOptions } from "../store.js";
import { rowToTask } from "./codec.js";
import type { SqliteStore } from "./SqliteStore.js";

/** What asked for a compensation, as its creation record says. */
export type CompensationTrigger = "failed" | "cancelled" | "rollback" | "person";

/** A person's compensation of a finished workstream (see `Store.compensateWorkstream`). */
export function compensateWorkstream(
  store: SqliteStore,
  workstreamId: string,
  who: Actor,
  options: CompensateOptions,
): CompensationPlan {
  const run = () => {
    const ws = store.getWorkstreamRow(workstreamId);
    if (!ws) {
      throw new MendError("not_found", `workstream ${workstreamId} not found`, { workstreamId });
    }
    if (ws.status === "active" || FINAL_WORKSTREAM_STATUSES.has(ws.status)) {
      const hint =
        ws.status === "active"
          ? `; compensate it once it has ended (mend workstream cancel ${ws.id} ends it, and compensates it unless its policy says otherwise)`
          : "; it cannot be compensated";
      throw new MendError("refused", `workstream ${ws.id} is ${ws.status}${hint}`, {
        workstreamId,
        status: ws.status,
      });
    }
    if (ws.compensates !== null) {
      throw new MendError(
        "refused",
        `workstream ${ws.id} is the compensation of ${ws.compensates}; a compensation is not compensated (retry its failed tasks instead)`,
        { workstreamId, compensates: ws.compensates },
      );
    }
    refuseUnfinishedCompensation(store, ws);
    const plan = planCompensationOf(store, ws, options.order ?? ws.compensation.order);
    if (options.dryRun || plan.steps.length === 0) return plan;
    const scheduled = scheduleCompensation(store, ws, plan, "person", who.actor, who.reason);
    store.intervention(
      who,
      ws.id,
      { status: ws.status },
      {
        compensation: scheduled.compensationId,
        order: plan.order,
        tasks: plan.steps.map((s) => s.task),
      },
    );
    return scheduled;
  };
  // A dry run reads one consistent snapshot and writes nothing.
  return options.dryRun ? store.db.transaction(run).deferred() : store.write(run);
}

/**
 * Called in the transaction where a workstream ends (`ws` as it is now). A workstream that failed
 * or was cancelled is compensated when its policy says so, unless a compensation of it is still
 * active; each completion is compensated once (see {@link planCompensationOf}). A compensation
 * that completed lets the tasks a rollback held for it run again. Returns the compensation
 * scheduled, if any.
 *
 * @internal
 */
export function onWorkstreamEnded(
  store: SqliteStore,
  ws: WorkstreamRecord,
  actor: string,
): CompensationPlan | null {
  if (ws.status === "completed" && ws.compensates !== null) {
    releaseUndone(store, ws, actor);
    return null;
  }
  if (ws.status !== "failed" && ws.status !== "cancelled") return null;
  if (!ws.compensation.on.includes(ws.status) || unfinishedCompensation(store, ws.id)) return null;
  const plan = planCompensationOf(store, ws, ws.compensation.order);
  if (plan.steps.length === 0) return null;
  // A failure is the engine's doing, whoever's action revealed it; a cancel is the canceller's.
  return scheduleCompensation(
    store,
    ws,
    plan,
    ws.status,
    ws.status === "failed" ? "engine" : actor,
    null,
  );
}

/**
 * Refuses while an earlier compensation of `ws` is still active: two would undo the same
 * completions twice, or race each other.
 *
 * @internal
 */
export function refuseUnfinishedCompensation(store: SqliteStore, ws: WorkstreamRecord): void {
  const running = unfinishedCompensation(store, ws.id);
  if (running) {
    throw new MendError(
      "refused",
      `compensation ${running} of workstream ${ws.id} is still active; wait for it to end`,
      { workstreamId: ws.id, compensation: running },
    );
  }
}

/**
 * The compensation of `ws`'s completed tasks (only those in `only`, when given) in `order`. A
 * task whose last completion is older than a compensation that has its `undo-` task counts as
 * compensated: a task is undone once per completion.
 *
 * @internal
 */
export function planCompensationOf(
  store: SqliteStore,
  ws: WorkstreamRecord,
  order: CompensationOrder,
  only?: ReadonlySet<string>,
): CompensationPlan {
  const completedSeq = new Map(
    (
      store
        .stmt(
          "SELECT entity_id AS id, MAX(seq) AS seq FROM transitions WHERE workstream_id = ? AND entity = 'task' AND to_state = 'completed' GROUP BY entity_id",
        )
        .all(ws.id) as { id: string; seq: number }[]
    ).map((r) => [r.id, r.seq]),
  );
  // Newest compensation first, so a task finds the latest one that undid it.
  const earlier = store
    .stmt(
      "SELECT w.id, (SELECT MIN(t.seq) FROM transitions t WHERE t.workstream_id = w.id) AS seq FROM workstreams w WHERE w.compensates = ? ORDER BY seq DESC",
    )
    .all(ws.id) as { id: string; seq: number }[];
  const undoneIn = earlier.map((c) => ({
    ...c,
    keys: new Set(
      (
        store.stmt("SELECT key FROM tasks WHERE workstream_id = ?").all(c.id) as { key: string }[]
      ).map((r) => r.key),
    ),
  }));
  return planCompensation({
    workstreamId: ws.id,
    order,
    only,
    tasks: tasksOf(store, ws.id).map((t) => {
      const seq = completedSeq.get(t.id) ?? null;
      const by = undoneIn.find((c) => c.keys.has(undoKey(t.key)) && c.seq > (seq ?? 0));
      return {
        key: t.key,
        status: t.status,
        deps: t.deps,
        compensation: t.compensation,
        completedSeq: seq,
        compensatedBy: by?.id ?? null,
      };
    }),
  });
}

/**
 * Creates the compensation workstream of a non-empty plan, in the open write transaction: its
 * creation record is `compensation_scheduled` with `compensates: <id>` (what metrics count), it
 * is never compensated itself nor revived, and its failures stop nothing but what depends on
 * them. Compensating tasks are critical: one that fails for good holds back the compensations
 * ordered after it (undoing what came before while its effects remain would be unsafe) and fails
 * the compensation workstream, so compensation success counts only full undos.
 *
 * @internal
 */
export function scheduleCompensation(
  store: SqliteStore,
  ws: WorkstreamRecord,
  plan: CompensationPlan,
  trigger: CompensationTrigger,
  actor: string,
  reason: string | null | undefined,
): CompensationPlan {
  const byKey = new Map(tasksOf(store, ws.id).map((t) => [t.key, t]));
  const tasks = plan.steps.map((s): TaskSpec => {
    const done = byKey.get(s.task)!;
    return {
      key: s.key,
      handler: s.handler,
      input: { task: s.task, input: done.input, output: done.output },
      deps: s.after,
      priority: 0,
      // Only an idempotent compensation is safe to repeat.
      retry: s.idempotent ? { ...DEFAULT_RETRY } : { ...DEFAULT_RETRY, maxAttempts: 1 },
      timeoutMs: s.timeoutMs,
      deadlineMs: null,
      critical: true,
      breaker: null,
      fallbacks: null,
      compensation: null,
      qualityThreshold: null,
    };
  });
  const spec: WorkstreamSpec = {
    name: `compensate ${ws.name}`,
    onFailure: "continue",
    revive: false,
    compensation: { on: [], order: plan.order },
    breakers: {},
    tasks,
  };
  const compensationId = store.createWorkstream(spec, actor, {
    event: "compensation_scheduled",
    compensates: ws.id,
    detail: {
      trigger,
      reason: reason ?? null,
      order: plan.order,
      tasks: plan.steps.map((s) => s.task),
      skipped: plan.skipped,
    },
  });
  return { ...plan, compensationId };
}

/** The id of an active compensation of `workstreamId`, if there is one. */
function unfinishedCompensation(store: SqliteStore, workstreamId: string): string | null {
  const row = store
    .stmt("SELECT id FROM workstreams WHERE compensates = ? AND status = 'active' LIMIT 1")
    .get(workstreamId) as { id: string } | undefined;
  return row?.id ?? null;
}

function tasksOf(store: SqliteStore, workstreamId: string) {
  return (
    store
      .stmt("SELECT * FROM tasks WHERE workstream_id = ? ORDER BY rowid")
      .all(workstreamId) as Record<string, unknown>[]
  ).map(rowToTask);
}

/**
 * Queues the tasks of the compensated workstream that a rollback reset and held for this
 * compensation: pending tasks whose dependencies are satisfied (nothing else leaves a task so).
 */
function releaseUndone(store: SqliteStore, compensation: WorkstreamRecord, actor: string): void {
  const ws = store.getWorkstreamRow(compensation.compensates!);
  if (!ws || FINAL_WORKSTREAM_STATUSES.has(ws.status)) return;
  const held = tasksOf(store, ws.id).filter(
    (t) => t.status === "pending" && store.depsSatisfied(t.id),
  );
  if (held.length === 0) return;
  for (const t of held) {
    store.transition({
      kind: "task",
      id: t.id,
      from: "pending",
      to: "queued",
      patch: { runAt: store.clock.now() },
      event: "task_ready",
      actor,
      workstreamId: ws.id,
      detail: { reason: `compensation ${compensation.id} completed` },
    });
  }
  store.wake();
  store.reconcileWorkstream(ws.id, actor);
}
