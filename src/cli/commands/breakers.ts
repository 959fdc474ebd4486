import type { Command } from "commander";
import { MendError } from "../../errors.js";
import { TASK_ID_PATTERN } from "../../model/definition.js";
import type { BreakerRecord } from "../../model/records.js";
import { describeBreakerSettings } from "../../recovery/policy.js";
import { globals, personActing, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";

/** What a person can do to a breaker, and the phrase `mend breaker --help` gives for it. */
const ACTIONS = {
  open: "force a breaker open until a person closes it (an unknown name is created, forced open)",
  close: "close an open or half-open breaker: the tasks it held back may run",
  reset: "close a breaker and clear its counters (also when it is closed)",
} as const;

/** Failures the breaker has counted towards opening, or the probes that went well. */
function counted(b: BreakerRecord): string {
  if (b.status === "half_open") {
    return `${b.successes}/${b.config.successThreshold} probes ok`;
  }
  if (b.status === "open") return "-";
  if (b.config.mode === "consecutive") return `${b.failures}/${b.config.failureThreshold} in a row`;
  const calls = b.window.reduce((n, w) => n + w[1], 0);
  const failed = b.window.reduce((n, w) => n + w[2], 0);
  return `${failed}/${calls} calls`;
}

/** When an open breaker lets probes through, as `mend breakers` and `mend status` show it. */
export function openUntil(b: BreakerRecord): string {
  if (b.status === "half_open") return "probing now";
  if (b.status !== "open") return "-";
  return b.forced ? "until closed by a person" : time(b.openUntil);
}

/** One line: the breaker's state and, when it is open, until when. */
function stateLine(b: BreakerRecord): string {
  const status = b.status.replace("_", "-");
  if (b.status !== "open") return `${b.id}: now ${status}`;
  return `${b.id}: now open ${b.forced ? "until closed by a person" : `until ${time(b.openUntil)}`}`;
}

/** Breaker names follow task ids: they appear in commands and metric labels. */
function checkName(name: string): void {
  if (!TASK_ID_PATTERN.test(name)) {
    throw new MendError(
      "invalid_argument",
      `breaker name "${name}" must start with a letter or digit and contain only letters, digits, ".", "_" and "-"`,
      { breaker: name },
    );
  }
}

/**
 * `mend breakers` lists the circuit breakers; `mend breaker open|close|reset NAME --reason R`
 * acts on one, logged as an intervention.
 */
export function registerBreakers(program: Command): void {
  program
    .command("breakers")
    .description("list the circuit breakers: state, counted failures, open until, settings")
    .action(async (_opts: unknown, cmd: Command) => {
      await withStore(cmd, async (store) => {
        const all = await store.listBreakers();
        if (globals(cmd).json) return printJson(all);
        if (all.length === 0) {
          return print("no circuit breakers (a task names one with breaker: NAME)");
        }
        print(
          table(
            ["NAME", "STATUS", "MODE", "COUNTED", "OPENED", "OPEN UNTIL", "SETTINGS"],
            all.map((b) => [
              b.id,
              b.status.replace("_", "-"),
              b.config.mode,
              counted(b),
              b.status === "closed" ? "-" : time(b.openedAt),
              openUntil(b),
              describeBreakerSettings(b.config),
            ]),
          ),
        );
      });
    });

  const group = program
    .command("breaker")
    .description("open, close or reset a circuit breaker (logged as an intervention)");
  for (const action of ["open", "close", "reset"] as const) {
    group
      .command(action)
      .description(ACTIONS[action])
      .argument("<name>", "the breaker's name (see mend breakers)")
      .requiredOption("--reason <text>", "why, for the interventions log")
      .action(async (name: string, opts: { reason: string }, cmd: Command) => {
        checkName(name);
        if (!opts.reason.trim()) {
          throw new MendError("invalid_argument", "--reason must not be empty");
        }
        await withStore(cmd, async (store) => {
          // Opening an unknown name creates it; the person should know they did not mistype.
          const existed = (await store.listBreakers()).some((b) => b.id === name);
          const after = await store.controlBreaker(name, action, personActing(opts.reason));
          const created = !existed;
          if (globals(cmd).json) return printJson({ breaker: after, created });
          if (created) {
            print(
              `created breaker ${name} (no task names it yet) with the default settings, forced open`,
            );
          }
          print(stateLine(after));
        });
      });
  }
}
