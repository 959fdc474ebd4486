/**
 * `mend worker --supervise` as real processes: the supervisor starts the worker again when its
 * process is SIGKILLed and when `mend worker restart` asks, under the same id with a new pid, and
 * exits with it after `mend worker shutdown`.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { WorkerRecord } from "../src/model/records.js";
import { openStore } from "../src/store/open.js";
import { FIXTURES, runCli, spawnCli, waitExit } from "./helpers/cli.js";
import { tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const HANDLERS = join(FIXTURES, "worker-handlers.mjs");

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("mend worker --supervise", () => {
  it("restarts a SIGKILLed worker and one asked to restart, then exits with it on shutdown", async () => {
    const url = `sqlite:${join(tmpDir(), "mend.db")}`;
    const store = await openStore(url);
    const supervisor = spawnCli([
      "--store",
      url,
      "worker",
      "--handlers",
      HANDLERS,
      "--supervise",
      "--id",
      "sup-1",
      "--heartbeat",
      "100ms",
      "--no-monitor",
    ]);
    const pids: number[] = [];
    try {
      /** The worker once registered (idle) by a process other than those seen so far. */
      const nextProcess = (what: string) =>
        waitFor(
          async () => {
            const w = await store.getWorker("sup-1");
            return w && w.status === "idle" && !pids.includes(w.pid) ? w : null;
          },
          15_000,
          what,
        );
      const first: WorkerRecord = await nextProcess("the supervised worker to register");
      expect(first).toMatchObject({ supervised: true, host: expect.any(String) });
      expect(first.pid).not.toBe(supervisor.pid);
      pids.push(first.pid);

      process.kill(first.pid, "SIGKILL");
      const second = await nextProcess("the worker to be started again after SIGKILL");
      pids.push(second.pid);
      expect(supervisor.stderr()).toContain(
        "worker sup-1 was killed by SIGKILL; restarting in 500ms (crash 1 of at most 5 within 1m)",
      );

      const restart = await runCli([
        "--store",
        url,
        "worker",
        "restart",
        "sup-1",
        "--reason",
        "new release",
        "--yes",
      ]);
      expect(restart.code, restart.stderr).toBe(0);
      const third = await nextProcess("the worker to restart as asked");
      pids.push(third.pid);
      expect(alive(second.pid)).toBe(false);
      expect(supervisor.stderr()).toContain("worker sup-1 started again as requested");

      const shutdown = await runCli([
        "--store",
        url,
        "worker",
        "shutdown",
        "sup-1",
        "--reason",
        "decommission",
        "--yes",
      ]);
      expect(shutdown.code, shutdown.stderr).toBe(0);
      expect(await waitExit(supervisor, 10_000)).toEqual({ code: 0, signal: null });
      expect(alive(third.pid)).toBe(false);
      expect(await store.getWorker("sup-1")).toMatchObject({
        status: "shutdown",
        pid: third.pid,
        control: { action: "shutdown", actor: expect.any(String), reason: "decommission" },
      });
      const events = (await store.listTransitions({ entityId: "sup-1" })).map((t) => t.event);
      expect(events.filter((e) => e === "worker_registered")).toHaveLength(3);
      expect(events).toContain("worker_restart_requested");
      expect(events.at(-1)).toBe("worker_shutdown");
      expect((await store.listInterventions()).map((i) => i.reason)).toEqual([
        "new release",
        "decommission",
      ]);
    } finally {
      for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
      await store.close();
    }
  }, 60_000);
});
