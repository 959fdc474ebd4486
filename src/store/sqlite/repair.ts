import { isDeepStrictEqual } from "node:util";
import type { Failure } from "../../model/failure.js";
import { dependencyRows } from "../../model/ids.js";
import type { TaskRecord } from "../../model/records.js";
import { ENTITY_KINDS, type EntityKind } from "../../model/states.js";
import { restoredLiveness, SNAPSHOT_KEYS } from "../replay.js";
import type { RepairOptions, RepairOutcome } from "../store.js";
import { ENTITY_TABLES, encodeField } from "./codec.js";
import type { SqliteStore } from "./SqliteStore.js";

/** Rolls a dry run back once it has computed everything. */
class DryRun extends Error {
  constructor(readonly outcome: RepairOutcome) {
    super("dry run");
  }
}

/**
 * Fixes what can be derived, in one write transaction: rows that disagree with the log are
 * rewritten from it, running tasks whose lease is missing or long expired go through the retry
 * policy as `worker_lost`, and every workstream's status is recomputed from its tasks. A dry run
 * does all of it and rolls back, so it reports exactly what a real run would do. Call only when
 * the chain verifies: a log that is not intact is no basis for rewriting state.
 */
export function repairState(store: SqliteStore, options: RepairOptions): RepairOutcome {
  try {
    return store.write(() => {
      const outcome = rewriteFromLog(store);
      outcome.requeued = requeueLeaseless(store, options.planner, options.leaseGraceMs);
      outcome.workstreams = reconcileAll(store, options.who.actor);
      const changed =
        outcome.rows.length + outcome.requeued.length + outcome.workstreams.length > 0;
      if (options.dryRun) throw new DryRun(outcome);
      if (changed) store.intervention(options.who, "store", null, outcome);
      return outcome;
    });
  } catch (err) {
    if (err instanceof DryRun) return err.outcome;
    throw err;
  }
}

function rewriteFromLog(store: SqliteStore): RepairOutcome {
  const stored = store.readState();
  const logged = store.replayLog();
  const outcome: RepairOutcome = { rows: [], requeued: [], workstreams: [], unexplained: [] };
  const now = store.clock.now();
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
      writeRow(store, kind, record, current !== undefined, now);
    }
    for (const id of Object.keys(have)) {
      if (!(id in want)) outcome.unexplained.push({ kind, id });
    }
  }
  return outcome;
}

/** Writes one entity's row as the log has it; liveness the log lacks is given from `now`. */
function writeRow(
  store: SqliteStore,
  kind: EntityKind,
  record: Record<string, unknown>,
  exists: boolean,
  now: number,
): void {
  const { table, columns } = ENTITY_TABLES[kind];
  // A missing row's running task gets a lease that ends now: the monitor sweeps it at once.
  const full = exists ? record : { ...record, ...restoredLiveness(kind, record, now, now) };
  const fields = Object.keys(full).filter((f) => columns[f]);
  const values = fields.map((f) => encodeField(columns[f]![1], full[f]));
  if (exists) {
    store
      .stmt(
        `UPDATE ${table} SET ${fields.map((f) => `${columns[f]![0]} = ?`).join(", ")} WHERE id = ?`,
      )
      .run(...values, record.id);
  } else {
    store
      .stmt(
        `INSERT INTO ${table} (${fields.map((f) => columns[f]![0]).join(", ")}) VALUES (${fields.map(() => "?").join(", ")})`,
      )
      .run(...values);
  }
  if (kind === "task") {
    const t = record as unknown as TaskRecord;
    store.stmt("DELETE FROM task_deps WHERE task_id = ?").run(t.id);
    const dep = store.stmt("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)");
    for (const row of dependencyRows(t.workstreamId, t.id, t.deps)) dep.run(row);
  }
}

/** Running tasks whose lease is missing or expired longer ago than the monitor would allow. */
function requeueLeaseless(
  store: SqliteStore,
  planner: RepairOptions["planner"],
  graceMs: number,
): string[] {
  const cutoff = store.clock.now() - graceMs;
  const ids = store
    .stmt(
      `SELECT id FROM tasks WHERE status = 'running'
         AND (lease_token IS NULL OR lease_worker IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?)`,
    )
    .all(cutoff) as { id: string }[];
  for (const { id } of ids) {
    const row = store.requireTask(id);
    const failure: Failure = {
      category: "worker_lost",
      recoverable: true,
      message: `repair: task was running without a live lease (worker ${row.leaseWorker ?? "unknown"})`,
    };
    store.applyFailure(row, failure, planner, "repair");
  }
  return ids.map((r) => r.id);
}

function reconcileAll(store: SqliteStore, actor: string): RepairOutcome["workstreams"] {
  const before = store.stmt("SELECT id, status FROM workstreams").all() as {
    id: string;
    status: string;
  }[];
  const changed: RepairOutcome["workstreams"] = [];
  for (const w of before) {
    store.reconcileWorkstream(w.id, actor);
    const after = store.getWorkstreamRow(w.id)!.status;
    if (after !== w.status) changed.push({ id: w.id, from: w.status, to: after });
  }
  return changed;
}
