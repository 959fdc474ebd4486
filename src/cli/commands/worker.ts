import type { Command } from "commander";
import { Monitor } from "../../engine/Monitor.js";
import { Worker } from "../../engine/Worker.js";
import { parseDuration } from "../../model/duration.js";
import { loadDefinitionFile, loadHandlersModule } from "../../model/load.js";
import { parseDegradationConfig } from "../../recovery/degrade.js";
import { parsePatternConfig } from "../../recovery/patterns.js";
import { createLogger } from "../../observe/logger.js";
import { openStore, resolveStoreUrl } from "../../store/open.js";
import { globals } from "../context.js";
import { parseIntOption } from "./options.js";

interface WorkerCliOptions {
  handlers: string;
  concurrency: number;
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
  id?: string;
}

/** `mend worker --handlers MODULE`: a long-running worker (and, by default, a monitor). */
export function registerWorker(program: Command): void {
  program
    .command("worker")
    .description("run a long-lived worker that claims and runs tasks from the store")
    .requiredOption(
      "--handlers <module>",
      "module whose default export maps handler names to functions",
    )
    .option("--concurrency <n>", "tasks run at once", parseIntOption, 10)
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
    .option("--id <id>", "worker id (default: generated)")
    .addHelpText(
      "after",
      "\nOn SIGTERM or SIGINT the worker stops claiming, lets running tasks finish within the grace\nperiod, and releases the rest for other workers. A second signal exits at once.\n\nThe monitor (one elected among the workers on a store) reaps expired leases, probes circuit\nbreakers, revives failed tasks whose cause has cleared, detects failure patterns, steps the\ndegradation level, escalates what automatic recovery could not fix, and takes backups.",
    )
    .action(async (opts: WorkerCliOptions, cmd: Command) => {
      const handlers = await loadHandlersModule(opts.handlers);
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
      const logger = createLogger(globals(cmd).json ? "info" : undefined);
      const store = await openStore(resolveStoreUrl(globals(cmd).store));
      const worker = new Worker({
        store,
        handlers,
        concurrency: opts.concurrency,
        heartbeatMs: parseDuration(opts.heartbeat),
        leaseMs: parseDuration(opts.lease),
        id: opts.id,
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
      await worker.start();
      monitor?.start();
      process.stderr.write(
        `mend worker ${worker.id} started (pid ${process.pid}, concurrency ${opts.concurrency})\n`,
      );
      try {
        await worker.done;
      } finally {
        await monitor?.stop();
        await store.close();
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    });
}
