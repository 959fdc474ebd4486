/**
 * Compensation on the SQL stores. A workstream's completed tasks are undone by a new workstream,
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
import { resourcesOf } from "../../model/definition.js";
import { DEFAULT_RETRY } from "../../recovery/retry.js";
import type { Actor, CompensateOptions } from "../store.js";
import { rowToTask } from "./codec.js";
import { createWorkstream } from "./creation.js";
import { reconcileWorkstream } from "./lifecycle.js";
import type { Queryable, Row } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/** What asked for a compensation, as its creation record says. */
export type CompensationTrigger = "failed" | "cancelled" | "rollback" | "person";

/** A person's compensation of a finished workstream (see `Store.compensateWorkstream`). */
export async function compensateWorkstream(
  store: SqlStore,
  workstreamId: string,
  who: Actor,
  options: CompensateOptions,
): Promise<CompensationPlan> {
  const run = async (tx: Tx): Promise<CompensationPlan> => {
    const ws = await tx.getWorkstreamRow(workstreamId);
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
    await refuseUnfinishedCompensation(tx, ws);
    const plan = await planCompensationOf(tx, ws, options.order ?? ws.compensation.order);
    if (options.dryRun || plan.steps.length === 0) return plan;
    const scheduled = await scheduleCompensation(tx, ws, plan, "person", who.actor, who.reason);
    await tx.intervention(
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
  // A dry run reads one consistent snapshot and writes nothing (its transaction is rolled back).
  return options.dryRun ? store.dryRun(run) : store.write(run);
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
export async function onWorkstreamEnded(
  tx: Tx,
  ws: WorkstreamRecord,
  actor: string,
): Promise<CompensationPlan | null> {
  if (ws.status === "completed" && ws.compensates !== null) {
    await releaseUndone(tx, ws, actor);
    return null;
  }
  if (ws.status !== "failed" && ws.status !== "cancelled") return null;
  if (!ws.compensation.on.includes(ws.status) || (await unfinishedCompensation(tx, ws.id))) {
    return null;
  }
  const plan = await planCompensationOf(tx, ws, ws.compensation.order);
  if (plan.steps.length === 0) return null;
  // A failure is the engine's doing, whoever's action revealed it; a cancel is the canceller's.
  return scheduleCompensation(
    tx,
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
export async function refuseUnfinishedCompensation(
  q: Queryable,
  ws: WorkstreamRecord,
): Promise<void> {
  const running = await unfinishedCompensation(q, ws.id);
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
 * The log is read with this transaction's own records, which reach the `transitions` table only
 * as it ends ({@link Tx.flush}): the completion that ended a workstream is usually one of them.
 *
 * @internal
 */
export async function planCompensationOf(
  tx: Tx,
  ws: WorkstreamRecord,
  order: CompensationOrder,
  only?: ReadonlySet<string>,
): Promise<CompensationPlan> {
  const completedSeq = new Map(
    (
      await tx.all<{ id: string; seq: number }>(
        "SELECT entity_id AS id, MAX(seq) AS seq FROM transitions WHERE workstream_id = ? AND entity = 'task' AND to_state = 'completed' GROUP BY entity_id",
        [ws.id],
      )
    ).map((r) => [r.id, r.seq]),
  );
  const earlier = await tx.all<{ id: string; seq: number | null }>(
    "SELECT w.id, (SELECT MIN(t.seq) FROM transitions t WHERE t.workstream_id = w.id) AS seq FROM workstreams w WHERE w.compensates = ? ORDER BY seq DESC",
    [ws.id],
  );
  const pending = await pendingSeqs(tx);
  for (const p of pending) {
    const r = p.record;
    if (r.entity === "task" && r.workstreamId === ws.id && r.to === "completed") {
      completedSeq.set(r.entityId, p.seq);
    }
  }
  for (const c of earlier) {
    c.seq ??= pending.find((p) => p.record.workstreamId === c.id)?.seq ?? null;
  }
  // Newest compensation first, so a task finds the latest one that undid it (one without a
  // record last, where SQLite orders NULL).
  earlier.sort((a, b) => (b.seq ?? 0) - (a.seq ?? 0));
  const undoneIn: { id: string; seq: number | null; keys: Set<string> }[] = [];
  for (const c of earlier) {
    const keys = await tx.all<{ key: string }>("SELECT key FROM tasks WHERE workstream_id = ?", [
      c.id,
    ]);
    undoneIn.push({ ...c, keys: new Set(keys.map((r) => r.key)) });
  }
  return planCompensation({
    workstreamId: ws.id,
    order,
    only,
    tasks: (await tasksOf(tx, ws.id)).map((t) => {
      const seq = completedSeq.get(t.id) ?? null;
      const by = undoneIn.find(
        (c) => c.keys.has(undoKey(t.key)) && c.seq !== null && c.seq > (seq ?? 0),
      );
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
export async function scheduleCompensation(
  tx: Tx,
  ws: WorkstreamRecord,
  plan: CompensationPlan,
  trigger: CompensationTrigger,
  actor: string,
  reason: string | null | undefined,
): Promise<CompensationPlan> {
  const byKey = new Map((await tasksOf(tx, ws.id)).map((t) => [t.key, t]));
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
      // Undoing the task's effects needs what doing them needed (access to the same system).
      requires: done.requires,
      stallAfterMs: null,
      resources: done.resources,
    };
  });
  const spec: WorkstreamSpec = {
    name: `compensate ${ws.name}`,
    onFailure: "continue",
    revive: false,
    compensation: { on: [], order: plan.order },
    breakers: {},
    resources: resourcesOf(tasks, {}),
    tasks,
  };
  const compensationId = await createWorkstream(tx, spec, actor, {
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
async function unfinishedCompensation(q: Queryable, workstreamId: string): Promise<string | null> {
  const row = await q.get<{ id: string }>(
    "SELECT id FROM workstreams WHERE compensates = ? AND status = 'active' LIMIT 1",
    [workstreamId],
  );
  return row?.id ?? null;
}

async function tasksOf(q: Queryable, workstreamId: string) {
  return (
    await q.all<Row>("SELECT * FROM tasks WHERE workstream_id = ? ORDER BY rowid", [workstreamId])
  ).map(rowToTask);
}

/**
 * This transaction's records with the seqs they will have in the log. Knowing them takes the
 * log's head (see {@link Tx.nextSeq}), so it is asked only when there are records.
 */
async function pendingSeqs(tx: Tx): Promise<{ record: Tx["records"][number]; seq: number }[]> {
  if (tx.records.length === 0) return [];
  const first = (await tx.nextSeq()) - tx.records.length;
  return tx.records.map((record, i) => ({ record, seq: first + i }));
}

/**
 * Queues the tasks of the compensated workstream that a rollback reset and held for this
 * compensation: pending tasks whose dependencies are satisfied (nothing else leaves a task so).
 */
async function releaseUndone(tx: Tx, compensation: WorkstreamRecord, actor: string): Promise<void> {
  const ws = await tx.getWorkstreamRow(compensation.compensates!);
  if (!ws || FINAL_WORKSTREAM_STATUSES.has(ws.status)) return;
  const held = [];
  for (const t of await tasksOf(tx, ws.id)) {
    if (t.status === "pending" && (await tx.depsSatisfied(t.id))) held.push(t);
  }
  if (held.length === 0) return;
  for (const t of held) {
    await tx.transition({
      kind: "task",
      id: t.id,
      from: "pending",
      to: "queued",
      patch: { runAt: tx.now() },
      event: "task_ready",
      actor,
      workstreamId: ws.id,
      detail: { reason: `compensation ${compensation.id} completed` },
    });
  }
  tx.wake();
  await reconcileWorkstream(tx, ws.id, actor);
}
