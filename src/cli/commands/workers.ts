import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import { formatDuration } from "../../model/duration.js";
import type { WorkerRecord } from "../../model/records.js";
import { checkWorker, type WorkerCheck } from "../../recovery/worker-check.js";
import type { WorkerShutdown } from "../../store/store.js";
import { confirm, globals, personActing, withStore } from "../context.js";
import { print, printJson, table } from "../output.js";

/** An operator's pending request, as the tables show it. */
function requestOf(w: WorkerRecord): string | null {
  if (!w.control) return null;
  const reassign = w.control.action === "shutdown" && w.control.reassign ? " --reassign" : "";
  return `${w.control.action}${reassign} by ${w.control.actor}`;
}

function age(ms: number): string {
  return `${formatDuration(Math.max(0, ms))} ago`;
}

function requireReason(reason: string | undefined): string {
  if (reason === undefined || !reason.trim()) {
    throw new MendError("invalid_argument", "--reason must not be empty");
  }
  return reason;
}

/** `mend workers`: the worker registry. */
export function registerWorkers(program: Command): void {
  program
    .command("workers")
    .description(
      "list the registered workers: host, pid, status, capabilities, load, last heartbeat",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const [workers, leases] = await Promise.all([store.listWorkers(), store.listLeases()]);
        const now = systemClock.now();
        const running = new Map<string, number>();
        for (const l of leases) running.set(l.workerId, (running.get(l.workerId) ?? 0) + 1);
        const rows = workers.map((w) => ({
          ...w,
          running: running.get(w.id) ?? 0,
          heartbeatAgeMs: now - w.heartbeatAt,
        }));
        if (globals(cmd).json) return printJson(rows);
        if (rows.length === 0) {
          return print("no workers registered (start one with mend worker --handlers MODULE)");
        }
        print(
          table(
            [
              "ID",
              "HOST",
              "PID",
              "STATUS",
              "CAPABILITIES",
              "CONCURRENCY",
              "RUNNING",
              "HEARTBEAT",
              "REQUEST",
            ],
            rows.map((w) => [
              w.id,
              w.host,
              w.pid,
              `${w.status}${w.supervised ? " (supervised)" : ""}`,
              w.capabilities.length ? w.capabilities.join(",") : null,
              w.concurrency,
              w.running,
              age(w.heartbeatAgeMs),
              requestOf(w),
            ]),
          ),
        );
      });
    });
}

/** `mend worker check|shutdown|restart ID`, under `mend worker`. */
export function addWorkerOperations(worker: Command): void {
  worker
    .command("check")
    .description(
      "one worker's health: status, heartbeat age against the 30s/3m thresholds, its leases, and what to do next (exit 0 healthy, 1 unresponsive or shut down, 3 not found)",
    )
    .argument("<id>", "the worker's id (see mend workers)")
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const w = await store.getWorker(id);
        if (!w) throw new MendError("not_found", `no worker "${id}" (see mend workers)`, { id });
        const check = checkWorker(w, await store.listLeases(id), { now: systemClock.now() });
        if (globals(cmd).json) printJson(check);
        else print(describeCheck(check));
        if (!check.healthy) process.exitCode = 1;
      });
    });

  worker
    .command("shutdown")
    .description(
      "ask a worker to stop gracefully at its next heartbeat (one that is unresponsive or presumed dead is shut down at once and its tasks requeued)",
    )
    .argument("<id>", "the worker's id (see mend workers)")
    .option(
      "--reassign",
      "release its running tasks now: they are queued again at once (no attempt used) and its leases revoked",
    )
    .requiredOption("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .action(
      async (id: string, opts: { reassign?: boolean; reason: string; yes?: boolean }, cmd) => {
        const reason = requireReason(opts.reason);
        await withStore(cmd, async (store) => {
          const w = await store.getWorker(id);
          if (!w) throw new MendError("not_found", `no worker "${id}" (see mend workers)`, { id });
          const held = (await store.listLeases(id)).length;
          await confirm(
            `shut down worker ${id} (${w.status}, ${held} running task(s))?${opts.reassign ? " Its running tasks are released to other workers now." : ""}`,
            opts.yes,
          );
          const done = await store.requestWorkerShutdown(
            id,
            { reassign: opts.reassign === true },
            personActing(reason),
          );
          if (globals(cmd).json) return printJson(done);
          print(describeShutdown(done));
        });
      },
    );

  worker
    .command("restart")
    .description(
      "ask a supervised worker (mend worker --supervise) to stop gracefully and be started again by its supervisor",
    )
    .argument("<id>", "the worker's id (see mend workers)")
    .requiredOption("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (id: string, opts: { reason: string; yes?: boolean }, cmd: Command) => {
      const reason = requireReason(opts.reason);
      await withStore(cmd, async (store) => {
        const w = await store.getWorker(id);
        if (!w) throw new MendError("not_found", `no worker "${id}" (see mend workers)`, { id });
        // Refused before asking: there is nothing to confirm when the store would refuse.
        if (w.supervised && (w.status === "idle" || w.status === "busy")) {
          await confirm(`restart worker ${id} (${w.status})?`, opts.yes);
        }
        const after = await store.requestWorkerRestart(id, personActing(reason));
        if (globals(cmd).json) return printJson({ worker: after });
        print(
          `worker ${id}: restart requested; at its next heartbeat it finishes its running tasks (up to its grace period), releases the rest and exits, and its supervisor starts it again`,
        );
      });
    });
}

/** `mend worker check` for people. */
function describeCheck(c: WorkerCheck): string {
  const w = c.worker;
  const lines = [
    `worker ${w.id}: ${w.status}, ${c.phase.replace("_", " ")}`,
    `  host ${w.host}, pid ${w.pid}${w.supervised ? " (supervised)" : ""}, concurrency ${w.concurrency}, capabilities ${w.capabilities.length ? w.capabilities.join(",") : "none"}`,
    `  last heartbeat ${age(c.heartbeatAgeMs)} (unresponsive after ${formatDuration(c.unresponsiveMs)}, presumed dead after ${formatDuration(c.shutdownMs)})`,
  ];
  if (w.control) {
    lines.push(
      `  request: ${requestOf(w)}${w.control.reason ? ` (${w.control.reason})` : ""}, ${age(systemClock.now() - w.control.at)}`,
    );
  }
  lines.push(`  leases: ${c.leases.length === 0 ? "none" : ""}`);
  for (const l of c.leases) {
    const left =
      l.expiresInMs >= 0
        ? `expires in ${formatDuration(l.expiresInMs)}`
        : `expired ${formatDuration(-l.expiresInMs)} ago`;
    lines.push(`    ${l.taskId}  ${l.handler}  attempt ${l.attempt}  token ${l.token}  ${left}`);
  }
  lines.push("next:", ...c.next.map((n) => `  - ${n}`));
  return lines.map((l) => l.trimEnd()).join("\n");
}

/** `mend worker shutdown` for people. */
function describeShutdown(d: WorkerShutdown): string {
  const released =
    d.released.length > 0
      ? `; ${d.released.length} running task(s) released and queued again: ${d.released.join(", ")}`
      : "";
  return d.immediate
    ? `worker ${d.worker.id}: shut down now (it was not heartbeating)${released}`
    : `worker ${d.worker.id}: shutdown requested; it stops at its next heartbeat${d.worker.control?.reassign ? "" : ", once its running tasks finish (up to its grace period)"}${released}`;
}
