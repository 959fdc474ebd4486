/**
 * The worker registry's operator side: reading workers and their leases, a person's shutdown and
 * restart requests (stored in `workers.control` for the worker's next heartbeat), releasing a
 * worker's tasks at once, and the claim's capability filter.
 */
import { MendError } from "../../errors.js";
import { normalizeCapabilities } from "../../model/capabilities.js";
import type { TaskRecord, WorkerControl, WorkerRecord } from "../../model/records.js";
import type { WorkerStatus } from "../../model/states.js";
import { WORKER_UNRESPONSIVE_MS } from "../../recovery/worker-check.js";
import type { Actor, LeaseView, WorkerShutdown, WorkerShutdownOptions } from "../store.js";
import { rowToTask, rowToWorker } from "./codec.js";
import { RELEASED_LEASE } from "./lifecycle.js";
import type { Queryable } from "./queryable.js";
import type { SqlStore } from "./SqlStore.js";
import type { Tx } from "./tx.js";

/** Statuses of a worker that heartbeats, and so will see a request at its next heartbeat. */
const LIVE: ReadonlySet<WorkerStatus> = new Set(["idle", "busy"]);

/**
 * Whether a worker will hear a request: it is idle or busy and heartbeated within the
 * unresponsive threshold (without a monitor running, nothing marks a silent worker).
 */
function heartbeating(w: WorkerRecord, now: number): boolean {
  return LIVE.has(w.status) && now - w.heartbeatAt < WORKER_UNRESPONSIVE_MS;
}

/** The claim's parameter for the worker's capabilities: a JSON array, sorted, each name once. */
export function capabilitiesParam(capabilities: readonly string[] | undefined): string {
  return JSON.stringify(normalizeCapabilities(capabilities ?? []) ?? []);
}

/** One worker as registered, or null. */
export async function getWorker(q: Queryable, id: string): Promise<WorkerRecord | null> {
  const row = await q.get("SELECT * FROM workers WHERE id = ?", [id]);
  return row ? rowToWorker(row) : null;
}

async function requireWorker(q: Queryable, id: string): Promise<WorkerRecord> {
  const w = await getWorker(q, id);
  if (!w) {
    throw new MendError("not_found", `no worker "${id}" (see mend workers)`, { workerId: id });
  }
  return w;
}

/** Running tasks' leases, soonest expiry first: all of them, or those of one worker. */
export async function listLeases(q: Queryable, workerId?: string): Promise<LeaseView[]> {
  return q.all<LeaseView>(
    `SELECT id AS "taskId", workstream_id AS "workstreamId", key, handler, lease_worker AS "workerId",
       lease_token AS "token", lease_expires_at AS "expiresAt", attempts AS "attempt"
     FROM tasks WHERE status = 'running' AND lease_worker IS NOT NULL${workerId === undefined ? "" : " AND lease_worker = ?"}
     ORDER BY lease_expires_at, id`,
    workerId === undefined ? [] : [workerId],
  );
}

/**
 * Gives a running task back to the queue at once, unrun: its lease is revoked (its worker is
 * refused from now on and hears it at its next heartbeat) and the attempt it was on is not
 * counted, as when a worker releases a task itself.
 */
export async function releaseTask(
  tx: Tx,
  task: TaskRecord,
  actor: string,
  reason: string,
): Promise<void> {
  await tx.transition({
    kind: "task",
    id: task.id,
    from: "running",
    to: "queued",
    patch: { attempts: Math.max(0, task.attempts - 1), runAt: tx.now(), ...RELEASED_LEASE },
    event: "task_released",
    actor,
    workstreamId: task.workstreamId,
    detail: { reason, worker: task.leaseWorker },
  });
  tx.wake();
}

/** Releases every task a worker holds a lease on; returns their ids. */
async function releaseAll(tx: Tx, workerId: string, actor: string, reason: string) {
  const rows = await tx.all(
    "SELECT * FROM tasks WHERE status = 'running' AND lease_worker = ? ORDER BY id",
    [workerId],
  );
  const released: string[] = [];
  for (const r of rows) {
    const task = rowToTask(r);
    await releaseTask(tx, task, actor, reason);
    released.push(task.id);
  }
  return released;
}

function controlOf(action: WorkerControl["action"], reassign: boolean, who: Actor, at: number) {
  return { action, reassign, actor: who.actor, reason: who.reason ?? null, at } as WorkerControl;
}

/** What an intervention records of a worker. */
function pick(w: WorkerRecord, leases: number) {
  return { status: w.status, control: w.control, leases };
}

/** See {@link Store.requestWorkerShutdown}. */
export function requestWorkerShutdown(
  store: SqlStore,
  workerId: string,
  options: WorkerShutdownOptions,
  who: Actor,
): Promise<WorkerShutdown> {
  return store.write(async (tx) => {
    const before = await requireWorker(tx, workerId);
    const held = (await listLeases(tx, workerId)).length;
    const immediate = !heartbeating(before, tx.now());
    if (before.status === "shutdown" && held === 0) {
      throw new MendError(
        "refused",
        `worker ${workerId} is already shut down and holds no tasks; nothing to do`,
        { workerId, status: before.status },
      );
    }
    const control = controlOf("shutdown", options.reassign || immediate, who, tx.now());
    const why = `worker ${workerId} shut down by ${who.actor}${who.reason ? `: ${who.reason}` : ""}`;
    // A dead worker cannot stop by itself: it is shut down now. A live one is asked, and hears it
    // at its next heartbeat.
    await tx.transition({
      kind: "worker",
      id: workerId,
      from: before.status,
      to: immediate ? "shutdown" : before.status,
      patch: { control },
      event: immediate ? "worker_shutdown_forced" : "worker_shutdown_requested",
      actor: who.actor,
      workstreamId: null,
      detail: { reason: who.reason ?? null, reassign: control.reassign, was: before.status },
    });
    const released = control.reassign ? await releaseAll(tx, workerId, who.actor, why) : [];
    const after = (await getWorker(tx, workerId))!;
    await tx.intervention(
      who,
      `worker:${workerId}`,
      pick(before, held),
      pick(after, held - released.length),
    );
    return { worker: after, immediate, released };
  });
}

/** See {@link Store.requestWorkerRestart}. */
export function requestWorkerRestart(
  store: SqlStore,
  workerId: string,
  who: Actor,
): Promise<WorkerRecord> {
  return store.write(async (tx) => {
    const before = await requireWorker(tx, workerId);
    if (!before.supervised) {
      throw new MendError(
        "refused",
        `worker ${workerId} has no supervisor to start it again (it was not started with mend worker --supervise); use mend worker shutdown ${workerId} and start it again yourself`,
        { workerId },
      );
    }
    if (!heartbeating(before, tx.now())) {
      const state = LIVE.has(before.status) ? "not heartbeating" : before.status;
      throw new MendError(
        "refused",
        `worker ${workerId} is ${state}: it would not hear the request. If its process (pid ${before.pid} on ${before.host}) is hung, kill it and its supervisor starts it again; else mend worker shutdown ${workerId} releases its tasks`,
        { workerId, status: before.status },
      );
    }
    const held = (await listLeases(tx, workerId)).length;
    await tx.transition({
      kind: "worker",
      id: workerId,
      from: before.status,
      to: before.status,
      patch: { control: controlOf("restart", false, who, tx.now()) },
      event: "worker_restart_requested",
      actor: who.actor,
      workstreamId: null,
      detail: { reason: who.reason ?? null },
    });
    const after = (await getWorker(tx, workerId))!;
    await tx.intervention(who, `worker:${workerId}`, pick(before, held), pick(after, held));
    return after;
  });
}
