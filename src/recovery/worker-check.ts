/**
 * One worker's health and what to do about it: the worker recovery decision tree. A silent worker
 * is waited for (30 s: unresponsive), then waited for longer (3 min: presumed dead); one that
 * recovers resumes, one that does not is shut down, its tasks reassigned and it is restarted.
 * Its tasks never wait for any of this: their leases expire within seconds and the monitor queues
 * them again.
 */
import { formatDuration } from "../model/duration.js";
import type { WorkerRecord } from "../model/records.js";
import type { LeaseView } from "../store/store.js";

/** A worker silent this long is `unresponsive` (the monitor's default). */
export const WORKER_UNRESPONSIVE_MS = 30_000;
/** A worker silent this long is presumed dead and marked `shutdown` (the monitor's default). */
export const WORKER_SHUTDOWN_MS = 180_000;

/**
 * Where a worker stands: heartbeating (`healthy`); silent past the first threshold
 * (`unresponsive`) or the second (`presumed_dead`); or `shutdown` (stopped, or marked so).
 */
export type WorkerPhase = "healthy" | "unresponsive" | "presumed_dead" | "shutdown";

/** A lease the worker holds, with the time left on it (negative: expired, not yet requeued). */
export interface HeldLeaseView extends LeaseView {
  expiresInMs: number;
}

/** What `mend worker check` reports. */
export interface WorkerCheck {
  worker: WorkerRecord;
  phase: WorkerPhase;
  /** Healthy: heartbeating within the first threshold. */
  healthy: boolean;
  heartbeatAgeMs: number;
  unresponsiveMs: number;
  shutdownMs: number;
  leases: HeldLeaseView[];
  /** What to do next, most useful first: commands or what to wait for. */
  next: string[];
}

/** Thresholds of {@link checkWorker}, in ms (defaults: the monitor's). */
export interface WorkerCheckOptions {
  now: number;
  unresponsiveMs?: number;
  shutdownMs?: number;
}

/** Where `worker` stands at `now` and what the decision tree says to do next. */
export function checkWorker(
  worker: WorkerRecord,
  leases: readonly LeaseView[],
  options: WorkerCheckOptions,
): WorkerCheck {
  const { now } = options;
  const unresponsiveMs = options.unresponsiveMs ?? WORKER_UNRESPONSIVE_MS;
  const shutdownMs = options.shutdownMs ?? WORKER_SHUTDOWN_MS;
  const age = Math.max(0, now - worker.heartbeatAt);
  const phase: WorkerPhase =
    worker.status === "shutdown"
      ? "shutdown"
      : age >= shutdownMs
        ? "presumed_dead"
        : age >= unresponsiveMs || worker.status === "unresponsive"
          ? "unresponsive"
          : "healthy";
  const held = leases.map((l) => ({ ...l, expiresInMs: l.expiresAt - now }));
  return {
    worker,
    phase,
    healthy: phase === "healthy",
    heartbeatAgeMs: age,
    unresponsiveMs,
    shutdownMs,
    leases: held,
    next: nextSteps(worker, phase, held, age, shutdownMs),
  };
}

function nextSteps(
  w: WorkerRecord,
  phase: WorkerPhase,
  leases: readonly HeldLeaseView[],
  age: number,
  shutdownMs: number,
): string[] {
  const id = w.id;
  const request = w.control;
  const kill = `if its process (pid ${w.pid} on ${w.host}) is hung, kill it${w.supervised ? ": its supervisor starts it again" : ""}`;
  const start = `start it again: mend worker${w.supervised ? " --supervise" : ""} --id ${id} --handlers …`;
  const expired = leases.filter((l) => l.expiresInMs < 0).length;
  const stuck =
    expired > 0
      ? [
          `${expired} of its leases expired but their tasks were not requeued: is a monitor running? mend worker shutdown ${id} --reassign requeues them now`,
        ]
      : [];
  switch (phase) {
    case "healthy":
      if (request?.action === "shutdown") {
        return [
          `shutdown requested by ${request.actor}: it stops at its next heartbeat${request.reassign ? " (its tasks were reassigned)" : ", once its running tasks finish"}`,
        ];
      }
      if (request?.action === "restart") {
        return [`restart requested by ${request.actor}: it restarts at its next heartbeat`];
      }
      return ["nothing to do: it is heartbeating"];
    case "unresponsive":
      return [
        `wait: if it heartbeats again it resumes (watch it closely); if not, the monitor marks it shutdown after ${formatDuration(shutdownMs)} of silence (in ${formatDuration(Math.max(0, shutdownMs - age))})`,
        leases.length > 0
          ? `its ${leases.length} task(s) run again elsewhere once their leases expire; to release them now: mend worker shutdown ${id} --reassign`
          : `it holds no tasks; to take it out now: mend worker shutdown ${id}`,
        kill,
        ...stuck,
      ];
    case "presumed_dead":
      return [
        `force shutdown: mend worker shutdown ${id} --reassign (marks it shutdown and requeues any task it still holds)`,
        `restart it: ${kill}; or ${start}`,
        ...stuck,
      ];
    case "shutdown": {
      const how = request
        ? `shut down as ${request.actor} asked${request.reason ? ` (${request.reason})` : ""}`
        : "shut down";
      return leases.length > 0
        ? [
            `${how}, but it still holds ${leases.length} task(s): mend worker shutdown ${id} --reassign requeues them now`,
            ...stuck,
          ]
        : [`${how}; to run it again, ${start}`];
    }
  }
}
