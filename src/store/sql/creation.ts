/**
 * The records that create a workstream and its tasks: computed ahead of the transaction (a
 * submission's records are prepared before any lock is taken), then written in it.
 */
import {
  dependencyRows,
  newId,
  taskId as makeTaskId,
  WORKSTREAM_ID_PREFIX,
} from "../../model/ids.js";
import type { WorkstreamSpec } from "../../model/spec.js";
import { ensureBreakers } from "./breakers.js";
import { ensureResources } from "./resources.js";
import type { Change, PreparedChange, Tx } from "./tx.js";
import type { SqlStore } from "./SqlStore.js";

/** How a workstream came to be: submitted, or scheduled to undo another's completed tasks. */
export interface WorkstreamOrigin {
  event: "workstream_created" | "compensation_scheduled";
  /** The workstream a compensation undoes; null for a submitted one. */
  compensates: string | null;
  detail?: Record<string, unknown>;
}

/** A workstream a person or program submitted. */
export const SUBMITTED: WorkstreamOrigin = { event: "workstream_created", compensates: null };

/** A workstream's creation, prepared: its records and its `task_deps` rows. */
export interface Creation {
  spec: WorkstreamSpec;
  actor: string;
  workstreamId: string;
  taskIds: string[];
  records: PreparedChange[];
  deps: [string, string][];
}

/** Computes everything a workstream's creation writes, without the database. */
export function prepareCreation(
  store: SqlStore,
  spec: WorkstreamSpec,
  actor: string,
  origin: WorkstreamOrigin,
): Creation {
  const now = store.clock.now();
  const wsId = newId(WORKSTREAM_ID_PREFIX.slice(0, -1), now);
  const taskIds: string[] = [];
  const deps: [string, string][] = [];
  const changes: Change[] = [
    {
      kind: "workstream",
      id: wsId,
      from: null,
      to: "active",
      patch: {
        id: wsId,
        name: spec.name,
        onFailure: spec.onFailure,
        revive: spec.revive,
        compensation: spec.compensation,
        compensates: origin.compensates,
        createdAt: now,
      },
      event: origin.event,
      actor,
      workstreamId: wsId,
      detail: origin.detail ?? null,
    },
  ];
  for (const t of spec.tasks) {
    const id = makeTaskId(wsId, t.key);
    taskIds.push(id);
    deps.push(...dependencyRows(wsId, id, t.deps));
    changes.push({
      kind: "task",
      id,
      from: null,
      to: t.deps.length === 0 ? "queued" : "pending",
      patch: {
        id,
        workstreamId: wsId,
        key: t.key,
        handler: t.handler,
        input: t.input ?? null,
        priority: t.priority,
        attempts: 0,
        retry: t.retry,
        timeoutMs: t.timeoutMs,
        critical: t.critical,
        deps: t.deps,
        runAt: now,
        workerLostStreak: 0,
        idempotencyKey: id,
        revivals: 0,
        // Recovery settings most tasks lack are left out rather than logged as nulls: records
        // stay small on the hot path, and replay fills them in (normalizeReplayed).
        ...(t.deadlineMs === null ? {} : { deadlineMs: t.deadlineMs }),
        ...(t.breaker === null ? {} : { breaker: t.breaker }),
        ...(t.fallbacks === null ? {} : { fallbacks: { ...t.fallbacks, tried: [] } }),
        ...(t.compensation === null ? {} : { compensation: t.compensation }),
        ...(t.qualityThreshold === null ? {} : { qualityThreshold: t.qualityThreshold }),
        ...(t.resources === null ? {} : { resources: t.resources }),
        ...(t.requires === null ? {} : { requires: t.requires }),
        ...(t.stallAfterMs === null ? {} : { stallAfterMs: t.stallAfterMs }),
        createdAt: now,
      },
      event: "task_created",
      actor,
      workstreamId: wsId,
    });
  }
  return {
    spec,
    actor,
    workstreamId: wsId,
    taskIds,
    records: changes.map((c) => store.prepare(c)),
    deps,
  };
}

/**
 * Writes a prepared creation in the open transaction. `alone`: nothing else in the transaction
 * reads its rows, so the store may send them with the COMMIT ({@link SqlStore.insertWithCommit}).
 */
export async function insertCreation(tx: Tx, created: Creation, alone = false): Promise<void> {
  await ensureBreakers(tx, created.spec.breakers, created.actor);
  await ensureResources(tx, created.spec.resources, created.actor);
  if (!(alone && tx.store.insertWithCommit(tx, created.records, created.deps))) {
    await tx.applyMany(created.records);
    await tx.store.insertDependencies(tx, created.deps);
  }
  tx.wake();
}

/**
 * Creates a workstream inside the open write transaction, as part of another change (a
 * compensation scheduled as a workstream fails); returns its id.
 */
export async function createWorkstream(
  tx: Tx,
  spec: WorkstreamSpec,
  actor: string,
  origin: WorkstreamOrigin,
): Promise<string> {
  const created = prepareCreation(tx.store, spec, actor, origin);
  await insertCreation(tx, created);
  return created.workstreamId;
}
