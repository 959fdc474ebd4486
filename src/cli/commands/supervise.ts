import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import {
  describeExit,
  spawnWorkerProcess,
  Supervisor,
  RESTART_EXIT_CODE,
} from "../../engine/supervisor.js";
import { MendError } from "../../errors.js";
import { formatDuration, parseDuration } from "../../model/duration.js";
import { newId } from "../../model/ids.js";
import { createLogger } from "../../observe/logger.js";
import { globals } from "../context.js";

/** The `mend worker --help` paragraph on supervision and operator requests. */
export const SUPERVISE_HELP = `
With --supervise the command runs the worker as a child process under the same id and starts it
again when it dies (after 0.5 s, doubling per crash) or exits with code ${RESTART_EXIT_CODE} because
mend worker restart asked it to; after more than --max-restarts crashes within --restart-window
it gives up and exits 1. SIGTERM and SIGINT are passed on to the worker; the supervisor exits
with it. An operator's mend worker shutdown stops the worker for good (exit 0).

Operator commands: mend workers, mend worker check ID, mend worker shutdown ID [--reassign],
mend worker restart ID (supervised workers only).`;

/** Options of the supervisor, as `mend worker` parsed them. */
export interface SuperviseOptions {
  id?: string;
  maxRestarts: number;
  restartWindow: string;
}

/**
 * The arguments of a supervised worker: the command line as typed, without the supervisor's own
 * options, and with `--id` so that every process it starts is the same worker.
 */
export function supervisedWorkerArgs(argv: readonly string[], id: string | null): string[] {
  const own = new Set(["--supervise"]);
  const ownWithValue = new Set(["--max-restarts", "--restart-window"]);
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const name = arg.split("=", 1)[0]!;
    if (own.has(arg)) continue;
    if (ownWithValue.has(name)) {
      if (!arg.includes("=")) i++;
      continue;
    }
    out.push(arg);
  }
  return id === null ? out : [...out, "--id", id];
}

/**
 * `mend worker --supervise`: runs the worker as a child and keeps it running. Returns the exit
 * code: the worker's own once it stopped on its terms, 1 when it crashed too often.
 */
export async function superviseWorker(
  handlers: string,
  opts: SuperviseOptions,
  cmd: Command,
): Promise<number> {
  // Checked here, so that a mistyped path fails at once rather than as a crash loop.
  if (!existsSync(resolve(process.cwd(), handlers))) {
    throw new MendError("not_found", `handlers module not found: ${handlers}`, {
      path: handlers,
    });
  }
  const windowMs = parseDuration(opts.restartWindow);
  const id = opts.id ?? newId("w", systemClock.now());
  const args = [
    process.argv[1]!,
    ...supervisedWorkerArgs(process.argv.slice(2), opts.id ? null : id),
  ];
  const say = (text: string) => process.stderr.write(`mend worker --supervise: ${text}\n`);
  const supervisor = new Supervisor({
    start: () => spawnWorkerProcess(args),
    maxRestarts: opts.maxRestarts,
    windowMs,
    logger: createLogger(globals(cmd).json ? "info" : undefined),
    onStart: (child, why) => {
      const because =
        why === "first" ? "" : why === "crashed" ? " again after a crash" : " again as requested";
      say(
        `worker ${id} started${because} (pid ${child.pid ?? "?"}, supervisor pid ${process.pid})`,
      );
    },
    onCrash: (exit, delayMs, restarts) =>
      say(
        `worker ${id} ${describeExit(exit)}; restarting in ${formatDuration(delayMs)} (crash ${restarts} of at most ${opts.maxRestarts} within ${formatDuration(windowMs)})`,
      ),
  });
  const onSignal = (signal: NodeJS.Signals) => supervisor.signal(signal);
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    const outcome = await supervisor.run();
    if (outcome.kind === "gave_up") {
      say(
        `worker ${id} ${describeExit(outcome.exit)}: ${outcome.restarts + 1} crashes within ${formatDuration(outcome.windowMs)}, giving up (a crash loop; see its log above)`,
      );
      return 1;
    }
    say(`worker ${id} ${describeExit(outcome.exit)}; supervisor exiting`);
    return outcome.exit.code ?? 1;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}
