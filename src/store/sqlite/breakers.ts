/**
 * Circuit breakers on the SQLite store. A breaker is a row every worker reads and moves inside
 * its own transactions, so one worker's failures open it for all. Status changes are transitions
 * (with events); the counters between them are liveness, updated in place like a heartbeat.
 */
import { isDeepStrictEqual } from "node:util";
import { MendError } from "../../errors.js";
import type { BreakerRecord } from "../../model/records.js";
import type { BreakerConfig } from "../../model/spec.js";
import type { BreakerStatus } from "../../model/states.js";
import type { EventName } from "../../observe/events.js";
import { DEFAULT_BREAKER } from "../../recovery/breaker.js";
import {
  type BreakerChange,
  type BreakerState,
  closedState,
  dueForProbe,
  halfOpenState,
  openState,
  recordOutcome,
} from "../../recovery/breaker.js";
import type { Actor } from "../store.js";
import { rowToBreaker } from "./codec.js";
import type { SqliteStore } from "./SqliteStore.js";

/** What a person can do to a breaker from the CLI or API. */
export type BreakerAction = "open" | "close" | "reset";

const CHANGE_EVENTS: Record<BreakerStatus, EventName> = {
  open: "breaker_opened",
  half_open: "breaker_half_opened",
  closed: "breaker_closed",
};

/** A breaker's row, or null. */
export function getBreakerRow(store: SqliteStore, name: string): BreakerRecord | null {
  const row = store.stmt("SELECT * FROM breakers WHERE id = ?").get(name);
  return row ? rowToBreaker(row as Record<string, unknown>) : null;
}

/** The breakers letting probes through now. */
export function halfOpenBreakers(store: SqliteStore): BreakerRecord[] {
  return (
    store.stmt("SELECT * FROM breakers WHERE status = 'half_open'").all() as Record<
      string,
      unknown
    >[]
  ).map(rowToBreaker);
}

/**
 * A half-open breaker's probes in flight: its tasks claimed since it became half-open. Tasks that
 * started before it opened are not probes (they may belong to a dead worker, awaiting its lease).
 */
export function runningProbes(store: SqliteStore, breaker: BreakerRecord): number {
  const row = store
    .stmt(
      "SELECT COUNT(*) AS n FROM tasks WHERE breaker = ? AND status = 'running' AND updated_at >= ?",
    )
    .get(breaker.id, breaker.updatedAt) as { n: number };
  return row.n;
}

/** Every breaker, by name. */
export function listBreakerRows(store: SqliteStore): BreakerRecord[] {
  return (store.stmt("SELECT * FROM breakers ORDER BY id").all() as Record<string, unknown>[]).map(
    rowToBreaker,
  );
}

/**
 * Creates the breakers a submission names. Settings written in the definition replace a
 * breaker's current ones (with an event), whatever its state; a breaker named without settings
 * keeps what it has.
 */
export function ensureBreakers(
  store: SqliteStore,
  configs: Record<string, BreakerConfig | null>,
  actor: string,
): void {
  for (const [name, config] of Object.entries(configs)) {
    const row = getBreakerRow(store, name);
    if (!row) {
      store.transition({
        kind: "breaker",
        id: name,
        from: null,
        to: "closed",
        patch: {
          id: name,
          config: config ?? DEFAULT_BREAKER,
          ...closedState(null),
          createdAt: now(store),
        },
        event: "breaker_created",
        actor,
        workstreamId: null,
      });
    } else if (config && !isDeepStrictEqual(config, row.config)) {
      store.transition({
        kind: "breaker",
        id: name,
        from: row.status,
        to: row.status,
        patch: { config },
        event: "breaker_configured",
        actor,
        workstreamId: null,
        detail: { from: row.config, to: config },
      });
    }
  }
}

/**
 * Feeds one finished call of a task guarded by `name` to its breaker: a status change is a
 * transition, anything else only updates the counters.
 */
export function recordBreakerOutcome(
  store: SqliteStore,
  name: string,
  ok: boolean,
  actor: string,
  taskId: string,
): void {
  const row = getBreakerRow(store, name);
  if (!row) return;
  const step = recordOutcome(row.config, row, ok, now(store));
  if (step.change) {
    changeStatus(store, row, step.state, step.change, actor, { task: taskId });
  } else if (step.state !== row) {
    store
      .stmt("UPDATE breakers SET failures = ?, successes = ?, window = ? WHERE id = ?")
      .run(step.state.failures, step.state.successes, JSON.stringify(step.state.window), name);
  }
}

/** Open breakers whose open time is up. */
function dueBreakers(store: SqliteStore): Record<string, unknown>[] {
  return store
    .stmt("SELECT * FROM breakers WHERE status = 'open' AND forced = 0 AND open_until <= ?")
    .all(now(store)) as Record<string, unknown>[];
}

/** Whether {@link openDueProbes} has anything to do (read without the write lock). */
export function anyDueForProbe(store: SqliteStore): boolean {
  return dueBreakers(store).length > 0;
}

/** Moves every open breaker whose time is up to half-open, so probes may start. */
export function openDueProbes(store: SqliteStore, actor: string): BreakerRecord[] {
  const due = dueBreakers(store);
  return due.map((r) => {
    const row = rowToBreaker(r);
    if (!dueForProbe(row, now(store))) return row;
    const change = { to: "half_open" as const, reason: "open time is up: probing" };
    return changeStatus(store, row, halfOpenState(row), change, actor, null);
  });
}

/**
 * Opens a closed breaker early, as the monitor does when a failure pattern points at its
 * dependency; it is probed again after its usual open time. Null when it was not closed.
 */
export function tripBreaker(
  store: SqliteStore,
  name: string,
  reason: string,
): BreakerRecord | null {
  return store.write(() => {
    const row = getBreakerRow(store, name);
    if (row?.status !== "closed") return null;
    const state = openState(row.config, now(store));
    return changeStatus(store, row, state, { to: "open", reason }, "monitor", null);
  });
}

/**
 * A person's action on a breaker: `open` forces it open until someone closes it, `close` closes
 * it, `reset` closes it and clears its counters (also when it is already closed). Logged as an
 * intervention. A breaker no task has named yet is created with the default settings.
 */
export function controlBreaker(
  store: SqliteStore,
  name: string,
  action: BreakerAction,
  who: Actor,
): BreakerRecord {
  return store.write(() => {
    let row = getBreakerRow(store, name);
    if (!row && action !== "open") {
      throw new MendError("not_found", `no breaker named "${name}"`, { breaker: name });
    }
    const by = `by a person${who.reason ? `: ${who.reason}` : ""}`;
    if (!row) {
      const state = openState(DEFAULT_BREAKER, now(store), true);
      store.transition({
        kind: "breaker",
        id: name,
        from: null,
        to: "open",
        patch: { id: name, config: DEFAULT_BREAKER, ...state, createdAt: now(store) },
        event: "breaker_opened",
        actor: who.actor,
        workstreamId: null,
        detail: { reason: `opened ${by}` },
      });
      row = getBreakerRow(store, name)!;
      store.intervention(who, `breaker:${name}`, null, pick(row));
      return row;
    }
    const before = pick(row);
    if (action === "close" && row.status === "closed") {
      throw new MendError(
        "refused",
        `breaker "${name}" is already closed; use reset to clear its counters`,
        { breaker: name },
      );
    }
    if (action === "open") {
      const state = openState(row.config, now(store), true);
      changeStatus(store, row, state, { to: "open", reason: `opened ${by}` }, who.actor);
    } else {
      const verb = action === "close" ? "closed" : "reset";
      const change = { to: "closed" as const, reason: `${verb} ${by}` };
      const event = action === "reset" ? "breaker_reset" : undefined;
      changeStatus(store, row, closedState(now(store)), change, who.actor, null, event);
    }
    const after = getBreakerRow(store, name)!;
    store.intervention(who, `breaker:${name}`, before, pick(after));
    store.wake();
    return after;
  });
}

function changeStatus(
  store: SqliteStore,
  row: BreakerRecord,
  state: BreakerState,
  change: BreakerChange,
  actor: string,
  detail: Record<string, unknown> | null = null,
  event: EventName = CHANGE_EVENTS[change.to],
): BreakerRecord {
  const { status: _, ...patch } = state;
  store.transition({
    kind: "breaker",
    id: row.id,
    from: row.status,
    to: change.to,
    patch,
    event,
    actor,
    workstreamId: null,
    detail: { reason: change.reason, ...detail },
  });
  // Tasks held back by the breaker may run (half-open probes, or all of them once closed).
  if (change.to !== "open") store.wake();
  return { ...row, ...state, status: change.to };
}

function pick(b: BreakerRecord) {
  return { status: b.status, openUntil: b.openUntil, forced: b.forced, failures: b.failures };
}

function now(store: SqliteStore): number {
  return store.clock.now();
}
