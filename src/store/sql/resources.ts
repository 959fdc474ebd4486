/**
 * Resources: named capacities tasks hold while they run. A running task's `held` lists what its
 * attempt holds; a resource's holders are the running tasks that list it, so a hold cannot
 * outlive the attempt (it ends in the same transition) and nothing else needs releasing after a
 * crash. Claims take holds atomically: within the claim's transaction, after locking the rows of
 * the resources they count (PostgreSQL; SQLite has one writer anyway).
 */
import { MendError } from "../../errors.js";
import type { ResourceRecord } from "../../model/records.js";
import type { ResourceConfig } from "../../model/spec.js";
import type { ResourceStatus } from "../../model/states.js";
import type { EventName } from "../../observe/events.js";
import type { Actor, ResourceView } from "../store.js";
import { rowToResource } from "./codec.js";
import type { Queryable } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/** Holders of a resource as a claim sees them. */
export interface ResourceUse {
  status: ResourceStatus;
  maxHolders: number;
  holders: number;
}

/** A task that may be claimed, and what it needs. */
export interface Candidate {
  id: string;
  resources: string[][] | null;
}

/** A need met by an alternative, and why the preferred resource was passed over. */
export interface Reallocation {
  need: string[];
  to: string;
  because: string;
}

/** What a claim may take: the candidates it can start, with the resources each holds. */
export interface Allocation<C extends Candidate> {
  claimed: { task: C; held: string[] | null; reallocated: Reallocation[] }[];
  /** Candidates left waiting, with the resource they wait for. */
  waiting: { task: C; on: string }[];
}

/**
 * Gives candidates, in claim order (priority, then age), the resources they need, until `want`
 * are claimed: each need takes the first of its resources that is not unavailable and has a free
 * slot. A task whose needs cannot all be met now waits and takes nothing. Pure: `use` is updated
 * as holds are taken.
 */
export function allocate<C extends Candidate>(
  candidates: readonly C[],
  use: Map<string, ResourceUse>,
  want: number,
): Allocation<C> {
  const out: Allocation<C> = { claimed: [], waiting: [] };
  for (const task of candidates) {
    if (out.claimed.length === want) break;
    if (task.resources === null) {
      out.claimed.push({ task, held: null, reallocated: [] });
      continue;
    }
    const held: string[] = [];
    const reallocated: Reallocation[] = [];
    let missing: string | null = null;
    for (const need of task.resources) {
      // Holds this task already chose count too: two needs may name the same resource.
      const chosen = need.find((r) => {
        const u = use.get(r);
        const mine = held.filter((h) => h === r).length;
        return u !== undefined && u.status !== "unavailable" && u.holders + mine < u.maxHolders;
      });
      if (chosen === undefined) {
        missing = need[0]!;
        break;
      }
      held.push(chosen);
      if (chosen !== need[0]) {
        const first = use.get(need[0]!);
        reallocated.push({
          need,
          to: chosen,
          because: `${need[0]} is ${first?.status === "unavailable" ? "unavailable" : "at capacity"}`,
        });
      }
    }
    if (missing !== null) {
      out.waiting.push({ task, on: missing });
      continue;
    }
    for (const r of held) use.get(r)!.holders++;
    out.claimed.push({ task, held, reallocated });
  }
  return out;
}

/**
 * Each resource's status, limit and holders now (all of them, or `ids`). On PostgreSQL the
 * caller locks the rows first when it will take holds on the counts.
 */
export async function resourceUse(
  q: Queryable,
  ids?: readonly string[],
): Promise<Map<string, ResourceUse>> {
  const use = new Map<string, ResourceUse>();
  const rows = await q.all<{ id: string; status: ResourceStatus; max_holders: number }>(
    "SELECT id, status, max_holders FROM resources",
  );
  const wanted = ids ? new Set(ids) : null;
  for (const r of rows) {
    if (wanted && !wanted.has(r.id)) continue;
    use.set(r.id, { status: r.status, maxHolders: r.max_holders, holders: 0 });
  }
  if (use.size === 0) return use;
  for (const { held } of await q.all<{ held: string }>(
    "SELECT held FROM tasks WHERE status = 'running' AND held IS NOT NULL",
  )) {
    for (const r of JSON.parse(held) as string[]) {
      const u = use.get(r);
      if (u) u.holders++;
    }
  }
  return use;
}

/** Resources no waiting task can take now: unavailable, or every slot held. */
export function blockedResources(use: Map<string, ResourceUse>): string[] {
  return [...use]
    .filter(([, u]) => u.status === "unavailable" || u.holders >= u.maxHolders)
    .map(([id]) => id)
    .sort();
}

/** Every resource any of `candidates` may take, sorted (the order rows are locked in). */
export function resourcesNamed(candidates: readonly Candidate[]): string[] {
  const ids = new Set<string>();
  for (const c of candidates)
    for (const need of c.resources ?? []) for (const r of need) ids.add(r);
  return [...ids].sort();
}

/** A resource's row, or null. */
export async function getResourceRow(q: Queryable, id: string): Promise<ResourceRecord | null> {
  const row = await q.get("SELECT * FROM resources WHERE id = ?", [id]);
  return row ? rowToResource(row) : null;
}

/**
 * Creates the resources a submission names (one holder unless the definition says more) and
 * applies the limits it writes; a resource named without settings keeps its limit.
 */
export async function ensureResources(
  tx: Tx,
  configs: Record<string, ResourceConfig | null>,
  actor: string,
): Promise<void> {
  for (const [id, config] of Object.entries(configs)) {
    const row = await getResourceRow(tx, id);
    if (!row) {
      await createResource(tx, id, config?.maxHolders ?? 1, "available", null, actor);
    } else if (config && config.maxHolders !== row.maxHolders) {
      await changeLimit(tx, row, config.maxHolders, "set by a workstream definition", actor);
    }
  }
}

async function createResource(
  tx: Tx,
  id: string,
  maxHolders: number,
  status: ResourceStatus,
  reason: string | null,
  actor: string,
): Promise<ResourceRecord> {
  const now = tx.now();
  await tx.transition({
    kind: "resource",
    id,
    from: null,
    to: status,
    patch: { id, maxHolders, reason, createdAt: now },
    event: status === "available" ? "resource_created" : "resource_unavailable",
    actor,
    workstreamId: null,
  });
  return (await getResourceRow(tx, id))!;
}

async function changeLimit(
  tx: Tx,
  row: ResourceRecord,
  maxHolders: number,
  reason: string,
  actor: string,
): Promise<void> {
  await tx.transition({
    kind: "resource",
    id: row.id,
    from: row.status,
    to: row.status,
    patch: { maxHolders },
    event: "resource_limit_changed",
    actor,
    workstreamId: null,
    detail: { from: row.maxHolders, to: maxHolders, reason },
  });
  // A higher limit may let waiting tasks run.
  if (maxHolders > row.maxHolders) tx.wake();
}

/** What queued tasks need of resources (index tasks_needing). @internal */
export const WAITING_NEEDS_SQL =
  "SELECT resources FROM tasks WHERE status = 'queued' AND resources IS NOT NULL";

/** Every resource with its holders and the tasks waiting for it. */
export async function listResources(store: SqlStore): Promise<ResourceView[]> {
  return store.read(async (q) => {
    const rows = (await q.all("SELECT * FROM resources ORDER BY id")).map(rowToResource);
    const use = await resourceUse(q);
    const waiting = new Map<string, number>();
    for (const { resources } of await q.all<{ resources: string }>(WAITING_NEEDS_SQL)) {
      const needed = new Set((JSON.parse(resources) as string[][]).flat());
      for (const r of needed) waiting.set(r, (waiting.get(r) ?? 0) + 1);
    }
    return rows.map((r) => ({
      ...r,
      holders: use.get(r.id)?.holders ?? 0,
      waiting: waiting.get(r.id) ?? 0,
    }));
  });
}

/** A person sets a resource's limit (creating the resource if no task named it yet). */
export async function setResourceLimit(
  store: SqlStore,
  id: string,
  maxHolders: number,
  who: Actor,
): Promise<ResourceRecord> {
  if (!Number.isInteger(maxHolders) || maxHolders < 1) {
    throw new MendError(
      "invalid_argument",
      `--max-holders must be a whole number of at least 1, got ${maxHolders}`,
      { maxHolders },
    );
  }
  return store.write(async (tx) => {
    const before = await getResourceRow(tx, id);
    if (!before) {
      await createResource(tx, id, maxHolders, "available", null, who.actor);
    } else if (before.maxHolders !== maxHolders) {
      await changeLimit(tx, before, maxHolders, who.reason ?? "set by an operator", who.actor);
    }
    const after = (await getResourceRow(tx, id))!;
    await tx.intervention(who, id, before && pick(before), pick(after));
    return after;
  });
}

/**
 * Takes a resource out of service (its waiting tasks wait, or take an alternative; running ones
 * keep their holds until they end) or puts it back. By a person (`who`: an intervention), a
 * health check or a failure pattern (`actor`). Null when it already was so.
 */
export async function markResource(
  store: SqlStore,
  id: string,
  available: boolean,
  reason: string,
  who: Actor | { actor: string },
): Promise<ResourceRecord | null> {
  return store.write(async (tx) => {
    const before = await getResourceRow(tx, id);
    const to: ResourceStatus = available ? "available" : "unavailable";
    if (!before) {
      if (available) {
        throw new MendError("not_found", `no resource "${id}" (see mend resources)`, {
          resource: id,
        });
      }
      await createResource(tx, id, 1, "unavailable", reason, who.actor);
    } else if ((before.status === "unavailable") !== !available) {
      await changeStatus(tx, before, to, reason, who.actor);
    } else if (!available && "command" in who && before.reason !== reason) {
      // A person takes over a resource a health check or a pattern took out: with their
      // reason, no check puts it back.
      await changeStatus(tx, before, to, reason, who.actor);
    } else {
      return null;
    }
    const after = (await getResourceRow(tx, id))!;
    if ("command" in who) await tx.intervention(who, id, before && pick(before), pick(after));
    return after;
  });
}

/**
 * The monitor's look at every resource: one whose slots are all held while tasks wait for it is
 * `exhausted` (a warning people see); once a slot is free or nobody waits, `available` again.
 * Returns the resources it changed.
 */
export async function refreshResources(store: SqlStore): Promise<ResourceRecord[]> {
  const due = (views: ResourceView[]) =>
    views.filter((v) =>
      v.status === "available"
        ? v.waiting > 0 && v.holders >= v.maxHolders
        : v.status === "exhausted" && (v.waiting === 0 || v.holders < v.maxHolders),
    );
  // Read first: the common case changes nothing.
  if (due(await listResources(store)).length === 0) return [];
  const changed: ResourceRecord[] = [];
  for (const v of due(await listResources(store))) {
    const updated = await store.write(async (tx) => {
      const row = await getResourceRow(tx, v.id);
      if (row?.status !== v.status) return null;
      const to = v.status === "available" ? "exhausted" : "available";
      const reason =
        to === "exhausted"
          ? `all ${v.maxHolders} slot${v.maxHolders === 1 ? "" : "s"} held; ${v.waiting} task${v.waiting === 1 ? "" : "s"} waiting`
          : "a slot is free";
      await changeStatus(tx, row, to, reason, "monitor");
      return (await getResourceRow(tx, v.id))!;
    });
    if (updated) changed.push(updated);
  }
  return changed;
}

const STATUS_EVENTS: Record<ResourceStatus, EventName> = {
  available: "resource_available",
  exhausted: "resource_exhausted",
  unavailable: "resource_unavailable",
};

async function changeStatus(
  tx: Tx,
  row: ResourceRecord,
  to: ResourceStatus,
  reason: string,
  actor: string,
): Promise<void> {
  await tx.transition({
    kind: "resource",
    id: row.id,
    from: row.status,
    to,
    patch: { reason: to === "available" ? null : reason },
    event: STATUS_EVENTS[to],
    actor,
    workstreamId: null,
    detail: { reason },
  });
  if (to === "available") tx.wake();
}

function pick(r: ResourceRecord) {
  return { status: r.status, maxHolders: r.maxHolders, reason: r.reason };
}

/**
 * What a claim needs to know about resources before it reads candidates: the ones no waiting
 * task can take now, which the claim query leaves out. Empty when there are no resources.
 */
export async function claimBlocked(q: Queryable): Promise<string[]> {
  return blockedResources(await resourceUse(q));
}

/**
 * Decides which of the claim's candidates (rows in claim order, `resources` as stored) start, and
 * with which resources: the resources they may take are locked first, then counted, so two
 * claims never hand out the same last slot.
 */
export async function allocateClaims<C extends { id: string; resources: string | null }>(
  tx: Tx,
  rows: readonly C[],
  want: number,
): Promise<Allocation<C & Candidate>> {
  const candidates = rows.map((r) => ({
    ...r,
    resources: r.resources === null ? null : (JSON.parse(r.resources) as string[][]),
  }));
  const ids = resourcesNamed(candidates);
  if (ids.length === 0) {
    return {
      claimed: candidates.slice(0, want).map((task) => ({ task, held: null, reallocated: [] })),
      waiting: [],
    };
  }
  const { dialect } = tx.store;
  if (dialect.lockRows) {
    await tx.all(
      `SELECT id FROM resources WHERE ${dialect.inArray("id")} ORDER BY id${dialect.lockRows}`,
      [dialect.arrayParam(ids)],
    );
  }
  return allocate(candidates, await resourceUse(tx, ids), want);
}
