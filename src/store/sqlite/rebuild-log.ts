/**
 * The half of a rebuild that runs in a worker thread: reads the journal, verifies its hash chain
 * and copies every transition and intervention into the new database, while the main thread
 * replays the state from the same journal (see rebuild.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { MendError } from "../../errors.js";
import { type JournalLimit, type JournalScan, scanJournal } from "../../state/journal.js";
import { ChainVerifier } from "../chain.js";
import { batchInsert, openUnsynced } from "./bulk.js";
import { threadFailure, type ThreadFailure } from "./threads.js";
import {
  INSERT_INTERVENTION,
  interventionRow,
  TRANSITION_COLUMNS,
  transitionRow,
} from "../sql/codec.js";

/** What the main thread asks for. */
export interface LogCopyRequest {
  /** Marks a rebuild's worker thread (other workers, e.g. a test runner's, carry other data). */
  mendRebuildLog: true;
  journalDir: string;
  target: string;
  limit: JournalLimit;
  /** Indexes of the log, built here once it is copied. */
  logIndexes: string[];
}

/** What the worker answers: the copy's figures, or the error that stopped it. */
export type LogCopyReply =
  | (JournalScan & { transitions: number; interventions: number; lastHash: string | null })
  | ThreadFailure;

/** Copies the log of the journal into `target`, whose schema already exists. */
function copyLog(request: LogCopyRequest): LogCopyReply {
  const db = openUnsynced(request.target);
  try {
    const log = batchInsert(db, "transitions", TRANSITION_COLUMNS.split(", "));
    const insertIntervention = db.prepare(INSERT_INTERVENTION);
    const chain = new ChainVerifier();
    let transitions = 0;
    let interventions = 0;
    let lastHash: string | null = null;
    /** Last seq of the last transaction whose records all verified. */
    let intact = 0;
    db.exec("BEGIN");
    const scan = scanJournal(
      request.journalDir,
      request.limit,
      (tx) => {
        for (const t of tx.transitions) {
          if (!chain.push(t)) {
            const broken = chain.report().brokenAt!;
            // A restore stops at transaction boundaries: the last whole one before the break.
            const way =
              intact > 0
                ? `restore everything before it with --to-seq ${intact}`
                : "nothing before it can be rebuilt from the journal; restore a backup instead (mend state backups)";
            throw new MendError(
              "store_corrupt",
              `the journal's chain breaks at seq ${broken.seq} (${broken.reason}); ${way}`,
              { seq: broken.seq, reason: broken.reason, intactUpTo: intact },
            );
          }
          log.add(transitionRow(t));
          lastHash = t.hash;
          transitions++;
        }
        intact = tx.end.lastSeq;
        for (const i of tx.interventions) {
          insertIntervention.run(interventionRow(i));
          interventions++;
        }
      },
      { decodeData: false },
    );
    log.flush();
    for (const sql of request.logIndexes) db.exec(sql);
    db.exec("COMMIT");
    return { ...scan, transitions, interventions, lastHash };
  } catch (err) {
    return threadFailure(err);
  } finally {
    db.close();
  }
}

if (parentPort && (workerData as Partial<LogCopyRequest> | null)?.mendRebuildLog === true) {
  parentPort.postMessage(copyLog(workerData as LogCopyRequest));
}
