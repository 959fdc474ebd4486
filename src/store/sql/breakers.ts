/**
 * Circuit breakers on the SQL stores. A breaker is a row every worker reads and moves inside
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
import type { Queryable, Row } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/** What a person can do to a breaker from the CLI or API. */
export type BreakerAction = "open" | "close" | "reset";

const CHANGE_EVENTS: Record<BreakerStatus, EventName> = {
  open: "breaker_opened",
  half_open: "breaker_half_opened",
  closed: "breaker_closed",
};

/** A breaker's row, or null. */
export async function getBreakerRow(q: Queryable, name: string): Promise<BreakerRecord | null> {
  const row = await q.get("SELECT * FROM breakers WHERE id = ?", [name]);
  return row ? rowToBreaker(row) : null;
}

/** The breakers letting probes through now. */
export async function halfOpenBreakers(q: Queryable): Promise<BreakerRecord[]> {
  return (await q.all("SELECT * FROM breakers WHERE status = 'half_open'")).map(rowToBreaker);
}

/**
 * A half-open breaker's probes in flight: its tasks claimed since it became half-open. Tasks that
 * started before it opened are not probes (they may belong to a dead worker, awaiting its lease).
 */
export async function runningProbes(q: Queryable, breaker: BreakerRecord): Promise<number> {
  const row = await q.get<{ n: number }>(
    "SELECT COUNT(*) AS n FROM tasks WHERE breaker = ? AND status = 'running' AND updated_at >= ?",
    [breaker.id, breaker.updatedAt],
  );
  return row!.n;
}

/** Every breaker, by name. */
export async function listBreakerRows(q: Queryable): Promise<BreakerRecord[]> {
  return (await q.all("SELECT * FROM breakers ORDER BY id")).map(rowToBreaker);
}

/**
 * Creates the breakers a submission names. Settings written in the definition replace a
 * breaker's current ones (with an event), whatever its state; a breaker named without settings
 * keeps what it has.
 */
export async function ensureBreakers(
  tx: Tx,
  configs: Record<string, BreakerConfig | null>,
  actor: string,
): Promise<void> {
  for (const [name, config] of Object.entries(configs)) {
    const row = await getBreakerRow(tx, name);
    if (!row) {
      await tx.transition({
        kind: "breaker",
        id: name,
        from: null,
        to: "closed",
        patch: {
          id: name,
          config: config ?? DEFAULT_BREAKER,
          ...closedState(null),
          createdAt: tx.now(),
        },
        event: "breaker_created",
        actor,
        workstreamId: null,
      });
    } else if (config && !isDeepStrictEqual(config, row.config)) {
      await tx.transition({
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
export async function recordBreakerOutcome(
  tx: Tx,
  name: string,
  ok: boolean,
  actor: string,
  taskId: string,
): Promise<void> {
  const row = await getBreakerRow(tx, name);
  if (!row) return;
  const step = recordOutcome(row.config, row, ok, tx.now());
  if (step.change) {
    await changeStatus(tx, row, step.state, step.change, actor, { task: taskId });
  } else if (step.state !== row) {
    // `window` is a reserved word in PostgreSQL: quoted, as SQLite accepts too.
    await tx.run(`UPDATE breakers SET failures = ?, successes = ?, "window" = ? WHERE id = ?`, [
      step.state.failures,
      step.state.successes,
      JSON.stringify(step.state.window),
      name,
    ]);
  }
}

/** Open breakers whose open time is up. */
function dueBreakers(q: Queryable, now: number): Promise<Row[]> {
  return q.all("SELECT * FROM breakers WHERE status = 'open' AND forced = 0 AND open_until <= ?", [
    now,
  ]);
}

/** Whether {@link openDueProbes} has anything to do (read without the write lock). */
export async function anyDueForProbe(store: SqlStore): Promise<boolean> {
  return (await dueBreakers(store.q, store.clock.now())).length > 0;
}

/** Moves every open breaker whose time is up to half-open, so probes may start. */
export async function openDueProbes(tx: Tx, actor: string): Promise<BreakerRecord[]> {
  const due = await dueBreakers(tx, tx.now());
  const moved: BreakerRecord[] = [];
  for (const r of due) {
    const row = rowToBreaker(r);
    if (!dueForProbe(row, tx.now())) {
      moved.push(row);
      continue;
    }
    const change = { to: "half_open" as const, reason: "open time is up: probing" };
    moved.push(await changeStatus(tx, row, halfOpenState(row), change, actor, null));
  }
  return moved;
}

/**
 * Opens a closed breaker early, as the monitor does when a failure pattern points at its
 * dependency; it is probed again after its usual open time. Null when it was not closed.
 */
export function tripBreaker(
  store: SqlStore,
  name: string,
  reason: string,
): Promise<BreakerRecord | null> {
  return store.write(async (tx) => {
    const row = await getBreakerRow(tx, name);
    if (row?.status !== "closed") return null;
    const state = openState(row.config, tx.now());
    return changeStatus(tx, row, state, { to: "open", reason }, "monitor", null);
  });
}

/**
 * A person's action on a breaker: `open` forces it open until someone closes it, `close` closes
 * it, `reset` closes it and clears its counters (also when it is already closed). Logged as an
 * intervention. A breaker no task has named yet is created with the default settings.
 */
export function controlBreaker(
  store: SqlStore,
  name: string,
  action: BreakerAction,
  who: Actor,
): Promise<BreakerRecord> {
  return store.write(async (tx) => {
    let row = await getBreakerRow(tx, name);
    if (!row && action !== "open") {
      throw new MendError("not_found", `no breaker named "${name}"`, { breaker: name });
    }
    const by = `by a person${who.reason ? `: ${who.reason}` : ""}`;
    if (!row) {
      const state = openState(DEFAULT_BREAKER, tx.now(), true);
      await tx.transition({
        kind: "breaker",
        id: name,
        from: null,
        to: "open",
        patch: { id: name, config: DEFAULT_BREAKER, ...state, createdAt: tx.now() },
        event: "breaker_opened",
        actor: who.actor,
        workstreamId: null,
        detail: { reason: `opened ${by}` },
      });
      row = (await getBreakerRow(tx, name))!;
      await tx.intervention(who, `breaker:${name}`, null, pick(row));
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
      const state = openState(row.config, tx.now(), true);
      await changeStatus(tx, row, state, { to: "open", reason: `opened ${by}` }, who.actor);
    } else {
      const verb = action === "close" ? "closed" : "reset";
      const change = { to: "closed" as const, reason: `${verb} ${by}` };
      const event = action === "reset" ? "breaker_reset" : undefined;
      await changeStatus(tx, row, closedState(tx.now()), change, who.actor, null, event);
    }
    const after = (await getBreakerRow(tx, name))!;
    await tx.intervention(who, `breaker:${name}`, before, pick(after));
    tx.wake();
    return after;
  });
}

async function changeStatus(
  tx: Tx,
  row: BreakerRecord,
  state: BreakerState,
  change: BreakerChange,
  actor: string,
  detail: Record<string, unknown> | null = null,
  event: EventName = CHANGE_EVENTS[change.to],
): Promise<BreakerRecord> {
  const { status: _, ...patch } = state;
  await tx.transition({
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
  if (change.to !== "open") tx.wake();
  return { ...row, ...state, status: change.to };
}

function pick(b: BreakerRecord) {
  return { status: b.status, openUntil: b.openUntil, forced: b.forced, failures: b.failures };
}
