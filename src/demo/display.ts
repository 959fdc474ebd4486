/**
 * What the demo shows while it runs: one live progress line, with a line above it for each notable
 * event (a classified failure and the engine's decision, a recovery, a killed worker).
 */
import { ProgressLine } from "../cli/progress.js";
import { formatDuration } from "../model/duration.js";
import type { TransitionRecord } from "../model/records.js";
import type { TaskStatus } from "../model/states.js";
import { COMPLETION_EVENTS, FAILED_ATTEMPT_EVENTS as FAILURE_EVENTS } from "../observe/metrics.js";

/** Seconds since `startedAt`, right-aligned so event lines line up. */
function stamp(startedAt: number): string {
  return `${((Date.now() - startedAt) / 1000).toFixed(1)}s`.padStart(6);
}

/**
 * A {@link ProgressLine} that event lines can be printed above: on a terminal the progress line is
 * cleared, the event printed, and the progress line drawn again below it.
 */
export class LiveDisplay {
  private progress: ProgressLine;
  private readonly tty: boolean;
  private last: { label: string; tasks: readonly { status: TaskStatus }[]; note: string } | null =
    null;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    readonly startedAt = Date.now(),
  ) {
    this.tty = Boolean(out.isTTY);
    this.progress = new ProgressLine(out, startedAt);
  }

  /** Redraws the progress line (on a terminal; elsewhere prints it when it changed). */
  update(label: string, tasks: readonly { status: TaskStatus }[], note = ""): void {
    this.last = { label, tasks, note };
    this.progress.update(label, tasks, note);
  }

  /** Prints one event line, stamped with the time since the start. */
  event(text: string): void {
    const line = `${stamp(this.startedAt)}  ${text}\n`;
    if (!this.tty) {
      this.out.write(line);
      return;
    }
    this.out.write(`\r\x1b[2K${line}`);
    // A fresh line object has nothing drawn, so it draws again even though the counts are unchanged.
    this.progress = new ProgressLine(this.out, this.startedAt);
    if (this.last) this.progress.update(this.last.label, this.last.tasks, this.last.note);
  }

  /** Ends the progress line. */
  done(): void {
    this.progress.done();
  }
}

interface FailureDetail {
  attempt?: number;
  failure?: { category?: string; message?: string };
  decision?: { action?: string; reason?: string };
}

/**
 * Turns the workstream's transitions into event lines and keeps the running counts the progress
 * line shows. Feed it every transition of the workstream, in order.
 */
export class Narrator {
  /** Failed attempts so far. */
  failures = 0;
  /** Tasks completed after at least one failure. */
  recovered = 0;
  private readonly firstFailureAt = new Map<string, number>();
  private readonly categories = new Map<string, string[]>();

  /** Times a breaker opened. */
  breakerOpened = 0;
  /** Tasks revived after their cause cleared. */
  revived = 0;

  /** The event line for `t`, or null when it is not worth a line of its own. */
  narrate(t: TransitionRecord): string | null {
    const reason = (t.detail as { reason?: string } | null)?.reason;
    if (t.entity === "breaker") {
      if (t.event === "breaker_opened") this.breakerOpened++;
      const text: Partial<Record<string, string>> = {
        breaker_opened: `⚡ breaker ${t.entityId} opened (${reason}): its tasks wait in the queue without using attempts`,
        breaker_half_opened: `◐ breaker ${t.entityId} half-open: letting probes through`,
        breaker_closed: `✓ breaker ${t.entityId} closed (${reason})`,
      };
      return text[t.event] ?? null;
    }
    if (t.entity === "pattern" && t.event === "pattern_detected") {
      return `◆ pattern detected: ${(t.detail as { message?: string } | null)?.message ?? t.entityId}`;
    }
    if (t.entity !== "task") return null;
    const key = t.entityId.slice(t.entityId.lastIndexOf("/") + 1);
    const detail = (t.detail ?? {}) as FailureDetail;
    if (FAILURE_EVENTS.has(t.event)) {
      this.failures++;
      if (!this.firstFailureAt.has(t.entityId)) this.firstFailureAt.set(t.entityId, t.at);
      const category = detail.failure?.category ?? "unknown";
      this.categories.set(t.entityId, [...(this.categories.get(t.entityId) ?? []), category]);
      const mark = detail.decision?.action === "retry" ? "⚠" : "✗";
      return `${mark} ${key} attempt ${detail.attempt ?? "?"}: ${detail.failure?.message ?? category} → ${detail.decision?.reason ?? t.event}`;
    }
    if (t.event === "task_revived") {
      this.revived++;
      const d = t.detail as { cause?: string; confidence?: number };
      return `↺ ${key} revived: ${d.cause} (confidence ${d.confidence})`;
    }
    const first = this.firstFailureAt.get(t.entityId);
    if (COMPLETION_EVENTS.has(t.event) && first !== undefined) {
      this.recovered++;
      const after = [...new Set(this.categories.get(t.entityId))].join(", ");
      const attempt = (t.detail as { attempt?: number } | null)?.attempt ?? "?";
      return `✓ ${key} recovered on attempt ${attempt} after ${after}, ${formatDuration(t.at - first)} after its first failure`;
    }
    return null;
  }
}
