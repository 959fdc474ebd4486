import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import { createPlanner } from "../../engine/planner.js";
import { MendError } from "../../errors.js";
import { parseDuration } from "../../model/duration.js";
import { listBackupsOf, type RetentionPolicy } from "../../state/backups.js";
import type { JournalLimit } from "../../state/journal.js";
import { type RepairReport, repairStore } from "../../state/repair.js";
import { type CheckResult, validateStore } from "../../state/validate.js";
import { isPostgresUrl, openStore, resolveStoreUrl } from "../../store/open.js";
import { redact } from "../../store/url.js";
import {
  damagedStoreError,
  planRestore,
  type RestoreResult,
  restoreFromBackup,
  restoreFromJournal,
  sqlitePathOf,
} from "../../store/sqlite/backup.js";
import type { Store } from "../../store/store.js";
import { actorName, commandLine, confirm, globals, personActing } from "../context.js";
import { print, printJson, table, time } from "../output.js";
import { parseIntOption } from "./options.js";

/** Violations printed per check; `--json` has them all. */
const MAX_LISTED = 50;

/** `mend state backup|backups|restore|validate|repair`: the store's own safety net. */
export function registerState(program: Command): void {
  const state = program
    .command("state")
    .description("back up, restore and validate the store itself");
  registerBackup(state);
  registerBackups(state);
  registerRestore(state);
  registerValidate(state);
  registerRepair(state);
}

function registerBackup(state: Command): void {
  state
    .command("backup")
    .description("take a backup of the whole store now (consistent while workers run)")
    .option("--reason <text>", "why, shown by `mend state backups` and logged", "manual")
    .option("--keep <n>", "then keep at most this many backups (default 100)", parseIntOption)
    .option("--max-age <duration>", "then delete backups older than this (default 24h)")
    .action(async (opts: { reason: string; keep?: number; maxAge?: string }, cmd: Command) => {
      const retention: Partial<RetentionPolicy> = {};
      if (opts.keep !== undefined) retention.maxCount = opts.keep;
      if (opts.maxAge !== undefined) retention.maxAgeMs = parseDuration(opts.maxAge);
      const info = await withSqliteStore(cmd, (store) =>
        store.backup({
          reason: opts.reason,
          actor: actorName(),
          command: commandLine(),
          retention,
        }),
      );
      if (globals(cmd).json) return printJson(info);
      print(
        `backup ${info.id}: ${info.path} (log up to seq ${info.lastSeq}, ${size(info.sizeBytes)})`,
      );
    });
}

function registerBackups(state: Command): void {
  state
    .command("backups")
    .description("list the store's backups, newest first")
    .action((_opts: unknown, cmd: Command) => {
      // Read from the backups directory, not the store: this is what a person needs when the
      // store itself cannot be opened.
      const backups = listBackupsOf(storePath(cmd));
      if (globals(cmd).json) return printJson(backups);
      if (backups.length === 0) return print("no backups yet (take one with: mend state backup)");
      print(
        table(
          ["ID", "TIME", "LAST SEQ", "SIZE", "REASON"],
          backups.map((b) => [b.id, time(b.createdAt), b.lastSeq, size(b.sizeBytes), b.reason]),
        ),
      );
    });
}

interface RestoreCliOptions {
  fromBackup?: string;
  fromTransitions?: boolean;
  toSeq?: number;
  toTime?: string;
  force?: boolean;
  yes?: boolean;
  reason?: string;
}

function registerRestore(state: Command): void {
  state
    .command("restore")
    .description("bring the store back to a backup, or rebuild it from the transition journal")
    .option("--from-backup <id>", "latest, a backup id, or a unique id prefix")
    .option(
      "--from-transitions",
      "rebuild from the transition journal (every committed transition; point in time with --to-seq or --to-time)",
    )
    .option(
      "--to-seq <n>",
      "with --from-transitions: stop after the transaction holding this seq",
      parseIntOption,
    )
    .option(
      "--to-time <time>",
      "with --from-transitions: stop before the first transaction after this time (ISO 8601, e.g. 2026-11-23T14:05:00Z)",
    )
    .option("--force", "restore although workers hold live leases: they are fenced out")
    .option("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .addHelpText(
      "after",
      "\nA sound store is backed up first, then restored in place in one transaction: processes that\nhave it open see the restored state at their next transaction. A damaged or missing database\nfile is replaced instead; processes that had it open must be restarted. Restoring to an earlier\npoint moves the journal's later records aside (journal/<name>.abandoned-…), never deletes them.",
    )
    .action(async (opts: RestoreCliOptions, cmd: Command) => {
      if ((opts.fromBackup === undefined) === (opts.fromTransitions === undefined)) {
        throw new MendError(
          "invalid_argument",
          "say what to restore from, one of: --from-backup latest|ID (see mend state backups), or --from-transitions",
        );
      }
      if (opts.fromBackup !== undefined) {
        if (opts.toSeq !== undefined || opts.toTime !== undefined) {
          throw new MendError(
            "invalid_argument",
            "--to-seq and --to-time go with --from-transitions",
          );
        }
        return restoreBackup(cmd, opts.fromBackup, opts);
      }
      await restoreTransitions(cmd, opts);
    });
}

async function restoreBackup(cmd: Command, ref: string, opts: RestoreCliOptions): Promise<void> {
  const path = storePath(cmd);
  const { backup, condition } = planRestore(path, ref, {
    force: opts.force,
    now: systemClock.now(),
  });
  const current =
    condition.damage !== null
      ? `it is damaged (${condition.damage}) and will be replaced`
      : `its log is at seq ${condition.lastSeq}; it is backed up first`;
  await confirm(
    `restore ${path} to backup ${backup.id} (${time(backup.createdAt)}, log up to seq ${backup.lastSeq})? ${current}.`,
    opts.yes,
  );
  const result = await restoreFromBackup(path, ref, {
    who: personActing(opts.reason),
    force: opts.force,
    clock: systemClock,
  });
  // Restores are not entity transitions, so the event is not in the log: the intervention
  // records it, and it is reported here.
  if (globals(cmd).json) {
    return printJson({ event: "state_restored", severity: "warning", path, ...result });
  }
  printRestore(path, result);
}

async function restoreTransitions(cmd: Command, opts: RestoreCliOptions): Promise<void> {
  const path = storePath(cmd);
  const limit = pointInTime(opts);
  const target =
    limit.toSeq !== undefined
      ? `the transaction holding seq ${limit.toSeq}`
      : limit.toTime !== undefined
        ? time(limit.toTime)
        : "every committed transition";
  await confirm(
    `rebuild ${path} from its transition journal, up to ${target}? The store as it is now is backed up first when it can be read.`,
    opts.yes,
  );
  const tty = process.stderr.isTTY && !globals(cmd).json;
  const started = performance.now();
  const result = await restoreFromJournal(path, {
    who: personActing(opts.reason),
    force: opts.force,
    clock: systemClock,
    limit,
    onProgress: tty
      ? (seq) => process.stderr.write(`\rreplaying the journal… seq ${seq.toLocaleString("en-US")}`)
      : undefined,
  });
  if (tty) process.stderr.write("\r\x1b[K");
  const seconds = (performance.now() - started) / 1000;
  if (globals(cmd).json) {
    return printJson({ event: "state_restored", severity: "warning", path, seconds, ...result });
  }
  print(
    `rebuilt from the journal: ${result.rebuilt.transitions.toLocaleString("en-US")} transitions and ${result.rebuilt.interventions} interventions in ${seconds.toFixed(1)} s`,
  );
  if (result.rebuilt.tornRecords > 0) {
    print(
      `left out ${result.rebuilt.tornRecords} record(s) of a last transaction cut short mid-write (it never committed)`,
    );
  }
  printRestore(path, result);
  if (result.newerBackup) {
    print(
      `warning: backup ${result.newerBackup.id} holds the log up to seq ${result.newerBackup.lastSeq}, beyond the journal's end (${result.rebuilt.lastSeq}): the journal lost history; \`mend state restore --from-backup ${result.newerBackup.id}\` brings back more`,
    );
  }
}

/** `--to-seq` / `--to-time`, checked: one at most, and not in the future. */
function pointInTime(opts: RestoreCliOptions): JournalLimit {
  if (opts.toSeq !== undefined && opts.toTime !== undefined) {
    throw new MendError("invalid_argument", "give --to-seq or --to-time, not both");
  }
  if (opts.toSeq !== undefined) {
    if (opts.toSeq < 1) throw new MendError("invalid_argument", "--to-seq must be 1 or more");
    return { toSeq: opts.toSeq };
  }
  if (opts.toTime === undefined) return {};
  const at = Date.parse(opts.toTime);
  if (Number.isNaN(at)) {
    throw new MendError(
      "invalid_argument",
      `--to-time "${opts.toTime}" is not a time; use ISO 8601, e.g. 2026-11-23T14:05:00Z`,
    );
  }
  if (at > systemClock.now()) {
    throw new MendError(
      "invalid_argument",
      `--to-time ${opts.toTime} is in the future; the journal only holds the past`,
    );
  }
  return { toTime: at };
}

function printRestore(path: string, r: RestoreResult): void {
  print(
    `restored ${path} ${r.mode} from ${r.backup.id.startsWith("journal@") ? "the journal" : `backup ${r.backup.id}`} (${time(r.backup.createdAt)}): log up to seq ${r.backup.lastSeq}`,
  );
  if (r.previousSeq !== null) print(`the store's log was at seq ${r.previousSeq}`);
  if (r.safetyBackup) print(`the store as it was is in backup ${r.safetyBackup.id}`);
  if (r.damage !== null) {
    print(`replaced because: ${r.damage}; restart any process that had the old file open`);
  }
  if (r.journalRestarted) {
    print(
      "the transition journal was started afresh from the restored log; restart any process that had the store open",
    );
  }
  if (r.fencedLeases.length > 0) {
    const workers = [...new Set(r.fencedLeases.map((l) => l.workerId ?? "?"))];
    print(
      `${r.fencedLeases.length} lease(s) of worker(s) ${workers.join(", ")} fenced: the restored state decides which they still hold; the rest they are told they lost`,
    );
  }
}

function registerValidate(state: Command): void {
  state
    .command("validate")
    .description(
      "check the store: integrity, hash chain, backups, replay, and the invariants; exit 1 on any violation",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const report = await withCheckedStore(cmd, (store) => validateStore(store, systemClock));
      if (!report.ok) process.exitCode = 1;
      if (globals(cmd).json) return printJson(report);
      for (const check of report.checks) printCheck(check);
      const problems = report.checks.reduce((n, c) => n + c.violations.length, 0);
      print(
        report.ok
          ? "valid"
          : `${problems} violation(s): if the store is damaged, rebuild it with \`mend state restore --from-transitions\` (every committed transition) or restore \`--from-backup latest\` (see \`mend state backups\`); \`mend state repair\` fixes what follows from an intact log`,
      );
    });
}

function registerRepair(state: Command): void {
  state
    .command("repair")
    .description(
      "fix what follows from the transition log, after a backup; list what needs a person",
    )
    .option("--dry-run", "show exactly what would be fixed, change nothing")
    .option("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .addHelpText(
      "after",
      "\nFixed: rows that disagree with the log are rewritten from it, running tasks without a live\nlease go through their retry policy as worker_lost, workstream statuses are recomputed. Not\nguessed: a damaged database or a broken hash chain (restore instead), rows the log never\ncreated, and history that broke an invariant. Exit 1 when anything is left for a person.",
    )
    .action(async (opts: { dryRun?: boolean; reason?: string; yes?: boolean }, cmd: Command) => {
      const dryRun = opts.dryRun === true;
      if (!dryRun) {
        const url = resolveStoreUrl(globals(cmd).store);
        const what = isPostgresUrl(url)
          ? `${redact(url)}?`
          : `${storePath(cmd)}? A backup is taken first.`;
        await confirm(`repair ${what}`, opts.yes);
      }
      const report = await withCheckedStore(cmd, (store) =>
        repairStore(store, {
          clock: systemClock,
          who: personActing(opts.reason),
          planner: createPlanner({}),
          dryRun,
        }),
      );
      if (report.needsPerson.length > 0) process.exitCode = 1;
      if (globals(cmd).json) return printJson(report);
      printRepair(report);
    });
}

function printRepair(r: RepairReport): void {
  const verb = r.dryRun ? "would" : "did";
  if (r.backup) print(`backup ${r.backup.id} taken first`);
  const o = r.outcome;
  if (o) {
    for (const row of o.rows) {
      print(
        `${verb} rewrite ${row.kind} ${row.id} from the log (${row.fields.includes("*") ? "row missing" : row.fields.join(", ")})`,
      );
    }
    for (const id of o.requeued)
      print(`${verb} hand ${id} to its retry policy: running without a live lease`);
    for (const w of o.workstreams) print(`${verb} move workstream ${w.id} ${w.from} → ${w.to}`);
    if (o.rows.length + o.requeued.length + o.workstreams.length === 0) {
      print("nothing to fix from the log");
    }
  }
  for (const n of r.needsPerson) {
    print(`needs a person — ${n.check}:`);
    for (const v of n.violations.slice(0, MAX_LISTED)) {
      print(`    ${v.message}${v.ids.length > 0 ? `  [${v.ids.join(", ")}]` : ""}`);
    }
  }
}

function printCheck(check: CheckResult): void {
  print(`${check.ok ? "✓" : "✗"} ${check.name}: ${check.description}`);
  for (const v of check.violations.slice(0, MAX_LISTED)) {
    print(`    ${v.message}${v.ids.length > 0 ? `  [${v.ids.join(", ")}]` : ""}`);
  }
  if (check.violations.length > MAX_LISTED) {
    print(`    … ${check.violations.length - MAX_LISTED} more (--json lists them all)`);
  }
}

/** The database file of the store the options name. */
function storePath(cmd: Command): string {
  return sqlitePathOf(resolveStoreUrl(globals(cmd).store));
}

/**
 * Opens the store for a check or a repair: a PostgreSQL store as it is; a SQLite store so that a
 * damaged file gives a typed error that says how to restore it, rather than the driver's.
 */
async function withCheckedStore<T>(cmd: Command, fn: (store: Store) => Promise<T>): Promise<T> {
  const url = resolveStoreUrl(globals(cmd).store);
  if (!isPostgresUrl(url)) return withSqliteStore(cmd, fn);
  const store = await openStore(url);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/**
 * Like `withStore`, but a store whose file is damaged gives a typed error that says how to
 * restore it, rather than the driver's.
 */
async function withSqliteStore<T>(cmd: Command, fn: (store: Store) => Promise<T>): Promise<T> {
  const path = storePath(cmd);
  let store: Store | null = null;
  try {
    store = await openStore(path);
    return await fn(store);
  } catch (err) {
    throw damagedStoreError(err, path) ?? err;
  } finally {
    await store?.close();
  }
}

/** Bytes for people: `512 B`, `1.5 MiB`. */
function size(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} ${units[0]}` : `${n.toFixed(1)} ${units[unit]}`;
}
