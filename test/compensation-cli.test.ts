import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import type { CompensationPlan } from "../src/recovery/compensate.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { fail, runToCompletion, settle, start } from "./helpers/exchange.js";
import { json, runCli } from "./helpers/cli.js";
import { tmpDir } from "./helpers/tmp.js";

const ACTOR = "erin@test";

/** A store in a temp dir, set up in this process, and a runner of CLI commands against it. */
function cliStore() {
  const url = `sqlite:${join(tmpDir(), "mend.db")}`;
  const mend = (...args: string[]) =>
    runCli(["--store", url, ...args], { env: { MEND_ACTOR: ACTOR } });
  const withStore = async <T>(fn: (store: Store) => Promise<T>): Promise<T> => {
    const store = await openStore(url);
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  };
  return { mend, withStore };
}

/** a → b → c, each undone by handler `undo` except c; a and b completed. */
function trip(name: string) {
  return validateDefinition({
    name,
    tasks: [
      { id: "a", handler: "work", compensate: { handler: "undo", idempotent: true } },
      { id: "b", handler: "work", deps: ["a"], compensate: "undo" },
      { id: "c", handler: "work", deps: ["b"], retry: { maxAttempts: 1 } },
    ],
  });
}

/** The trip with c failed for good: the workstream failed (the default policy does not undo it). */
async function failedTrip(store: Store): Promise<string> {
  const { workstreamId } = await store.submit(trip("trip"));
  await runToCompletion(store, ["a"]);
  await runToCompletion(store, ["b"]);
  const [c] = await start(store, ["c"]);
  await settle(store, [fail(c!)]);
  return workstreamId;
}

describe("mend workstream compensate", () => {
  it("--dry-run shows the plan and writes nothing; --yes schedules it", async () => {
    const { mend, withStore } = cliStore();
    const ws = await withStore(failedTrip);
    const before = await withStore(async (s) => [await s.snapshot(), await s.listInterventions()]);

    const [dry, dryJson, noYes] = await Promise.all([
      mend("workstream", "compensate", "trip", "--reason", "trip cancelled", "--dry-run"),
      mend(
        "--json",
        "workstream",
        "compensate",
        ws,
        "--order",
        "parallel",
        "--reason",
        "x",
        "--dry-run",
      ),
      mend("workstream", "compensate", ws, "--reason", "trip cancelled"),
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`trip ${ws} (failed)`);
    expect(dry.stdout).toContain("compensation (reverse order) would run:");
    expect(dry.stdout).toMatch(/UNDO\s+TASK\s+HANDLER\s+AFTER\s+ATTEMPTS\s+TIMEOUT/);
    expect(dry.stdout).toMatch(/undo-b\s+b\s+undo\s+-\s+1 \(not idempotent\)\s+10m/);
    expect(dry.stdout).toMatch(/undo-a\s+a\s+undo\s+undo-b\s+retried \(idempotent\)/);
    expect(dry.stdout).toContain("nothing was changed (dry run)");
    expect(json<CompensationPlan & { dryRun: boolean }>(dryJson)).toEqual({
      workstreamId: ws,
      order: "parallel",
      steps: [
        expect.objectContaining({ key: "undo-b", task: "b", after: [] }),
        expect.objectContaining({ key: "undo-a", task: "a", after: [] }),
      ],
      skipped: [],
      compensationId: null,
      dryRun: true,
    });
    // No terminal to confirm on and no --yes: refused as usage.
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(/compensate trip .*2 compensating tasks run in reverse order/);
    expect(await withStore(async (s) => [await s.snapshot(), await s.listInterventions()])).toEqual(
      before,
    );

    const done = await mend("workstream", "compensate", ws, "--reason", "trip cancelled", "--yes");
    expect(done.code, done.stderr).toBe(0);
    const comp = /compensation (ws_\w+) \(reverse order\) scheduled:/.exec(done.stdout)?.[1];
    expect(comp, done.stdout).toBeDefined();
    await withStore(async (s) => {
      expect(await s.getWorkstream(comp!)).toMatchObject({
        name: "compensate trip",
        compensates: ws,
        status: "active",
      });
      expect((await s.listInterventions()).at(-1)).toMatchObject({
        actor: ACTOR,
        reason: "trip cancelled",
        target: ws,
        after: { compensation: comp, tasks: ["b", "a"] },
      });
      expect(await s.replay()).toEqual(await s.snapshot());
    });

    // Its compensation is under way: asking again is refused.
    const again = await mend("workstream", "compensate", ws, "--reason", "again", "--yes");
    expect(again.code).toBe(4);
    expect(again.stderr).toContain(`compensation ${comp} of workstream ${ws} is still active`);
  });

  it("refuses bad arguments and an active workstream with the documented exit codes", async () => {
    const { mend, withStore } = cliStore();
    const ws = await withStore(async (s) => (await s.submit(trip("busy"))).workstreamId);
    const [badOrder, noReason, active] = await Promise.all([
      mend("workstream", "compensate", ws, "--order", "sideways", "--reason", "x", "--yes"),
      mend("workstream", "compensate", ws, "--yes"),
      mend("workstream", "compensate", ws, "--reason", "x", "--yes"),
    ]);
    expect(badOrder.code).toBe(2);
    expect(badOrder.stderr).toMatch(/expected one of reverse, parallel, dependency/);
    expect(noReason.code).toBe(2);
    expect(active.code).toBe(4);
    expect(active.stderr).toMatch(/is active; compensate it once it has ended/);
  });
});

describe("mend workstream rollback --compensate", () => {
  it("lists what would be compensated on a dry run, then undoes it", async () => {
    const { mend, withStore } = cliStore();
    const { ws, seq } = await withStore(async (s) => {
      const { workstreamId } = await s.submit(trip("trip"));
      await runToCompletion(s, ["a"]);
      const [checkpoint] = await s.listCheckpoints(workstreamId, 1);
      await runToCompletion(s, ["b"]);
      return { ws: workstreamId, seq: checkpoint!.seq };
    });
    const args = ["workstream", "rollback", ws, "--to", String(seq), "--compensate"];
    const dry = await mend(...args, "--reason", "wrong dates", "--dry-run");
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/b\s+completed\s+pending\s+1 → 0\s+completed since the checkpoint/);
    expect(dry.stdout).toContain("compensation (reverse order) would run:");
    expect(dry.stdout).toMatch(/undo-b\s+b\s+undo/);
    expect(dry.stdout).not.toContain("kept:");

    const done = json<{ compensation: CompensationPlan }>(
      await mend("--json", ...args, "--reason", "wrong dates", "--yes"),
    );
    expect(done.compensation.steps.map((s) => s.key)).toEqual(["undo-b"]);
    await withStore(async (s) => {
      const comp = (await s.getWorkstream(done.compensation.compensationId!))!;
      expect(comp.compensates).toBe(ws);
      expect((await s.getTask(`${ws}/b`))!.status).toBe("pending");
    });
  });
});

describe("mend workstream cancel", () => {
  it("cancels the open tasks and compensates the completed ones (the default policy)", async () => {
    const { mend, withStore } = cliStore();
    const ws = await withStore(async (s) => {
      const { workstreamId } = await s.submit(trip("trip"));
      await runToCompletion(s, ["a"]);
      return workstreamId;
    });
    const noYes = await mend("workstream", "cancel", ws, "--reason", "plans changed");
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(/completed tasks are then compensated \(reverse order\)/);

    const human = await mend("workstream", "cancel", ws, "--reason", "plans changed", "--yes");
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`cancelled ${ws}: 2 tasks cancelled (b, c)`);
    expect(human.stdout).toMatch(/compensation ws_\w+ \(reverse order\) scheduled:/);
    expect(human.stdout).toMatch(/undo-a\s+a\s+undo/);

    const twice = await mend("workstream", "cancel", ws, "--reason", "again", "--yes");
    expect(twice.code).toBe(4);
    expect(twice.stderr).toMatch(/is cancelled; only an active or failed workstream/);
  });
});
