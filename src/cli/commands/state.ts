import type { Command } from "commander";
import { systemClock } from "../../engine/clock.js";
import { MendError } from "../../errors.js";
import { parseDuration } from "../../model/duration.js";
import { listBackupsOf, type RetentionPolicy } from "../../state/backups.js";
import { type CheckResult, validateStore } from "../../state/validate.js";
import { openStore, resolveStoreUrl } from "../../store/open.js";
import {
  damagedStoreError,
  planRestore,
  type RestoreResult,
  restoreFromBackup,
  sqlitePathOf,
} from "../../store/sqlite/backup.js";
import type { Store } from "../../store/store.js";
import { actorName, commandLine, confirm, globals } from "../context.js";
import { print, printJson, table, time } from "../output.js";
import { parseIntOption } from "./options.js";

/** Violations printed per check; `--json` has them all. */
const MAX_LISTED = 50;

/** `mend state backup|backups|restore|validate`: the store's own safety net. */
export function registerState(program: Command): void {
  const state = program
    .command("state")
    .description("back up, restore and validate the store itself");
  registerBackup(state);
  registerBackups(state);
  registerRestore(state);
  registerValidate(state);
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
  force?: boolean;
  yes?: boolean;
  reason?: string;
}

function registerRestore(state: Command): void {
  state
    .command("restore")
    .description("bring the store back to the state a backup holds")
    .option("--from-backup <id>", "latest, a backup id, or a unique id prefix")
    .option("--force", "restore although workers hold live leases: they are fenced out")
    .option("--reason <text>", "why, for the interventions log")
    .option("-y, --yes", "do not ask for confirmation")
    .addHelpText(
      "after",
      "\nA sound store is backed up first, then restored in place in one transaction: processes that\nhave it open see the restored state at their next transaction. A damaged or missing database\nfile is replaced instead; processes that had it open must be restarted.",
    )
    .action(async (opts: RestoreCliOptions, cmd: Command) => {
      if (opts.fromBackup === undefined) {
        throw new MendError(
          "invalid_argument",
          "say what to restore from: --from-backup latest|ID (see mend state backups)",
        );
      }
      await restoreBackup(cmd, opts.fromBackup, opts);
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
    who: { actor: actorName(), reason: opts.reason ?? null, command: commandLine() },
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

function printRestore(path: string, r: RestoreResult): void {
  print(
    `restored ${path} ${r.mode} from backup ${r.backup.id} (${time(r.backup.createdAt)}): log up to seq ${r.backup.lastSeq}`,
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
      const report = await withSqliteStore(cmd, (store) => validateStore(store, systemClock));
      if (!report.ok) process.exitCode = 1;
      if (globals(cmd).json) return printJson(report);
      for (const check of report.checks) printCheck(check);
      for (const s of report.skipped) print(`- ${s.name}: not checked (${s.reason})`);
      const problems = report.checks.reduce((n, c) => n + c.violations.length, 0);
      print(
        report.ok
          ? "valid"
          : `${problems} violation(s): restore with \`mend state restore --from-backup latest\` if the store is damaged (see \`mend state backups\`)`,
      );
    });
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
