/**
 * A circuit breaker shared by real worker processes (`mend worker`) on one SQLite file: process A
 * runs into an outage (HTTP 503) until the breaker opens, and process B, running the same
 * handlers, claims none of the breaker's tasks while it is open but keeps running other work.
 * When the outage ends, a probe closes the breaker and the held tasks complete.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import type { TransitionRecord } from "../src/model/records.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { type CliProcess, FIXTURES, spawnCli, waitExit } from "./helpers/cli.js";
import { tmpDir } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const HANDLERS = join(FIXTURES, "breaker-handlers.mjs");
const BREAKER = "flaky";

const procs: CliProcess[] = [];

afterEach(() => {
  for (const p of procs.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  }
});

function startWorker(url: string, outage: string): CliProcess {
  const proc = spawnCli(
    [
      "--store",
      url,
      "worker",
      "--handlers",
      HANDLERS,
      "--concurrency",
      "2",
      "--heartbeat",
      "200ms",
      "--lease",
      "2s",
      "--sweep",
      "200ms",
      "--grace",
      "2s",
    ],
    { env: { MEND_TEST_OUTAGE: outage } },
  );
  procs.push(proc);
  return proc;
}

async function workerIdOf(store: Store, proc: CliProcess): Promise<string> {
  return waitFor(
    async () => (await store.listWorkers()).find((w) => w.pid === proc.pid)?.id,
    15_000,
    `worker process ${proc.pid} to register`,
  );
}

async function breakerStatus(store: Store): Promise<string | undefined> {
  return (await store.listBreakers()).find((b) => b.id === BREAKER)?.status;
}

/** Each task_started record with the breaker's status when it was written (log order). */
function startsWithBreakerStatus(log: TransitionRecord[]) {
  let status = "closed";
  const starts: { record: TransitionRecord; breaker: string }[] = [];
  for (const t of log) {
    if (t.entity === "breaker" && t.entityId === BREAKER) status = t.to;
    if (t.event === "task_started") starts.push({ record: t, breaker: status });
  }
  return starts;
}

describe("breaker shared by worker processes", () => {
  it("opened by one process's failures, it holds the breaker's tasks back from another process", async () => {
    const dir = tmpDir();
    const url = `sqlite:${join(dir, "mend.db")}`;
    const outage = join(dir, "outage");
    writeFileSync(outage, "down");

    const store = await openStore(url);
    try {
      const { workstreamId: flakyWs, taskIds: flakyIds } = await store.submit(
        validateDefinition({
          name: "flaky",
          breakers: {
            [BREAKER]: {
              failureThreshold: 3,
              open: "2s",
              halfOpenMaxCalls: 1,
              successThreshold: 1,
            },
          },
          tasks: ["f1", "f2", "f3", "f4"].map((id) => ({
            id,
            handler: "flaky",
            breaker: BREAKER,
            retry: { maxAttempts: 50, backoff: "constant", initial: "100ms", jitter: "none" },
          })),
        }),
      );
      const flaky = new Set(flakyIds);

      // Process A alone runs into the outage until the breaker opens.
      const a = startWorker(url, outage);
      const aId = await workerIdOf(store, a);
      await waitFor(
        async () => (await breakerStatus(store)) === "open",
        20_000,
        "the breaker to open",
      );
      const log = await store.listTransitions();
      const firstOpen = log.find((t) => t.entityId === BREAKER && t.event === "breaker_opened")!;
      expect(firstOpen).toMatchObject({ from: "closed", actor: `worker:${aId}` });
      // The third failure in a row opened it; its own record follows the breaker's.
      const opener = (firstOpen.detail as { task: string }).task;
      const failures = log.filter(
        (t) =>
          (t.seq < firstOpen.seq && flaky.has(t.entityId) && t.from === "running") ||
          t.seq === firstOpen.seq + 1,
      );
      expect(failures).toHaveLength(3);
      expect(failures[2]).toMatchObject({ entityId: opener, event: "task_retry_scheduled" });
      for (const f of failures) {
        expect(f.actor).toBe(`worker:${aId}`);
        expect(
          (f.detail as { failure: { category: string; status: number } }).failure,
        ).toMatchObject({ category: "external_service", status: 503 });
      }

      // Process B, same handlers, joins while the outage lasts, and gets other work too.
      const b = startWorker(url, outage);
      const bId = await workerIdOf(store, b);
      const { workstreamId: plainWs } = await store.submit(
        validateDefinition({
          name: "plain",
          tasks: Array.from({ length: 8 }, (_, i) => ({
            id: `p${i}`,
            handler: "plain",
            input: { ms: 100 },
          })),
        }),
      );
      await waitFor(
        async () => (await store.getWorkstream(plainWs))?.status === "completed",
        20_000,
        "the plain tasks to complete",
      );
      const during = startsWithBreakerStatus(await store.listTransitions());
      // B claimed other work while the breaker was open...
      expect(
        during.some(
          (s) =>
            s.record.actor === `worker:${bId}` &&
            s.breaker === "open" &&
            !flaky.has(s.record.entityId),
        ),
      ).toBe(true);
      // ...and not one of the breaker's tasks, by any process, while it was open.
      expect(during.filter((s) => flaky.has(s.record.entityId) && s.breaker === "open")).toEqual(
        [],
      );
      for (const id of flakyIds) {
        expect((await store.getTask(id))!.status).not.toBe("completed");
      }

      // The outage ends: the next probe succeeds, the breaker closes, the held tasks complete.
      rmSync(outage);
      await waitFor(
        async () => (await store.getWorkstream(flakyWs))?.status === "completed",
        20_000,
        "the flaky tasks to complete after the outage",
      );
      expect(await breakerStatus(store)).toBe("closed");
      const events = (await store.listTransitions({ entityId: BREAKER })).map((t) => t.event);
      expect(events.slice(0, 2)).toEqual(["breaker_created", "breaker_opened"]);
      expect(events).toContain("breaker_half_opened");
      expect(events.at(-1)).toBe("breaker_closed");

      // Over the whole run, no process started a breaker task while it was open.
      const all = startsWithBreakerStatus(await store.listTransitions());
      expect(all.filter((s) => flaky.has(s.record.entityId) && s.breaker === "open")).toEqual([]);
      // While half-open, at most one probe (halfOpenMaxCalls) was started at a time.
      expect(all.some((s) => flaky.has(s.record.entityId) && s.breaker === "half_open")).toBe(true);

      for (const p of [a, b]) p.child.kill("SIGTERM");
      for (const p of [a, b]) expect((await waitExit(p, 10_000)).code, p.stderr()).toBe(0);
      expect(await store.replay()).toEqual(await store.snapshot());
      expect((await store.verifyChain()).ok).toBe(true);
    } finally {
      await store.close();
    }
  }, 60_000);
});
