import { isDeepStrictEqual } from "node:util";
import type { Failure } from "../../model/failure.js";
import { dependencyRows } from "../../model/ids.js";
import type { TaskRecord } from "../../model/records.js";
import { ENTITY_KINDS, type EntityKind } from "../../model/states.js";
import { restoredLiveness, SNAPSHOT_KEYS } from "../replay.js";
import type { RepairOptions, RepairOutcome } from "../store.js";
import { ENTITY_TABLES, encodeField } from "./codec.js";
import { applyFailure, reconcileWorkstream } from "./lifecycle.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/**
 * Fixes what can be derived, in one write transaction: rows that disagree with the log are
 * rewritten from it, running tasks whose lease is missing or long expired go through the retry
 * policy as `worker_lost`, and every workstream's status is recomputed from its tasks. A dry run
 * does all of it and rolls back, so it reports exactly what a real run would do. Call only when
 * the chain verifies: a log that is not intact is no basis for rewriting state.
 */
export function repairState(store: SqlStore, options: RepairOptions): Promise<RepairOutcome> {
  const run = async (tx: Tx): Promise<RepairOutcome> => {
    const outcome = await rewriteFromLog(tx);
    outcome.requeued = await requeueLeaseless(tx, options.planner, options.leaseGraceMs);
    outcome.workstreams = await reconcileAll(tx, options.who.actor);
    const changed = outcome.rows.length + outcome.requeued.length + outcome.workstreams.length > 0;
    if (!options.dryRun && changed) await tx.intervention(options.who, "store", null, outcome);
    return outcome;
  };
  return options.dryRun ? store.dryRun(run) : store.write(run);
}

async function rewriteFromLog(tx: Tx): Promise<RepairOutcome> {
  const stored = await tx.store.readState(tx);
  const logged = await tx.store.replayLog(tx);
  const outcome: RepairOutcome = { rows: [], requeued: [], workstreams: [], unexplained: [] };
  const now = tx.now();
  for (const kind of ENTITY_KINDS) {
    const key = SNAPSHOT_KEYS[kind];
    const want = logged[key] as Record<string, Record<string, unknown>>;
    const have = stored[key] as Record<string, Record<string, unknown>>;
    for (const [id, record] of Object.entries(want)) {
      const current = have[id];
      const fields = current
        ? Object.keys(record).filter((f) => !isDeepStrictEqual(record[f], current[f]))
        : ["*"];
      if (fields.length === 0) continue;
      outcome.rows.push({ kind, id, fields });
      await writeRow(tx, kind, record, current !== undefined, now);
    }
    for (const id of Object.keys(have)) {
      if (!(id in want)) outcome.unexplained.push({ kind, id });
    }
  }
  return outcome;
}

/** Writes one entity's row as the log has it; liveness the log lacks is given from `now`. */
async function writeRow(
  tx: Tx,
  kind: EntityKind,
  record: Record<string, unknown>,
  exists: boolean,
  now: number,
): Promise<void> {
  const { table, columns } = ENTITY_TABLES[kind];
  // A missing row's running task gets a lease that ends now: the monitor sweeps it at once.
  const full = exists ? record : { ...record, ...restoredLiveness(kind, record, now, now) };
  const fields = Object.keys(full).filter((f) => columns[f]);
  const values = fields.map((f) => encodeField(columns[f]![1], full[f]));
  if (exists) {
    await tx.run(
      `UPDATE ${table} SET ${fields.map((f) => `"${columns[f]![0]}" = ?`).join(", ")} WHERE id = ?`,
      [...values, record.id],
    );
  } else {
    await tx.run(
      `INSERT INTO ${table} (${fields.map((f) => `"${columns[f]![0]}"`).join(", ")}) VALUES (${fields.map(() => "?").join(", ")})`,
      values,
    );
  }
  if (kind === "task") {
    const t = record as unknown as TaskRecord;
    await tx.run("DELETE FROM task_deps WHERE task_id = ?", [t.id]);
    for (const row of dependencyRows(t.workstreamId, t.id, t.deps)) {
      await tx.run("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)", row);
    }
  }
}

/** Running tasks whose lease is missing or expired longer ago than the monitor would allow. */
async function requeueLeaseless(
  tx: Tx,
  planner: RepairOptions["planner"],
  graceMs: number,
): Promise<string[]> {
  const cutoff = tx.now() - graceMs;
  const ids = await tx.all<{ id: string }>(
    `SELECT id FROM tasks WHERE status = 'running'
       AND (lease_token IS NULL OR lease_worker IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?)`,
    [cutoff],
  );
  for (const { id } of ids) {
    const row = await tx.requireTask(id);
    const failure: Failure = {
      category: "worker_lost",
      recoverable: true,
      message: `repair: task was running without a live lease (worker ${row.leaseWorker ?? "unknown"})`,
    };
    await applyFailure(tx, row, failure, planner, "repair");
  }
  return ids.map((r) => r.id);
}

async function reconcileAll(tx: Tx, actor: string): Promise<RepairOutcome["workstreams"]> {
  // In creation order (SQLite's scan order; PostgreSQL has no order without one).
  const before = await tx.all<{ id: string; status: string }>(
    "SELECT id, status FROM workstreams ORDER BY rowid",
  );
  const changed: RepairOutcome["workstreams"] = [];
  for (const w of before) {
    await reconcileWorkstream(tx, w.id, actor);
    const after = (await tx.getWorkstreamRow(w.id))!.status;
    if (after !== w.status) changed.push({ id: w.id, from: w.status, to: after });
  }
  return changed;
}
