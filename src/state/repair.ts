/**
 * `mend state repair`: fixes what can be derived from the transition log and lists what needs a
 * person instead of guessing. Everything goes through the {@link Store} interface.
 */
import type { Clock } from "../engine/clock.js";
import type { Actor, FailurePlanner, RepairOutcome, Store } from "../store/store.js";
import type { BackupInfo } from "./backups.js";
import {
  REAPER_GRACE_MS,
  type ValidationReport,
  type Violation,
  validateStore,
} from "./validate.js";

/** What `repairStore` did, and what it could not. */
export interface RepairReport {
  dryRun: boolean;
  /** The backup taken before anything changed (none for a dry run or when nothing could be done). */
  backup: BackupInfo | null;
  /** What was (or would be) fixed; null when the store is too damaged to derive anything. */
  outcome: RepairOutcome | null;
  /** Problems left for a person: each check that still fails, with its violations. */
  needsPerson: { check: string; violations: Violation[] }[];
  /** Validation before the repair. */
  before: ValidationReport;
}

/** Checks whose failure means the log itself cannot be trusted to rebuild state from. */
const FOUNDATIONS = new Set(["integrity", "chain"]);

/**
 * Validates the store; when its foundations (the database's integrity and the hash chain) hold,
 * takes a backup and fixes what follows from the log: rows that disagree with it, running tasks
 * without a live lease, workstream statuses. Then validates again and reports what is left. When
 * the foundations do not hold nothing is changed: the way out is a restore, and the report says so.
 */
export async function repairStore(
  store: Store,
  options: { clock: Clock; who: Actor; planner: FailurePlanner; dryRun: boolean },
): Promise<RepairReport> {
  const before = await validateStore(store, options.clock);
  const broken = failing(before).filter((c) => FOUNDATIONS.has(c.check));
  if (broken.length > 0) {
    return {
      dryRun: options.dryRun,
      backup: null,
      outcome: null,
      needsPerson: [
        ...broken,
        {
          check: "restore",
          violations: [
            {
              message:
                "the log cannot be trusted to rebuild state from: restore with `mend state restore --from-transitions` (the journal) or `--from-backup latest`",
              ids: [],
            },
          ],
        },
      ],
      before,
    };
  }
  // A PostgreSQL store is backed up by the server's own tools, not by Mend.
  const backup =
    options.dryRun || !store.backupsSupported
      ? null
      : await store.backup({ reason: "before repair" });
  const outcome = await store.repair({
    who: options.who,
    planner: options.planner,
    leaseGraceMs: REAPER_GRACE_MS,
    dryRun: options.dryRun,
  });
  const after = options.dryRun ? before : await validateStore(store, options.clock);
  const needsPerson = failing(after).filter(
    // A dry run changed nothing, so what it would fix still shows as failing: leave those out.
    (c) => !options.dryRun || !DERIVABLE.has(c.check),
  );
  if (outcome.unexplained.length > 0) {
    needsPerson.push({
      check: "unexplained-rows",
      violations: outcome.unexplained.map((u) => ({
        message: `${u.kind} ${u.id} exists but the log never created it`,
        ids: [u.id],
      })),
    });
  }
  return { dryRun: options.dryRun, backup, outcome, needsPerson, before };
}

/** Checks whose violations a repair fixes. */
const DERIVABLE = new Set(["replay", "leases", "terminal-holds-nothing"]);

function failing(report: ValidationReport): { check: string; violations: Violation[] }[] {
  return report.checks
    .filter((c) => !c.ok)
    .map((c) => ({ check: c.name, violations: c.violations }));
}
