/**
 * `mend state validate`: checks a store against the database's own integrity check, the hash
 * chain, replay, its backups, and the invariants of DESIGN.md. Everything is read through the
 * {@link Store} interface, so the same checks serve every store implementation.
 */
import { isDeepStrictEqual } from "node:util";
import type { Clock } from "../engine/clock.js";
import { findCycles, formatCycle } from "../model/dag.js";
import { taskId as makeTaskId } from "../model/ids.js";
import type { TaskRecord, TransitionRecord } from "../model/records.js";
import { ENTITY_KINDS, TERMINAL_TASK_STATUSES } from "../model/states.js";
import { SNAPSHOT_KEYS, type StateSnapshot } from "../store/replay.js";
import { isPerson } from "../observe/metrics.js";
import type { Store } from "../store/store.js";
import { isRestoreRecord } from "./backups.js";

/** One thing found wrong, with the ids (tasks, workers, backups, `seq:N` records) involved. */
export interface Violation {
  message: string;
  ids: string[];
}

/** The outcome of one check. */
export interface CheckResult {
  name: string;
  /** What the check establishes when it passes. */
  description: string;
  ok: boolean;
  violations: Violation[];
}

/** Everything `validateStore` found. `ok` when no check has a violation. */
export interface ValidationReport {
  ok: boolean;
  checks: CheckResult[];
}

/**
 * A running task whose lease expired longer ago than this was missed by the lease reaper: the
 * monitor sweeps every second by default, so ten seconds leaves room for a slow sweep.
 */
export const REAPER_GRACE_MS = 10_000;

/** Transitions read per page while walking the log. */
const PAGE = 10_000;

/** Task statuses that let a dependent start (a non-critical failure counts too). */
const SATISFYING = new Set(["completed", "skipped"]);

/** What the checks share, each part read once. */
interface Inputs {
  store: Store;
  now: number;
  tasks: () => Promise<TaskRecord[]>;
  log: () => Promise<LogFindings>;
}

/** What walking the log in order finds, for the checks that need history rather than state. */
interface LogFindings {
  dependencies: Violation[];
  completionOnce: Violation[];
  capacity: Violation[];
}

type Check = {
  name: string;
  description: string;
  run: (inputs: Inputs) => Promise<Violation[]>;
};

const CHECKS: Check[] = [
  {
    name: "integrity",
    description: "the database's own integrity check finds nothing (pages, indexes, foreign keys)",
    run: async ({ store }) =>
      (await store.integrityCheck()).map((message) => ({ message, ids: [] })),
  },
  {
    name: "chain",
    description: "every transition record follows from the one before (hash chain)",
    run: checkChain,
  },
  {
    name: "backups",
    description: "the log still holds the history of every backup taken since the last restore",
    run: checkBackups,
  },
  {
    name: "replay",
    description: "replaying the log from empty rebuilds exactly the current state",
    run: async ({ store }) => diffSnapshots(await store.snapshot(), await store.replay()),
  },
  {
    name: "leases",
    description: `every running task has a lease, none expired more than ${REAPER_GRACE_MS / 1000} s ago`,
    run: checkLeases,
  },
  {
    name: "dependencies",
    description:
      "every task started only after each dependency was completed, skipped, or failed non-critically",
    run: async ({ log }) => (await log()).dependencies,
  },
  {
    name: "cycles",
    description: "no workstream's tasks depend on each other in a cycle",
    run: checkCycles,
  },
  {
    name: "terminal-holds-nothing",
    description: "a task that is not running holds no lease and no resource (invariant 6)",
    run: checkTerminal,
  },
  {
    name: "completion-once",
    description: "each task's completion is recorded once, unless a person reopened it in between",
    run: async ({ log }) => (await log()).completionOnce,
  },
  {
    name: "holders-capacity",
    description:
      "no claim gave a resource more holders than its limit at the time, nor one out of service (invariant 6)",
    run: async ({ log }) => (await log()).capacity,
  },
];

/**
 * Runs every check against `store`. A check that cannot run (the database is too damaged to
 * read) reports that as its violation; the others still run.
 */
export async function validateStore(store: Store, clock: Clock): Promise<ValidationReport> {
  let tasks: Promise<TaskRecord[]> | null = null;
  let log: Promise<LogFindings> | null = null;
  const inputs: Inputs = {
    store,
    now: clock.now(),
    tasks: () => (tasks ??= allTasks(store)),
    log: () => (log ??= walkHistory(store)),
  };
  const checks: CheckResult[] = [];
  for (const check of CHECKS) {
    let violations: Violation[];
    try {
      violations = await check.run(inputs);
    } catch (err) {
      violations = [{ message: `could not run: ${(err as Error).message}`, ids: [] }];
    }
    checks.push({
      name: check.name,
      description: check.description,
      ok: violations.length === 0,
      violations,
    });
  }
  return { ok: checks.every((c) => c.ok), checks };
}

async function allTasks(store: Store): Promise<TaskRecord[]> {
  const tasks: TaskRecord[] = [];
  for (const ws of await store.listWorkstreams()) tasks.push(...(await store.listTasks(ws.id)));
  return tasks;
}

/** The whole log in order, a page at a time. */
async function* walkLog(store: Store): AsyncGenerator<TransitionRecord> {
  let after = 0;
  for (;;) {
    const page = await store.listTransitions({ afterSeq: after, limit: PAGE });
    yield* page;
    if (page.length < PAGE) return;
    after = page.at(-1)!.seq;
  }
}

async function checkChain({ store }: Inputs): Promise<Violation[]> {
  const report = await store.verifyChain();
  if (report.ok || !report.brokenAt) return [];
  const { seq, reason } = report.brokenAt;
  const ids = [`seq:${seq}`];
  try {
    const [record] = await store.listTransitions({ afterSeq: seq - 1, limit: 1 });
    if (record) ids.push(record.entityId);
  } catch {
    // The tampered record may not even parse; its seq is what matters.
  }
  return [
    {
      message: `record ${seq} is not part of the chain (${reason}); ${report.checked} records before it verify`,
      ids,
    },
  ];
}

/**
 * A backup taken since the last restore is a copy of this store's own history, so the log must
 * still hold its last record, unchanged: a store whose file was deleted or truncated, or whose log
 * was rewritten, fails here even when everything left in it is consistent.
 */
async function checkBackups({ store }: Inputs): Promise<Violation[]> {
  const restores = (await store.listInterventions(Number.MAX_SAFE_INTEGER)).filter((i) =>
    isRestoreRecord(i.after),
  );
  const since = restores.at(-1)?.at ?? -Infinity;
  const violations: Violation[] = [];
  for (const backup of await store.listBackups()) {
    if (backup.createdAt <= since || backup.lastSeq === 0) continue;
    const [record] = await store.listTransitions({ afterSeq: backup.lastSeq - 1, limit: 1 });
    if (record?.seq === backup.lastSeq && record.hash === backup.lastHash) continue;
    violations.push({
      message: record
        ? `record ${backup.lastSeq} differs from the one backup ${backup.id} holds: the log was rewritten`
        : `backup ${backup.id} holds the log up to record ${backup.lastSeq}, which this store no longer has: it lost history (deleted or truncated?)`,
      ids: [backup.id, `seq:${backup.lastSeq}`],
    });
  }
  return violations;
}

/** Every entity that differs between the state and the replay, field by field. */
function diffSnapshots(state: StateSnapshot, replayed: StateSnapshot): Violation[] {
  const violations: Violation[] = [];
  for (const noun of ENTITY_KINDS) {
    const a = state[SNAPSHOT_KEYS[noun]] as Record<string, Record<string, unknown>>;
    const b = replayed[SNAPSHOT_KEYS[noun]] as Record<string, Record<string, unknown>>;
    for (const id of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (!b[id]) {
        violations.push({ message: `${noun} ${id} is in the state but not in the log`, ids: [id] });
      } else if (!a[id]) {
        violations.push({ message: `${noun} ${id} is in the log but not in the state`, ids: [id] });
      } else {
        const fields = new Set([...Object.keys(a[id]), ...Object.keys(b[id])]);
        for (const f of fields) {
          if (isDeepStrictEqual(a[id][f], b[id][f])) continue;
          violations.push({
            message: `${noun} ${id}: ${f} is ${JSON.stringify(a[id][f])} in the state, ${JSON.stringify(b[id][f])} by replay`,
            ids: [id],
          });
        }
      }
    }
  }
  return violations;
}

async function checkLeases({ tasks, now }: Inputs): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const t of await tasks()) {
    if (t.status !== "running") continue;
    if (t.leaseToken === null || t.leaseWorker === null || t.leaseExpiresAt === null) {
      violations.push({ message: `task ${t.id} is running without a lease`, ids: [t.id] });
    } else if (t.leaseExpiresAt < now - REAPER_GRACE_MS) {
      violations.push({
        message: `task ${t.id}'s lease (worker ${t.leaseWorker}) expired ${Math.round((now - t.leaseExpiresAt) / 1000)} s ago and was not reaped: is a monitor running?`,
        ids: [t.id, t.leaseWorker],
      });
    }
  }
  return violations;
}

async function checkCycles({ tasks }: Inputs): Promise<Violation[]> {
  const byWorkstream = new Map<string, TaskRecord[]>();
  for (const t of await tasks()) {
    byWorkstream.set(t.workstreamId, [...(byWorkstream.get(t.workstreamId) ?? []), t]);
  }
  const violations: Violation[] = [];
  for (const [ws, list] of byWorkstream) {
    const deps = new Map(list.map((t) => [t.key, t.deps]));
    for (const cycle of findCycles([...deps.keys()], (k) => deps.get(k) ?? [])) {
      violations.push({
        message: `workstream ${ws} has a dependency cycle: ${formatCycle(cycle)}`,
        ids: [...new Set(cycle)].map((k) => makeTaskId(ws, k)),
      });
    }
  }
  return violations;
}

async function checkTerminal({ tasks }: Inputs): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const t of await tasks()) {
    if (
      TERMINAL_TASK_STATUSES.has(t.status) &&
      (t.leaseToken !== null || t.leaseWorker !== null || t.leaseExpiresAt !== null)
    ) {
      violations.push({
        message: `task ${t.id} is ${t.status} but still holds lease ${t.leaseToken ?? "?"} (worker ${t.leaseWorker ?? "?"})`,
        ids: [t.id, ...(t.leaseWorker ? [t.leaseWorker] : [])],
      });
    }
    if (t.status !== "running" && t.held !== null) {
      violations.push({
        message: `task ${t.id} is ${t.status} but still holds ${t.held.join(", ")}`,
        ids: [t.id, ...t.held],
      });
    }
  }
  return violations;
}

/** Actors that are the engine itself; any other actor is a person. */

/**
 * Walks the log once, in order: what each task's dependencies were when it started, and how
 * often it was completed. Dependencies and criticality are taken from the records, so a change
 * to them (a rollback removing a dependency) counts from the record that made it.
 */
async function walkHistory(store: Store): Promise<LogFindings> {
  const status = new Map<string, string>();
  const meta = new Map<string, { deps: string[]; critical: boolean }>();
  const completed = new Set<string>();
  const found: LogFindings = { dependencies: [], completionOnce: [], capacity: [] };
  const resources = new Map<string, { limit: number; status: string; holders: Set<string> }>();
  const holding = new Map<string, string[]>();
  for await (const t of walkLog(store)) {
    if (t.entity === "resource") {
      const r = resources.get(t.entityId) ?? { limit: 1, status: t.to, holders: new Set() };
      if (typeof t.data.maxHolders === "number") r.limit = t.data.maxHolders;
      r.status = t.to;
      resources.set(t.entityId, r);
      continue;
    }
    if (t.entity !== "task") continue;
    // Holds: taken by the record that starts an attempt, given back by the one that ends it.
    if (t.from === "running" && t.to !== "running") {
      for (const id of holding.get(t.entityId) ?? []) resources.get(id)?.holders.delete(t.entityId);
      holding.delete(t.entityId);
    }
    if (t.to === "running" && t.from !== "running" && Array.isArray(t.data.held)) {
      const held = t.data.held as string[];
      holding.set(t.entityId, held);
      for (const id of held) {
        const r = resources.get(id);
        if (!r) continue;
        if (r.status === "unavailable" || r.holders.size >= r.limit) {
          found.capacity.push({
            message: `task ${t.entityId} took ${id} (record ${t.seq}) while it was ${r.status === "unavailable" ? "unavailable" : `held by ${r.holders.size} of ${r.limit}`}`,
            ids: [t.entityId, id, `seq:${t.seq}`],
          });
        }
        r.holders.add(t.entityId);
      }
    }
    const known = meta.get(t.entityId) ?? { deps: [], critical: true };
    if (Array.isArray(t.data.deps)) known.deps = t.data.deps as string[];
    if (typeof t.data.critical === "boolean") known.critical = t.data.critical;
    meta.set(t.entityId, known);
    if (t.to === "running" && t.workstreamId) {
      for (const key of known.deps) {
        const dep = makeTaskId(t.workstreamId, key);
        const s = status.get(dep);
        if (SATISFYING.has(s ?? "") || (s === "failed" && meta.get(dep)?.critical === false)) {
          continue;
        }
        found.dependencies.push({
          message: `task ${t.entityId} started (record ${t.seq}) while its dependency ${dep} was ${s ?? "unknown"}`,
          ids: [t.entityId, dep, `seq:${t.seq}`],
        });
      }
    }
    if (t.from === "completed" && isPerson(t.actor)) completed.delete(t.entityId);
    if (t.to === "completed") {
      if (completed.has(t.entityId)) {
        found.completionOnce.push({
          message: `task ${t.entityId} was completed again (record ${t.seq}) with no person reopening it in between`,
          ids: [t.entityId, `seq:${t.seq}`],
        });
      }
      completed.add(t.entityId);
    }
    status.set(t.entityId, t.to);
  }
  return found;
}
