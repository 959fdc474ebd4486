/**
 * The PostgreSQL store's worker round trip for the common case: completions of plain tasks and
 * a claim, in a fixed, small number of statements whatever the batch size, beside other workers'
 * round trips. It takes the store's write lock shared (other exchanges run at the same time;
 * operator actions, submissions and the monitor wait) and locks exactly the rows it decides on:
 *
 * - the held tasks it settles (`FOR UPDATE`), so fencing is checked on rows nobody else moves;
 * - the dependents it may queue, in id order, before checking their dependencies, so of two
 *   workers completing a task's last two dependencies the later one sees the earlier's commit;
 * - the workstreams it may settle, in id order, for the same reason;
 * - the tasks it claims (`FOR UPDATE SKIP LOCKED`), so concurrent claims never wait on or take
 *   the same task.
 *
 * Anything else (a failure or a release, a breaker, a fallback, a quality threshold, a breaker
 * to probe) goes to the general exchange under the exclusive lock: those are rare, and their
 * code reads and writes row by row. Both record exactly the same transitions (outcomes.ts).
 */
import type { ExchangeRequest, ExchangeResult, Settlement } from "../store.js";
import { reconcileWorkstream } from "../sql/lifecycle.js";
import {
  type ClaimRow,
  claimChange,
  claimedTask,
  completionChange,
  fencingRefusal,
  HELD_COLUMNS,
  type HeldRow,
} from "../sql/outcomes.js";
import { rowToDegradation } from "../sql/codec.js";
import { allocateClaims, claimBlocked } from "../sql/resources.js";
import { normalRecord } from "../sql/signals.js";
import { groupByShape, SATISFIED_SQL, type PreparedChange, type Tx } from "../sql/tx.js";
import type { PgStore } from "./PgStore.js";

/** Thrown inside the set-based exchange when the request needs the general one. */
class NeedsGeneral extends Error {}

/** Settles `req`'s outcomes and claims tasks: set-based when it can, else `general()`. */
export async function exchange(
  store: PgStore,
  req: ExchangeRequest,
  general: () => Promise<ExchangeResult>,
): Promise<ExchangeResult> {
  if (req.outcomes.some((o) => o.kind !== "complete")) return general();
  try {
    return await store.write(
      (tx) => settleAndClaim(store, tx, req),
      "shared",
      stateQuery(store.clock.now()),
    );
  } catch (err) {
    if (err instanceof NeedsGeneral) return general();
    throw err;
  }
}

/**
 * The degradation level for handlers; whether a breaker is to move to half-open or is probing
 * (its probes are counted one claim at a time); whether any resources exist. Read as the
 * transaction starts, in the same round trip.
 */
function stateQuery(now: number): string {
  return `SELECT d.*, (SELECT COUNT(*) FROM (SELECT 1 FROM breakers
                    WHERE status = 'half_open' OR (status = 'open' AND forced = 0 AND open_until <= ${Math.trunc(now)})
                    LIMIT 1) AS b) AS probing,
       (SELECT COUNT(*) FROM (SELECT 1 FROM resources LIMIT 1) AS r) AS resources
     FROM (SELECT 1) AS one LEFT JOIN degradation d ON d.id = 'system'`;
}

async function settleAndClaim(
  store: PgStore,
  tx: Tx,
  req: ExchangeRequest,
): Promise<ExchangeResult> {
  const actor = `worker:${req.workerId}`;
  const state = tx.opened[0] as Record<string, unknown> & { probing: number; resources: number };
  if (state.probing > 0) throw new NeedsGeneral();
  const { level, name, quality, capabilities } =
    state.id === null ? normalRecord() : rowToDegradation(state);

  const workstreams = new Set<string>();
  const settled =
    req.outcomes.length > 0 ? await settleCompletions(store, tx, req, actor, workstreams) : [];
  const claimed = req.claim > 0 ? await claim(store, tx, req, tx.now(), state.resources > 0) : [];
  // A workstream this exchange claimed from is still running: no need to look.
  for (const t of claimed) workstreams.delete(t.workstreamId);
  if (workstreams.size > 0) await settleWorkstreams(tx, [...workstreams].sort(), actor);
  return { settled, claimed, degradation: { level, name, quality, capabilities } };
}

/** What the guarded completion returns of each task it completed. */
export type CompletedRow = Pick<HeldRow, "id" | "workstreamId" | "attempts" | "revivals"> & {
  hasDependents: boolean;
};

/**
 * Completes the held tasks in one guarded UPDATE per write shape: a row is written only when the
 * sender still holds its lease and nothing about it needs the general exchange (a breaker to
 * count, fallbacks, a quality threshold). The patch is the same whatever the row, so it is
 * prepared before the rows are known; each record then takes its row's attempt and event. Rows
 * the UPDATE left alone are read: a lease no longer held is refused, anything else goes to the
 * general exchange. A task's second outcome in one batch is judged as after the first.
 */
async function settleCompletions(
  store: PgStore,
  tx: Tx,
  req: ExchangeRequest,
  actor: string,
  workstreams: Set<string>,
): Promise<Settlement[]> {
  const outcomes = req.outcomes as CompleteOutcome[];
  const first = new Map<string, CompleteOutcome>();
  for (const o of outcomes) if (!first.has(o.taskId)) first.set(o.taskId, o);
  const prepared = new Map<CompleteOutcome, PreparedChange>();
  for (const o of first.values()) {
    prepared.set(o, store.prepare(completionChange(standIn(o.taskId), o, null, actor)));
  }
  const done = new Map<string, CompletedRow>();
  for (const batch of groupByShape([...prepared.values()])) {
    const tokens = batch.map((p) => first.get(p.change.id)!.token);
    for (const row of await store.completeHeld(tx, batch, tokens, req.workerId)) {
      done.set(row.id, row);
    }
  }
  const unsettled = [...first.keys()].filter((id) => !done.has(id)).sort();
  const held = new Map<string, HeldRow>();
  if (unsettled.length > 0) {
    for (const row of await tx.all<HeldRow>(
      `SELECT ${HELD_COLUMNS} FROM tasks WHERE id = ANY(?::text[]) ORDER BY id FOR UPDATE`,
      [unsettled],
    )) {
      held.set(row.id, row);
    }
  }
  const settled: Settlement[] = [];
  for (const o of outcomes) {
    const row = done.get(o.taskId);
    if (row && first.get(o.taskId) === o) {
      tx.record({
        ...prepared.get(o)!,
        change: completionChange({ ...standIn(row.id), ...row }, o, null, actor),
      });
      workstreams.add(row.workstreamId);
      settled.push({ taskId: o.taskId, applied: true, status: "completed" });
      continue;
    }
    // A repeat of an outcome this batch applied is judged against the completed task.
    const current: HeldRow | undefined = row
      ? { ...standIn(o.taskId), status: "completed" }
      : held.get(o.taskId);
    const refusal = fencingRefusal(o, current, req.workerId);
    if (!refusal) throw new NeedsGeneral();
    settled.push(refusal);
  }
  const withDependents = [...done.values()].filter((r) => r.hasDependents).map((r) => r.id);
  await queueReadyDependents(store, tx, withDependents.sort(), actor);
  return settled;
}

type CompleteOutcome = Extract<ExchangeRequest["outcomes"][number], { kind: "complete" }>;

/** A held row with only an id: what a completion's patch needs, which no row changes. */
function standIn(id: string): HeldRow {
  return {
    id,
    workstreamId: "",
    status: "running",
    leaseToken: null,
    leaseWorker: null,
    attempts: 1,
    revivals: 0,
    breaker: null,
    handler: "",
    qualityThreshold: null,
    fallbacks: null,
  };
}

/**
 * Settles the workstreams whose last queued or running task just completed. Locked first, then
 * checked: of two workers completing a workstream's last two tasks, the later sees the earlier.
 * After the claim, so that a workstream it claimed from is known to be running still.
 */
async function settleWorkstreams(tx: Tx, ids: string[], actor: string): Promise<void> {
  await tx.all("SELECT id FROM workstreams WHERE id = ANY(?::text[]) ORDER BY id FOR UPDATE", [
    ids,
  ]);
  const settling = await tx.all<{ id: string }>(
    `SELECT w.id FROM workstreams w WHERE w.id = ANY(?::text[])
       AND (w.status <> 'active'
            OR NOT EXISTS (SELECT 1 FROM tasks t WHERE t.workstream_id = w.id AND t.status IN ('queued','running')))
     ORDER BY w.id`,
    [ids],
  );
  for (const { id } of settling) await reconcileWorkstream(tx, id, actor);
}

/** Queues the pending dependents of `completed` whose dependencies are now all satisfied. */
async function queueReadyDependents(
  store: PgStore,
  tx: Tx,
  completed: string[],
  actor: string,
): Promise<void> {
  if (completed.length === 0) return;
  const dependents = await tx.all<{ id: string }>(
    "SELECT DISTINCT task_id AS id FROM task_deps WHERE dep_id = ANY(?::text[])",
    [completed],
  );
  if (dependents.length === 0) return;
  const candidates = await tx.all<{ id: string }>(
    "SELECT id FROM tasks WHERE id = ANY(?::text[]) AND status = 'pending' ORDER BY id FOR UPDATE",
    [dependents.map((d) => d.id)],
  );
  if (candidates.length === 0) return;
  // Checked after the locks: a statement sees what committed before it started.
  const ready = await tx.all<{ id: string; workstreamId: string }>(
    `SELECT c.id, c.workstream_id AS "workstreamId" FROM tasks c
     WHERE c.id = ANY(?::text[]) AND c.status = 'pending'
       AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.dep_id
                       WHERE d.task_id = c.id AND NOT ${SATISFIED_SQL})
     ORDER BY c.id`,
    [candidates.map((c) => c.id)],
  );
  if (ready.length === 0) return;
  const now = tx.now();
  await tx.applyMany(
    ready.map((r) =>
      store.prepare({
        kind: "task",
        id: r.id,
        from: "pending",
        to: "queued",
        patch: { runAt: now },
        event: "task_ready",
        actor,
        workstreamId: r.workstreamId,
      }),
    ),
  );
  tx.wake();
}

/** Claims up to `req.claim` ready tasks no other transaction has locked. */
async function claim(
  store: PgStore,
  tx: Tx,
  req: ExchangeRequest,
  now: number,
  resources: boolean,
) {
  const blocked = resources ? await claimBlocked(tx) : [];
  // Each claimed row takes its fencing token as it is read: a row skipped or not returned
  // leaves a gap in the sequence, which fencing does not mind.
  const q = store.claimQuery(
    req,
    now,
    null,
    req.claim,
    blocked,
    `, nextval('lease_tokens') AS "leaseToken"`,
    " FOR UPDATE SKIP LOCKED",
  );
  if (!resources) {
    // Nothing to allocate: the claim and its row writes are one statement, recorded exactly as
    // claimChange describes them (the conformance suite's replay checks hold it to that).
    const rows = await tx.all<ClaimRow & { leaseToken: number }>(
      `WITH c AS (${q.sql})
       UPDATE tasks AS t SET attempts = c.attempts + 1, lease_token = c."leaseToken",
         lease_worker = ?, lease_expires_at = ?, status = 'running', updated_at = ?
       FROM c WHERE t.id = c.id
       RETURNING c.*`,
      [...q.params, req.workerId, now + req.leaseMs, now],
    );
    for (const r of rows) tx.record(store.prepare(claimChange(r, r.leaseToken, req, now), now));
    return rows.map(({ leaseToken, ...r }) => claimedTask(r, leaseToken, now));
  }
  const rows = await tx.all<ClaimRow & { leaseToken: number }>(q.sql, q.params);
  if (rows.length === 0) return [];
  const { claimed } = await allocateClaims(tx, rows, req.claim);
  await tx.applyMany(
    claimed.map((c) => store.prepare(claimChange(c.task, c.task.leaseToken, req, now, c))),
  );
  return claimed.map(({ task: { leaseToken, ...r } }) => claimedTask(r, leaseToken, now));
}
