import type { Command } from "commander";
import { Monitor } from "../../engine/Monitor.js";
import { RESTART_EXIT_CODE, SUPERVISED_ENV } from "../../engine/supervisor.js";
import { Worker } from "../../engine/Worker.js";
import { MendError } from "../../errors.js";
import { parseCapabilityList } from "../../model/capabilities.js";
import { parseDuration } from "../../model/duration.js";
import { loadDefinitionFile, loadHandlersModule, loadResourceChecks } from "../../model/load.js";
import { parseDegradationConfig } from "../../recovery/degrade.js";
import { parsePatternConfig } from "../../recovery/patterns.js";
import { createLogger } from "../../observe/logger.js";
import { openStore, resolveStoreUrl } from "../../store/open.js";
import { globals } from "../context.js";
import { parseCountOption, parseIntOption } from "./options.js";
import { superviseWorker, SUPERVISE_HELP } from "./supervise.js";
import { addWorkerOperations } from "./workers.js";

interface WorkerCliOptions {
  /** Required to run a worker; not to `mend worker check|shutdown|restart`. */
  handlers?: string;
  capabilities?: string;
  supervise?: boolean;
  maxRestarts: number;
  restartWindow: string;
  concurrency: number;
  prefetch: number;
  heartbeat: string;
  lease: string;
  sweep: string;
  grace: string;
  backupInterval: string;
  monitor: boolean;
  revival: boolean;
  patterns: string | boolean;
  degradation?: string;
  escalateAfter: string;
  stallAfter: string;
  resourceCheckInterval: string;
  id?: string;
}

/** `mend worker --handlers MODULE`: a long-running worker (and, by default, a monitor). */
export function registerWorker(program: Command): void {
  const command = program
    .command("worker")
    .description("run a long-lived worker that claims and runs tasks from the store")
    .option(
      "--handlers <module>",
      "module whose default export maps handler names to functions (a named export resourceChecks adds resources' health checks)",
    )
    .option("--concurrency <n>", "tasks run at once", parseIntOption, 10)
    .option(
      "--prefetch <n>",
      "tasks claimed beyond --concurrency, waiting here for a slot: more tasks per round trip for short tasks (a prefetched task holds its lease from its claim)",
      parseCountOption,
      0,
    )
    .option("--heartbeat <duration>", "heartbeat interval", "1s")
    .option("--lease <duration>", "lease length past the last heartbeat", "5s")
    .option("--sweep <duration>", "monitor sweep interval", "1s")
    .option("--grace <duration>", "on SIGTERM/SIGINT, how long running tasks may finish", "30s")
    .option(
      "--backup-interval <duration>",
      "while this worker's monitor leads, back up the store this often if it changed (0: never)",
      "60s",
    )
    .option("--no-monitor", "do not take part in monitor election (lease reaping, backups)")
    .option("--no-revival", "never revive failed tasks automatically (on any workstream)")
    .option(
      "--patterns <file>",
      "failure pattern detection settings (JSON or YAML; see docs/patterns.md)",
    )
    .option("--no-patterns", "do not detect failure patterns")
    .option(
      "--degradation <file>",
      "degradation levels and their triggers (JSON or YAML; see docs/degradation.md)",
    )
    .option(
      "--escalate-after <duration>",
      "escalate a failed task to a person when no revival came within this time",
      "10m",
    )
    .option(
      "--stall-after <duration>",
      "report a running task stalled after this long without progress, unless it sets stallAfter",
      "30m",
    )
    .option(
      "--resource-check-interval <duration>",
      "how often the monitor runs the handlers module's resourceChecks",
      "10s",
    )
    .option("--id <id>", "worker id (default: generated)")
    .option(
      "--capabilities <list>",
      "what this worker can do, comma-separated (e.g. gpu,repo-write): it claims a task that requires capabilities only when it has them all",
    )
    .option(
      "--supervise",
      "run the worker under a supervisor that starts it again when it dies or is asked to restart",
    )
    .option(
      "--max-restarts <n>",
      "with --supervise: crash restarts allowed within --restart-window before giving up",
      parseIntOption,
      5,
    )
    .option("--restart-window <duration>", "with --supervise: the crash-loop window", "60s")
    .addHelpText(
      "after",
      "\nOn SIGTERM or SIGINT the worker stops claiming, lets running tasks finish within the grace\nperiod, and releases the rest for other workers. A second signal exits at once.\n\nThe monitor (one elected among the workers on a store) reaps expired leases, probes circuit\nbreakers, revives failed tasks whose cause has cleared, detects failure patterns, steps the\ndegradation level, escalates what automatic recovery could not fix, reports tasks that stall\n(no progress for --stall-after), runs the resources' health checks, and takes backups.\n\nResource health checks: a handlers module may export resourceChecks, an object mapping\nresource names to functions returning true (or a promise of true) while the resource works.\nOne that returns false, throws, or takes over 5s marks its resource unavailable (its tasks wait,\nor take an alternative); once it passes again the resource is put back. A resource a person\nmarked unavailable (mend resources mark) stays so. Only the elected monitor runs them: give\nevery worker that may lead the same module.",
    )
    .addHelpText("after", SUPERVISE_HELP)
    .action(async (opts: WorkerCliOptions, cmd: Command) => {
      if (opts.handlers === undefined) {
        throw new MendError(
          "invalid_argument",
          "required option '--handlers <module>' not specified (see mend worker --help)",
        );
      }
      const capabilities =
        opts.capabilities === undefined ? [] : parseCapabilityList(opts.capabilities);
      if (opts.supervise) {
        process.exitCode = await superviseWorker(opts.handlers, opts, cmd);
        return;
      }
      const handlers = await loadHandlersModule(opts.handlers);
      const resourceChecks = await loadResourceChecks(opts.handlers);
      // Settings are read and checked before anything starts: a bad file changes nothing.
      const patterns =
        typeof opts.patterns === "string"
          ? parsePatternConfig(await loadDefinitionFile(opts.patterns))
          : opts.patterns === false
            ? false
            : undefined;
      const degradation =
        opts.degradation === undefined
          ? undefined
          : parseDegradationConfig(await loadDefinitionFile(opts.degradation));
      const escalateAfterMs = parseDuration(opts.escalateAfter);
      const stallAfterMs = parseDuration(opts.stallAfter);
      if (stallAfterMs <= 0) {
        throw new MendError("invalid_argument", "--stall-after must be greater than 0", {
          stallAfter: opts.stallAfter,
        });
      }
      const resourceCheckMs = parseDuration(opts.resourceCheckInterval);
      if (resourceCheckMs <= 0) {
        throw new MendError(
          "invalid_argument",
          "--resource-check-interval must be greater than 0",
          {
            resourceCheckInterval: opts.resourceCheckInterval,
          },
        );
      }
      const logger = createLogger(globals(cmd).json ? "info" : undefined);
      const store = await openStore(resolveStoreUrl(globals(cmd).store));
      const worker = new Worker({
        store,
        handlers,
        concurrency: opts.concurrency,
        prefetch: opts.prefetch,
        heartbeatMs: parseDuration(opts.heartbeat),
        leaseMs: parseDuration(opts.lease),
        id: opts.id,
        capabilities,
        supervised: process.env[SUPERVISED_ENV] === "1",
        onControl: (control) => {
          const why = control.reason ? ` (${control.reason})` : "";
          process.stderr.write(
            `mend worker ${worker.id}: ${control.action} requested by ${control.actor}${why}, finishing ${worker.inFlight} running task(s)\n`,
          );
          void monitor?.stop();
          void worker.stop(graceMs);
        },
        logger,
      });
      const monitor = opts.monitor
        ? new Monitor({
            store,
            sweepMs: parseDuration(opts.sweep),
            backupIntervalMs: parseDuration(opts.backupInterval),
            revival: opts.revival ? undefined : false,
            patterns,
            degradation,
            escalateAfterMs,
            stallAfterMs,
            resourceChecks: resourceChecks ?? undefined,
            resourceCheckMs,
            logger,
          })
        : null;
      const graceMs = parseDuration(opts.grace);
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals > 1) process.exit(130);
        logger.info("stopping", { signal, inFlight: worker.inFlight });
        process.stderr.write(
          `mend worker ${worker.id}: ${signal}, finishing ${worker.inFlight} running task(s)\n`,
        );
        void monitor?.stop();
        void worker.stop(graceMs);
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
      // A supervised worker whose supervisor is gone (its IPC channel closed) stops gracefully.
      const orphaned = () => onSignal("SIGHUP");
      if (process.channel) {
        process.channel.unref();
        process.once("disconnect", orphaned);
      }
      await worker.start();
      monitor?.start();
      const checks = resourceChecks ? Object.keys(resourceChecks) : [];
      process.stderr.write(
        `mend worker ${worker.id} started (pid ${process.pid}, concurrency ${opts.concurrency}${checks.length > 0 && monitor ? `, health checks of ${checks.join(", ")}` : ""})\n`,
      );
      try {
        await worker.done;
        // Exiting with this code is how a supervised worker asks to be started again.
        if (worker.requested?.action === "restart") process.exitCode = RESTART_EXIT_CODE;
      } finally {
        await monitor?.stop();
        await store.close();
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
        process.off("disconnect", orphaned);
      }
    });
  addWorkerOperations(command);
}
