import { countByStatus } from "../engine/inspect.js";
import type { TaskStatus } from "../model/states.js";

/**
 * One status line, redrawn in place on a terminal and printed only on change elsewhere, so logs
 * and CI output stay readable.
 */
export class ProgressLine {
  private last = "";
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly startedAt = Date.now(),
  ) {
    this.tty = Boolean(out.isTTY);
  }

  /** Shows the counts of `tasks` by status, plus an optional note. */
  update(label: string, tasks: readonly { status: TaskStatus }[], note = ""): void {
    const c = countByStatus(tasks);
    const total = tasks.length;
    const done = c.completed + c.skipped;
    const secs = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    const text = `${label}  ${done}/${total} done  ${c.running} running  ${c.queued} queued  ${c.pending} pending  ${c.failed} failed${note ? `  ${note}` : ""}`;
    if (text === this.last) return;
    this.last = text;
    if (this.tty) this.out.write(`\r\x1b[2K${text}  [${secs}s]`);
    else this.out.write(`${text}  [${secs}s]\n`);
  }

  /** Ends the line on a terminal. */
  done(): void {
    if (this.tty && this.last) this.out.write("\n");
  }
}
