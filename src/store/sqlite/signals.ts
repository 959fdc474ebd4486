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
import type { SqliteStore } from "./SqliteStore.js";

/** The one degradation row's id. */
const SYSTEM = "system";

/** The degradation row, or null when no level was ever recorded. */
function storedDegradation(store: SqliteStore): DegradationRecord | null {
  const row = store.stmt("SELECT * FROM degradation WHERE id = ?").get(SYSTEM);
  return row ? rowToDegradation(row as Record<string, unknown>) : null;
}

/** Level 0 as a record: what the system is before any level was recorded. */
function normalRecord(): DegradationRecord {
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
export function readDegradation(store: SqliteStore): DegradationRecord {
  return storedDegradation(store) ?? normalRecord();
}

/** Records a level change as a transition; null when `view` is the current level. */
export function setDegradation(
  store: SqliteStore,
  view: DegradationView,
  reason: string,
  actor: string,
): DegradationRecord | null {
  return store.write(() => {
    const stored = storedDegradation(store);
    const exists = stored !== null;
    const current = stored ?? normalRecord();
    if (exists ? current.level === view.level && current.name === view.name : view.level === 0) {
      return null;
    }
    const to = view.level === 0 ? "normal" : "degraded";
    store.transition({
      kind: "degradation",
      id: SYSTEM,
      from: exists ? current.status : null,
      to,
      patch: { ...(exists ? {} : { id: SYSTEM, createdAt: store.clock.now() }), ...view },
      event: to === "normal" ? "degradation_recovered" : "degradation_changed",
      actor,
      workstreamId: null,
      detail: { from: { level: current.level, name: current.name }, reason },
    });
    return readDegradation(store);
  });
}

/** Records the patterns not recorded yet (by id) as `active`; returns those. */
export function recordPatterns(
  store: SqliteStore,
  patterns: Omit<PatternRecord, "status" | "createdAt" | "updatedAt">[],
): PatternRecord[] {
  return store.write(() => {
    const fresh: PatternRecord[] = [];
    const exists = store.stmt("SELECT 1 FROM patterns WHERE id = ?");
    for (const p of patterns) {
      if (exists.get(p.id) !== undefined) continue;
      store.transition({
        kind: "pattern",
        id: p.id,
        from: null,
        to: "active",
        patch: { ...p, createdAt: store.clock.now() },
        event: "pattern_detected",
        actor: "monitor",
        workstreamId: null,
        detail: { message: p.message },
      });
      fresh.push(
        rowToPattern(
          store.stmt("SELECT * FROM patterns WHERE id = ?").get(p.id) as Record<string, unknown>,
        ),
      );
    }
    return fresh;
  });
}

/** Patterns in `status` (all when omitted), newest first. */
export function listPatterns(
  store: SqliteStore,
  status?: PatternRecord["status"],
): PatternRecord[] {
  const rows = (
    status === undefined
      ? store.stmt("SELECT * FROM patterns ORDER BY detected_at DESC").all()
      : store.stmt("SELECT * FROM patterns WHERE status = ? ORDER BY detected_at DESC").all(status)
  ) as Record<string, unknown>[];
  return rows.map(rowToPattern);
}

/** Settles an active pattern. */
export function judgePattern(
  store: SqliteStore,
  id: string,
  verdict: "confirmed" | "false_positive",
  reason: string,
): void {
  store.write(() => {
    const row = store.stmt("SELECT status FROM patterns WHERE id = ?").get(id) as
      { status: string } | undefined;
    if (!row) throw new MendError("not_found", `no pattern ${id}`, { pattern: id });
    store.transition({
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
