/** The supervisor's decisions, on fake processes and a fake clock. */
import { describe, expect, it } from "vitest";
import { supervisedWorkerArgs } from "../src/cli/commands/supervise.js";
import { FakeClock } from "../src/engine/clock.js";
import {
  type ChildExit,
  RESTART_EXIT_CODE,
  type StartReason,
  type SupervisedProcess,
  Supervisor,
  type SupervisorOutcome,
} from "../src/engine/supervisor.js";

/** A process that exits when the test says so; signals are recorded. */
class FakeProcess implements SupervisedProcess {
  readonly signals: NodeJS.Signals[] = [];
  readonly exited: Promise<ChildExit>;
  exit!: (e: ChildExit) => void;
  constructor(readonly pid: number) {
    this.exited = new Promise((resolve) => (this.exit = resolve));
  }
  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

function harness(options: { maxRestarts?: number; windowMs?: number } = {}) {
  const clock = new FakeClock();
  const started: { child: FakeProcess; why: StartReason; at: number }[] = [];
  const crashes: { delayMs: number; restarts: number }[] = [];
  let pid = 100;
  const supervisor = new Supervisor({
    start: () => new FakeProcess(++pid),
    clock,
    ...options,
    onStart: (child, why) => started.push({ child: child as FakeProcess, why, at: clock.now() }),
    onCrash: (_exit, delayMs, restarts) => crashes.push({ delayMs, restarts }),
  });
  let outcome: SupervisorOutcome | null = null;
  void supervisor.run().then((o) => (outcome = o));
  const last = () => started.at(-1)!.child;
  return { clock, started, crashes, supervisor, last, outcome: () => outcome };
}

describe("Supervisor", () => {
  it("restarts a crashed worker after a doubling backoff, and one that asks at once", async () => {
    const h = harness();
    await tick();
    expect(h.started.map((s) => s.why)).toEqual(["first"]);
    h.last().exit({ code: null, signal: "SIGKILL" });
    await tick();
    expect(h.crashes).toEqual([{ delayMs: 500, restarts: 1 }]);
    await h.clock.advanceAsync(499);
    expect(h.started).toHaveLength(1);
    await h.clock.advanceAsync(1);
    expect(h.started.map((s) => s.why)).toEqual(["first", "crashed"]);
    h.last().exit({ code: 1, signal: null });
    await tick();
    expect(h.crashes.at(-1)).toEqual({ delayMs: 1000, restarts: 2 });
    await h.clock.advanceAsync(1000);
    // A requested restart is no crash: at once, and not counted.
    h.last().exit({ code: RESTART_EXIT_CODE, signal: null });
    await tick();
    expect(h.started.map((s) => s.why)).toEqual([
      "first",
      "crashed",
      "crashed",
      "restart_requested",
    ]);
    expect(h.started.at(-1)!.at).toBe(h.started.at(-2)!.at);
    expect(h.crashes).toHaveLength(2);
    // Exit 0 (an operator's shutdown): the supervisor stops.
    h.last().exit({ code: 0, signal: null });
    await tick();
    expect(h.outcome()).toEqual({ kind: "stopped", exit: { code: 0, signal: null } });
    expect(h.started).toHaveLength(4);
  });

  it("gives up after more than maxRestarts crashes within the window; older crashes do not count", async () => {
    const h = harness({ maxRestarts: 2, windowMs: 10_000 });
    await tick();
    const crash = async () => {
      h.last().exit({ code: 1, signal: null });
      await tick();
    };
    await crash();
    await h.clock.advanceAsync(500);
    await crash();
    await h.clock.advanceAsync(1_000);
    // The window slides past the first two crashes: this one is the first again.
    await h.clock.advanceAsync(10_000);
    await crash();
    expect(h.crashes.at(-1)!.restarts).toBe(1);
    await h.clock.advanceAsync(500);
    await crash();
    await h.clock.advanceAsync(1_000);
    expect(h.outcome()).toBeNull();
    await crash();
    expect(h.outcome()).toEqual({
      kind: "gave_up",
      exit: { code: 1, signal: null },
      restarts: 2,
      windowMs: 10_000,
    });
    expect(h.started).toHaveLength(5);
  });

  it("passes signals to the worker and stops once it exited; a signal during a backoff stops at once", async () => {
    const h = harness();
    await tick();
    const first = h.last();
    h.supervisor.signal("SIGTERM");
    h.supervisor.signal("SIGINT");
    expect(first.signals).toEqual(["SIGTERM", "SIGINT"]);
    first.exit({ code: 130, signal: null });
    await tick();
    expect(h.outcome()).toEqual({ kind: "stopped", exit: { code: 130, signal: null } });

    const g = harness();
    await tick();
    g.last().exit({ code: 1, signal: null });
    await tick();
    g.supervisor.signal("SIGTERM");
    await tick();
    expect(g.outcome()).toMatchObject({ kind: "stopped" });
    expect(g.started).toHaveLength(1);
    expect(g.clock.pending).toBe(0);
  });
});

describe("supervisedWorkerArgs", () => {
  it("drops the supervisor's own options and pins the worker's id", () => {
    const argv = [
      "--store",
      "sqlite:x.db",
      "worker",
      "--handlers",
      "h.mjs",
      "--supervise",
      "--max-restarts",
      "3",
      "--restart-window=2m",
      "--capabilities",
      "gpu",
    ];
    expect(supervisedWorkerArgs(argv, "w_1")).toEqual([
      "--store",
      "sqlite:x.db",
      "worker",
      "--handlers",
      "h.mjs",
      "--capabilities",
      "gpu",
      "--id",
      "w_1",
    ]);
    expect(supervisedWorkerArgs(["worker", "--supervise", "--id", "mine"], null)).toEqual([
      "worker",
      "--id",
      "mine",
    ]);
  });
});
