/**
 * Real worker processes (`mend worker`) on one SQLite file: one is SIGKILLed while it holds running
 * tasks, and the others must finish the workstream with every task completed exactly once.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../src/model/records.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { type CliProcess, FIXTURES, runCli, spawnCli, waitExit } from "./helpers/cli.js";
import { completionsPerTask } from "./helpers/specs.js";
import { tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const HANDLERS = join(FIXTURES, "worker-handlers.mjs");

interface LedgerLine {
  taskId: string;
  attempt: number;
  pid: number;
  phase: "start" | "end";
}

function readLedger(path: string): LedgerLine[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as LedgerLine);
}

async function submitFile(url: string, dir: string, definition: unknown): Promise<string> {
  const file = join(dir, "workstream.json");
  writeFileSync(file, JSON.stringify(definition));
  const r = await runCli(["--store", url, "--json", "submit", file, "--handlers", HANDLERS]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { workstream: string }).workstream;
}

function startWorker(url: string, ledger: string, extra: string[] = [], env = {}): CliProcess {
  return spawnCli(
    [
      "--store",
      url,
      "worker",
      "--handlers",
      HANDLERS,
      "--concurrency",
      "8",
      "--heartbeat",
      "200ms",
      "--lease",
      "1s",
      "--sweep",
      "200ms",
      ...extra,
    ],
    { env: { MEND_TEST_LEDGER: ledger, ...env } },
  );
}

async function workerOf(store: Store, pid: number) {
  return (await store.listWorkers()).find((w) => w.pid === pid);
}

describe("worker processes", () => {
  it("a SIGKILLed worker's tasks run again elsewhere; every task completes exactly once", async () => {
    const dir = tmpDir();
    const url = `sqlite:${join(dir, "mend.db")}`;
    const ledgerPath = join(dir, "ledger.jsonl");
    const N = 200;
    const tasks = Array.from({ length: N }, (_, i) => {
      const id = `t${String(i).padStart(3, "0")}`;
      // Every 20th task joins the three before it, so dependencies are exercised too.
      const deps =
        i % 20 === 19
          ? [i - 1, i - 2, i - 3].map((j) => `t${String(j).padStart(3, "0")}`)
          : undefined;
      return { id, handler: "work", ...(deps ? { deps } : {}) };
    });
    const wsId = await submitFile(url, dir, { name: "crash-test", tasks });

    const store = await openStore(url);
    try {
      const workers = [0, 1, 2].map(() => startWorker(url, ledgerPath));
      const pids = new Set(workers.map((w) => w.pid));

      // Once some tasks are done, find a worker of ours that holds running tasks, and kill it.
      let victimTasks: TaskRecord[] = [];
      const victim = await waitFor(
        async () => {
          const all = await store.listTasks(wsId);
          if (all.filter((t) => t.status === "completed").length < 15) return null;
          const registered = await store.listWorkers();
          let best: { id: string; pid: number; running: TaskRecord[] } | null = null;
          for (const w of registered) {
            if (!pids.has(w.pid)) continue;
            const running = all.filter((t) => t.status === "running" && t.leaseWorker === w.id);
            // Several tasks, so that some are surely still running when the signal lands.
            if (running.length >= 3 && (!best || running.length > best.running.length)) {
              best = { id: w.id, pid: w.pid, running };
            }
          }
          if (!best) return null;
          victimTasks = best.running;
          return best;
        },
        30_000,
        "a worker holding running tasks after some completions",
        10,
      );
      const victimProc = workers.find((w) => w.pid === victim.pid)!;
      victimProc.child.kill("SIGKILL");
      const killed = await waitExit(victimProc, 5_000);
      expect(killed.signal).toBe("SIGKILL");
      expect(victimTasks.length).toBeGreaterThan(0);

      await waitFor(
        async () => (await store.getWorkstream(wsId))?.status !== "active",
        60_000,
        "the workstream to finish",
        50,
      );
      const ws = (await store.getWorkstream(wsId))!;
      const final = await store.listTasks(wsId);
      expect(final.filter((t) => t.status !== "completed").map((t) => [t.key, t.status])).toEqual(
        [],
      );
      expect(ws.status).toBe("completed");
      expect(final).toHaveLength(N);

      const log = await store.listTransitions({ workstreamId: wsId });
      const completions = completionsPerTask(log);
      expect(completions.size).toBe(N);
      for (const t of final) expect(completions.get(t.id), t.id).toBe(1);
      // The store's own count agrees.
      const [done, recovered] = await Promise.all([
        store.countEvents("task_completed", wsId),
        store.countEvents("task_recovered", wsId),
      ]);
      for (const t of final) {
        expect((done.get(t.id) ?? 0) + (recovered.get(t.id) ?? 0), t.id).toBe(1);
      }

      // The killed worker's leases expired and were swept as worker_lost.
      const lost = log.filter(
        (t) => t.event === "worker_lost" && (t.detail as { worker?: string })?.worker === victim.id,
      );
      expect(lost.length).toBeGreaterThan(0);
      const lostIds = new Set(lost.map((t) => t.entityId));
      const survivorPids = [...pids].filter((p) => p !== victim.pid);

      // Each of them ran again in another process, with a later attempt, which completed it. (A
      // task the victim had claimed may not have reached its handler before the kill landed.)
      const ledger = readLedger(ledgerPath);
      let startedByVictim = 0;
      for (const ev of lost) {
        const id = ev.entityId;
        const lostAttempt = (ev.detail as { attempt: number }).attempt;
        const runs = ledger.filter((l) => l.taskId === id && l.phase === "start");
        const byVictim = runs.filter((l) => l.pid === victim.pid);
        const bySurvivor = runs.filter((l) => survivorPids.includes(l.pid));
        if (byVictim.length > 0) startedByVictim++;
        for (const l of byVictim) expect(l.attempt).toBeLessThanOrEqual(lostAttempt);
        expect(bySurvivor.length, `${id} re-run by another worker`).toBeGreaterThan(0);
        expect(Math.max(...bySurvivor.map((l) => l.attempt))).toBeGreaterThan(lostAttempt);
        const task = final.find((t) => t.id === id)!;
        expect((task.output as { pid: number }).pid).not.toBe(victim.pid);
        const completion = log.find(
          (t) =>
            t.entityId === id && (t.event === "task_completed" || t.event === "task_recovered"),
        )!;
        expect(completion.event).toBe("task_recovered");
        expect(completion.actor).not.toBe(`worker:${victim.id}`);
      }
      // The kill interrupted handlers that were really running.
      expect(startedByVictim).toBeGreaterThan(0);
      expect(lostIds.size).toBe(lost.length);
      // Nothing the killed worker held is lost: each of its tasks is completed (checked above) and
      // either finished before the kill landed or was swept.
      for (const t of victimTasks) {
        expect(final.find((f) => f.id === t.id)!.status).toBe("completed");
      }
      // No task was completed by a process that did not run it to the end.
      const ends = new Set(
        ledger.filter((l) => l.phase === "end").map((l) => `${l.taskId}@${l.pid}`),
      );
      for (const t of final) {
        expect(ends.has(`${t.id}@${(t.output as { pid: number }).pid}`), t.id).toBe(true);
      }

      // Graceful stop of the survivors: exit 0, marked shutdown.
      const survivors = workers.filter((w) => w !== victimProc);
      for (const w of survivors) w.child.kill("SIGTERM");
      for (const w of survivors) {
        const exit = await waitExit(w, 10_000);
        expect(exit, w.stderr()).toEqual({ code: 0, signal: null });
      }
      for (const w of survivors) {
        const rec = await workerOf(store, w.pid);
        expect(rec?.status).toBe("shutdown");
        const events = (await store.listTransitions({ entityId: rec!.id })).map((t) => t.event);
        expect(events).toContain("worker_shutdown");
      }

      // With every process stopped, the log rebuilds the state exactly and the chain holds.
      expect(await store.replay()).toEqual(await store.snapshot());
      expect((await store.verifyChain()).ok).toBe(true);
    } finally {
      await store.close();
    }
  }, 120_000);

  it("SIGTERM with a short grace releases in-flight tasks and exits; another worker takes them", async () => {
    const dir = tmpDir();
    const url = `sqlite:${join(dir, "mend.db")}`;
    const ledgerPath = join(dir, "ledger.jsonl");
    const wsId = await submitFile(url, dir, {
      name: "graceful",
      tasks: [1, 2, 3].map((i) => ({ id: `long${i}`, handler: "slow" })),
    });
    const store = await openStore(url);
    try {
      const first = startWorker(url, ledgerPath, ["--grace", "200ms"]);
      const running = await waitFor(
        async () => {
          const tasks = await store.listTasks(wsId);
          return tasks.every((t) => t.status === "running") ? tasks : null;
        },
        20_000,
        "all three long tasks to run",
      );
      const worker = (await workerOf(store, first.pid))!;
      expect(running.every((t) => t.leaseWorker === worker.id)).toBe(true);

      const t0 = Date.now();
      first.child.kill("SIGTERM");
      const exit = await waitExit(first, 10_000);
      expect(exit, first.stderr()).toEqual({ code: 0, signal: null });
      // Well before the 60 s the tasks would take: the grace period bounded the wait.
      expect(Date.now() - t0).toBeLessThan(8_000);

      const tasks = await store.listTasks(wsId);
      for (const t of tasks) {
        expect(t).toMatchObject({ status: "queued", attempts: 0, leaseToken: null });
        const last = (await store.listTransitions({ entityId: t.id })).at(-1)!;
        expect(last).toMatchObject({
          event: "task_released",
          from: "running",
          to: "queued",
          actor: `worker:${worker.id}`,
        });
      }
      expect((await workerOf(store, first.pid))!.status).toBe("shutdown");
      // The handlers were started, and none ran to the end.
      const ledger = readLedger(ledgerPath);
      expect(ledger.filter((l) => l.phase === "start").length).toBe(3);
      expect(ledger.filter((l) => l.phase === "end")).toEqual([]);

      // A fresh worker takes the released tasks at once (they are due now) and finishes them.
      const second = startWorker(url, ledgerPath, [], { MEND_TEST_SLOW_MS: "10" });
      await waitFor(
        async () => (await store.getWorkstream(wsId))?.status === "completed",
        20_000,
        "the released tasks to complete on another worker",
      );
      for (const t of await store.listTasks(wsId)) {
        // A release does not use up an attempt.
        expect(t.attempts).toBe(1);
        expect((t.output as { pid: number }).pid).toBe(second.pid);
      }
      second.child.kill("SIGTERM");
      expect((await waitExit(second, 10_000)).code).toBe(0);
      expect(await store.replay()).toEqual(await store.snapshot());
      expect((await store.verifyChain()).ok).toBe(true);
    } finally {
      await store.close();
    }
  }, 60_000);
});
