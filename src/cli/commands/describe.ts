import type { Command } from "commander";
import { resolveHandler } from "../../model/handler.js";
import { loadHandlersModule } from "../../model/load.js";
import {
  type EffectivePolicy,
  POLICY_ORDER,
  type PolicyProblem,
  describeLayer,
  effectivePolicy,
  validatePolicy,
} from "../../recovery/policy.js";
import { globals, resolveTask, withStore } from "../context.js";
import { print, printJson, table } from "../output.js";

/** Prints the layers outermost first, one per line, then the problems found in them. */
function report(
  json: boolean | undefined,
  subject: Record<string, unknown>,
  heading: string,
  layers: EffectivePolicy,
): void {
  const problems: PolicyProblem[] = validatePolicy(layers);
  if (json) {
    printJson({
      subject,
      layers: layers.map((l) => ({ ...l, summary: describeLayer(l) })),
      problems,
    });
    return;
  }
  print(heading);
  print(
    table(
      ["#", "LAYER", "FROM", "SETTING"],
      layers.map((l) => [POLICY_ORDER.indexOf(l.layer) + 1, l.layer, l.source, describeLayer(l)]),
    ),
  );
  if (problems.length === 0) return print("no problems found");
  print("problems:");
  for (const p of problems) print(`  ${p.severity.padEnd(8)} ${p.layer}: ${p.message}`);
}

/**
 * `mend describe TASK` and `mend describe HANDLER --handlers FILE`: the recovery policy that
 * applies, layer by layer (overall deadline → circuit breaker → retry → concurrency → per-attempt
 * timeout), with problems in how the layers fit together. Reads only.
 */
export function registerDescribe(program: Command): void {
  program
    .command("describe")
    .description(
      "show the recovery policy of a task or handler, outermost layer first, and its problems",
    )
    .argument("<ref>", "WORKSTREAM/TASK or a task id; with --handlers, a handler name")
    .option("--handlers <module>", "describe handler REF of this handlers module instead")
    .addHelpText(
      "after",
      "\nLayers: deadline (overall, from submission) → breaker → retry (then fallbacks, revival)\n→ concurrency (per worker, and the resources the task holds while it runs) → timeout (per\nattempt, with the quality threshold).",
    )
    .action(async (ref: string, opts: { handlers?: string }, cmd: Command) => {
      const json = globals(cmd).json;
      if (opts.handlers !== undefined) {
        const definition = resolveHandler(await loadHandlersModule(opts.handlers), ref);
        const layers = effectivePolicy({ handler: { name: ref, definition } });
        report(
          json,
          { kind: "handler", name: ref, module: opts.handlers },
          `handler ${ref}  (${opts.handlers}; a workstream definition may override these)`,
          layers,
        );
        return;
      }
      await withStore(cmd, async (store) => {
        const task = await resolveTask(store, ref);
        const [workstream, breakers, workers, resources] = await Promise.all([
          store.getWorkstream(task.workstreamId),
          task.breaker === null ? [] : store.listBreakers(),
          store.listWorkers(),
          task.resources === null ? [] : store.listResources(),
        ]);
        const breaker = breakers.find((b) => b.id === task.breaker) ?? null;
        const layers = effectivePolicy({
          task: { task, workstream, breaker, workers, resources },
        });
        report(
          json,
          { kind: "task", id: task.id, handler: task.handler, status: task.status },
          `task ${task.id}  (handler ${task.handler}, ${task.status})`,
          layers,
        );
      });
    });
}
