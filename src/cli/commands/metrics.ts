import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import { formatDuration, parseDuration } from "../../model/duration.js";
import type { InterventionRecord, TransitionRecord } from "../../model/records.js";
import {
  type DurationSummary,
  type RecoveryMetrics,
  computeMetrics,
  prometheusText,
} from "../../observe/metrics.js";
import type { Store } from "../../store/store.js";
import { globals, withStore } from "../context.js";
import { print, printJson, table, time } from "../output.js";

/** Transitions read per query: the whole log is needed, but not in one allocation. */
const PAGE = 5000;
/** Workers and workstreams listed under "worst health". */
const WORST = 5;

/**
 * The start of the window: `DURATION` before now (`1h`, `30m`) or an ISO time.
 *
 * @throws MendError `invalid_argument` for anything else, or a time after now.
 */
function parseSince(text: string, now: number): number {
  let from: number;
  try {
    from = now - parseDuration(text);
  } catch {
    from = /^\d{4}-\d\d-\d\d/.test(text.trim()) ? Date.parse(text) : Number.NaN;
  }
  if (Number.isNaN(from)) {
    throw new MendError(
      "invalid_argument",
      `--since must be a duration before now (e.g. 1h, 30m) or an ISO time (e.g. 2025-01-31T12:00:00Z), got "${text}"`,
      { since: text },
    );
  }
  if (from > now) {
    throw new MendError("invalid_argument", `--since ${text} is in the future`, { since: text });
  }
  return from;
}

/** The whole transition log, oldest first, read page by page. */
async function readLog(store: Store): Promise<TransitionRecord[]> {
  const log: TransitionRecord[] = [];
  for (;;) {
    const page = await store.listTransitions({ afterSeq: log.at(-1)?.seq ?? 0, limit: PAGE });
    log.push(...page);
    if (page.length < PAGE) return log;
  }
}

/**
 * Every intervention. The API takes only a limit (default 1000, oldest first), so the limit is
 * doubled until a read comes back short of it.
 */
async function readInterventions(store: Store): Promise<InterventionRecord[]> {
  for (let limit = 1000; ; limit *= 2) {
    const all = await store.listInterventions(limit);
    if (all.length < limit) return all;
  }
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;
const pct = (r: number | null): string => (r === null ? "-" : `${(r * 100).toFixed(1)}%`);
const secs = (s: number): string => formatDuration(s * 1000);
const score = (s: number): string => s.toFixed(2);

function summary(s: DurationSummary | null): string {
  if (s === null) return "none recovered";
  return `${s.count} recovered, mean ${secs(s.mean)}, p50 ${secs(s.p50)}, p90 ${secs(s.p90)}, p99 ${secs(s.p99)}, max ${secs(s.max)}`;
}

function counts(byKey: Record<string, number>): string {
  const entries = Object.entries(byKey).sort(([, a], [, b]) => b - a);
  return entries.length === 0 ? "none" : entries.map(([k, n]) => `${k} ${n}`).join(", ");
}

function worst(scores: Record<string, number>): string {
  const entries = Object.entries(scores)
    .sort(([, a], [, b]) => a - b)
    .slice(0, WORST);
  return entries.length === 0
    ? "none seen"
    : entries.map(([id, s]) => `${id} ${score(s)}`).join(", ");
}

/**
 * `mend --store X breaker open b --reason r` → `breaker open`: the interventions log keeps the
 * command line as typed, and the report groups by the command alone. A line that names no `mend`
 * command (an API caller's) is kept whole.
 */
function commandPath(line: string, program: Command): string {
  const path: string[] = [];
  let commands = program.commands;
  for (const word of line.split(/\s+/).slice(1)) {
    const found = commands.find((c) => c.name() === word);
    if (!found) {
      if (path.length > 0) break;
      continue;
    }
    path.push(word);
    commands = found.commands;
    if (commands.length === 0) break;
  }
  return path.length === 0 ? line : path.join(" ");
}

/** The metrics as a report, one aspect per line. */
function printReport(m: RecoveryMetrics, overall: boolean, program: Command): void {
  const r = m.recovery;
  const w = m.window;
  print(
    `window: ${time(w.from)} → ${time(w.to)} (${formatDuration(w.to - w.from)}${overall ? ", overall" : ""})`,
  );
  print("");
  print("recovery");
  print(`  time to recover        ${summary(r.seconds)}`);
  print(
    `  episodes               ${r.ended} ended: ${r.recovered} recovered (${r.autoRecovered} automatically), ${r.unrecovered} not; ${r.inProgress} in progress${r.awaitingValidation ? ` (${r.awaitingValidation} awaiting validation)` : ""}`,
  );
  print(`  auto-recovery rate     ${pct(m.autoRecoveryRate)}`);
  print(`  recovery success rate  ${pct(m.recoverySuccessRate)}`);
  print(
    `  retry amplification    ${m.attempts.amplification === null ? "-" : `${m.attempts.amplification.toFixed(2)}×`} (${plural(m.attempts.started, "attempt")} for ${plural(m.attempts.tasks, "task")})`,
  );
  print(
    `  failed attempts        ${m.failures.total} (${m.failures.perMinute.toFixed(2)}/min): ${counts(m.failures.byCategory)}`,
  );
  print(
    `  revivals               ${m.revivals.count} of ${plural(m.revivals.tasks, "task")}, ${m.revivals.completed} of them recovered`,
  );
  print(`  stalls                 ${m.stalls.count} of ${plural(m.stalls.tasks, "task")}`);
  const byCommand: Record<string, number> = {};
  for (const [line, n] of Object.entries(m.interventions.byCommand)) {
    const path = commandPath(line, program);
    byCommand[path] = (byCommand[path] ?? 0) + n;
  }
  print(`  interventions          ${m.interventions.total}: ${counts(byCommand)}`);
  print(
    `  patterns               ${m.patterns.detected} detected, ${m.patterns.confirmed} confirmed, ${plural(m.patterns.falsePositives, "false positive")} (false-positive rate ${pct(m.patterns.falsePositiveRate)})`,
  );
  const d = m.degradation;
  print(
    `  degradation            ${formatDuration(d.degradedMs)} degraded, ${plural(d.changes, "change")}; now level ${d.level}${d.name === null ? "" : ` (${d.name})`}`,
  );
  const c = m.compensation;
  print(
    `  compensation           ${c.scheduled} scheduled, ${c.completed} of ${c.ended} ended completed (${pct(c.successRate)})`,
  );
  print("");
  const breakers = Object.entries(m.breakers);
  if (breakers.length === 0) print("breakers: none");
  else {
    print("breakers");
    print(
      table(
        ["  NAME", "STATE", "OPENED", "OPEN TIME"],
        breakers.map(([name, b]) => [
          `  ${name}`,
          b.state.replace("_", "-"),
          b.opened,
          formatDuration(b.openMs),
        ]),
      ),
    );
  }
  print("");
  print("health (0 to 1, higher is better)");
  print(`  system                 ${score(m.health.system)}`);
  print(`  worst workers          ${worst(m.health.workers)}`);
  print(`  worst workstreams      ${worst(m.health.workstreams)}`);
}

/**
 * `mend metrics [--since DURATION|ISO] [--prometheus]`: recovery metrics and health scores computed
 * from the transition and interventions logs (docs/metrics.md). Reads only.
 */
export function registerMetrics(program: Command): void {
  program
    .command("metrics")
    .description("recovery metrics and health scores, computed from the log (default: overall)")
    .option("--since <when>", "window start: a duration before now (1h, 30m) or an ISO time")
    .option("--prometheus", "print the Prometheus text exposition format")
    .action(async (opts: { since?: string; prometheus?: boolean }, cmd: Command) => {
      const json = globals(cmd).json;
      if (json && opts.prometheus) {
        throw new MendError(
          "invalid_argument",
          "--json and --prometheus are two formats: pick one",
        );
      }
      const to = systemClock.now();
      const from = opts.since === undefined ? undefined : parseSince(opts.since, to);
      await withStore(cmd, async (store) => {
        const [transitions, interventions] = await Promise.all([
          readLog(store),
          readInterventions(store),
        ]);
        const m = computeMetrics({ transitions, interventions, from, to });
        if (opts.prometheus) {
          process.stdout.write(await prometheusText(m));
          return;
        }
        if (json) return printJson(m);
        printReport(m, from === undefined, cmd.parent ?? cmd);
      });
    });
}
