/**
 * What the monitor derives from the log and records as state: the system's degradation level and
 * the failure patterns it detected. Both are entities with transitions, so every process sees
 * them and they survive restarts and restores.
 */
import { MendError } from "../../errors.js";
import type { DegradationRecord, PatternRecord } from "../../model/records.js";
import { NORMAL_DEGRADATION } from "../../recovery/degrade.js";
import type { DegradationView } from "../store.js";
import { rowToDegradation, rowToPattern } from "./codec.js";
import type { Queryable } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";

/** The one degradation row's id. */
const SYSTEM = "system";

/** The degradation row, or null when no level was ever recorded. */
async function storedDegradation(q: Queryable): Promise<DegradationRecord | null> {
  const row = await q.get("SELECT * FROM degradation WHERE id = ?", [SYSTEM]);
  return row ? rowToDegradation(row) : null;
}

/** Level 0 as a record: what the system is before any level was recorded. */
export function normalRecord(): DegradationRecord {
  return {
    id: SYSTEM,
    status: "normal",
    ...NORMAL_DEGRADATION,
    capabilities: {},
    createdAt: 0,
    updatedAt: 0,
  };
}

/** The stored degradation level, or normal when none was ever recorded. */
export async function readDegradation(q: Queryable): Promise<DegradationRecord> {
  return (await storedDegradation(q)) ?? normalRecord();
}

/** Records a level change as a transition; null when `view` is the current level. */
export function setDegradation(
  store: SqlStore,
  view: DegradationView,
  reason: string,
  actor: string,
): Promise<DegradationRecord | null> {
  return store.write(async (tx) => {
    const stored = await storedDegradation(tx);
    const exists = stored !== null;
    const current = stored ?? normalRecord();
    if (exists ? current.level === view.level && current.name === view.name : view.level === 0) {
      return null;
    }
    const to = view.level === 0 ? "normal" : "degraded";
    await tx.transition({
      kind: "degradation",
      id: SYSTEM,
      from: exists ? current.status : null,
      to,
      patch: { ...(exists ? {} : { id: SYSTEM, createdAt: tx.now() }), ...view },
      event: to === "normal" ? "degradation_recovered" : "degradation_changed",
      actor,
      workstreamId: null,
      detail: { from: { level: current.level, name: current.name }, reason },
    });
    return readDegradation(tx);
  });
}

/** Records the patterns not recorded yet (by id) as `active`; returns those. */
export function recordPatterns(
  store: SqlStore,
  patterns: Omit<PatternRecord, "status" | "createdAt" | "updatedAt">[],
): Promise<PatternRecord[]> {
  return store.write(async (tx) => {
    const fresh: PatternRecord[] = [];
    for (const p of patterns) {
      if ((await tx.get("SELECT 1 AS n FROM patterns WHERE id = ?", [p.id])) !== undefined) {
        continue;
      }
      await tx.transition({
        kind: "pattern",
        id: p.id,
        from: null,
        to: "active",
        patch: { ...p, createdAt: tx.now() },
        event: "pattern_detected",
        actor: "monitor",
        workstreamId: null,
        detail: { message: p.message },
      });
      fresh.push(rowToPattern((await tx.get("SELECT * FROM patterns WHERE id = ?", [p.id]))!));
    }
    return fresh;
  });
}

/** Patterns in `status` (all when omitted), newest first. */
export async function listPatterns(
  q: Queryable,
  status?: PatternRecord["status"],
): Promise<PatternRecord[]> {
  const rows =
    status === undefined
      ? await q.all("SELECT * FROM patterns ORDER BY detected_at DESC")
      : await q.all("SELECT * FROM patterns WHERE status = ? ORDER BY detected_at DESC", [status]);
  return rows.map(rowToPattern);
}

/** Settles an active pattern. */
export async function judgePattern(
  store: SqlStore,
  id: string,
  verdict: "confirmed" | "false_positive",
  reason: string,
): Promise<void> {
  await store.write(async (tx) => {
    const row = await tx.get<{ status: string }>("SELECT status FROM patterns WHERE id = ?", [id]);
    if (!row) throw new MendError("not_found", `no pattern ${id}`, { pattern: id });
    await tx.transition({
      kind: "pattern",
      id,
      from: row.status,
      to: verdict,
      patch: {},
      event: verdict === "confirmed" ? "pattern_confirmed" : "pattern_false_positive",
      actor: "monitor",
      workstreamId: null,
      detail: { reason },
    });
  });
}
