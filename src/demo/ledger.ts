/**
 * The side-effect ledger: each demo handler execution that reaches success appends one line, as
 * an external system would record a write. Comparing it with the store's completions shows what
 * "handlers run at least once" means in practice.
 */
import { appendFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { MendError } from "../errors.js";

/** One handler execution that reached success. */
export interface LedgerEntry {
  workstreamId: string;
  /** The task's id as written in the definition, e.g. `search-3`. */
  task: string;
  idempotencyKey: string;
  attempt: number;
  /** The worker process that ran it. */
  pid: number;
  at: number;
}

/**
 * Appends `entry` as one line. Synchronous and a single small write in append mode, so lines from
 * concurrent worker processes never interleave.
 */
export function appendLedger(path: string, entry: LedgerEntry): void {
  appendFileSync(path, `${JSON.stringify(entry)}\n`);
}

/**
 * Reads every entry of the ledger at `path`; a missing file is an empty ledger. A torn last line
 * (a worker killed mid-write) is ignored.
 *
 * @throws MendError `store_corrupt` when a complete line is not a ledger entry.
 */
export async function readLedger(path: string): Promise<LedgerEntry[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return [];
    throw err;
  }
  const lines = text.split("\n");
  // Whatever follows the last newline was never completed.
  lines.pop();
  return lines.flatMap((line, i) => {
    if (line.trim() === "") return [];
    try {
      return [JSON.parse(line) as LedgerEntry];
    } catch (err) {
      throw new MendError(
        "store_corrupt",
        `demo ledger ${path}, line ${i + 1} is not JSON`,
        { path, line: i + 1 },
        { cause: err },
      );
    }
  });
}
