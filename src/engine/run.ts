import type { HandlerMap } from "../model/handler.js";
import type { TaskRecord, WorkstreamRecord } from "../model/records.js";
import type { Logger } from "../observe/logger.js";
import type { Store } from "../store/store.js";
import { type Clock, systemClock } from "./clock.js";
import { Monitor } from "./Monitor.js";
import { submitWorkstream } from "./submit.js";
import { Worker } from "./Worker.js";

/** Options of {@link runWorkstream}. */
export interface RunOptions {
  store: Store;
  definition: unknown;
  handlers: HandlerMap;
  concurrency?: number;
  clock?: Clock;
  logger?: Logger;
  /** How often progress is read and reported, in ms (default 200). */
  progressMs?: number;
  onProgress?: (workstream: WorkstreamRecord, tasks: TaskRecord[]) => void;
}

/** Result of {@link runWorkstream}. */
export interface RunResult {
  workstream: WorkstreamRecord;
  tasks: TaskRecord[];
}

/**
 * Submits a workstream and runs it to the end in this process: a worker and a monitor on the
 * given store. Other workers on the same store may help. The end is when the workstream is no
 * longer active and none of its failed tasks is waiting for an automatic revival.
 */
export async function runWorkstream(options: RunOptions): Promise<RunResult> {
  const { store } = options;
  const clock = options.clock ?? systemClock;
  const { workstreamId } = await submitWorkstream(store, options.definition, {
    handlers: options.handlers,
    actor: "cli",
  });
  const worker = new Worker({
    store,
    handlers: options.handlers,
    concurrency: options.concurrency,
    clock: options.clock,
    logger: options.logger,
  });
  const monitor = new Monitor({ store, clock: options.clock, logger: options.logger });
  await worker.start();
  monitor.start();
  try {
    for (;;) {
      const [ws, tasks] = await Promise.all([
        store.getWorkstream(workstreamId),
        store.listTasks(workstreamId),
      ]);
      options.onProgress?.(ws!, tasks);
      // A failed workstream whose failed tasks wait for a revival (escalation level 1) is not
      // finished: the monitor revives them once their cause clears, or escalates them.
      const awaitingRevival =
        ws!.status === "failed" &&
        tasks.some((t) => t.status === "failed" && t.escalation?.level === 1);
      if (ws!.status !== "active" && !awaitingRevival) return { workstream: ws!, tasks };
      await Promise.race([
        new Promise<void>((r) => clock.setTimeout(r, options.progressMs ?? 200)),
        worker.done,
      ]);
    }
  } finally {
    await monitor.stop();
    await worker.stop(5_000);
  }
}
