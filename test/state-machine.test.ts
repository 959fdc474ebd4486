import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import {
  assertTransition,
  BREAKER_STATUSES,
  canTransition,
  type EntityKind,
  FINAL_WORKSTREAM_STATUSES,
  PATTERN_STATUSES,
  RESOURCE_STATUSES,
  TASK_STATUSES,
  TERMINAL_TASK_STATUSES,
  TRANSITIONS,
  WORKER_STATUSES,
  WORKSTREAM_STATUSES,
} from "../src/model/states.js";

const STATUSES: Record<EntityKind, readonly string[]> = {
  task: TASK_STATUSES,
  workstream: WORKSTREAM_STATUSES,
  worker: WORKER_STATUSES,
  breaker: BREAKER_STATUSES,
  degradation: ["normal", "degraded"],
  pattern: PATTERN_STATUSES,
  resource: RESOURCE_STATUSES,
};
const KINDS = Object.keys(STATUSES) as EntityKind[];

/** The table as data the tests own, so a silent edit of the table is caught here. */
const EXPECTED: Record<EntityKind, Record<string, string[]>> = {
  task: {
    "": ["pending", "queued"],
    // pending → pending: a dependency removed or attempts reset while it waits.
    pending: ["pending", "queued", "cancelled", "skipped"],
    // queued → failed: the overall deadline passed while it waited.
    queued: ["running", "pending", "cancelled", "skipped", "failed"],
    // running → pending: a rollback or workstream re-run revokes the lease; running → running:
    // reported stalled, or progressing again after a stall.
    running: ["completed", "queued", "failed", "cancelled", "pending", "running"],
    // completed → pending: a person re-runs finished work (workstream retry, resume).
    completed: ["pending"],
    // failed → failed: escalated once automatic recovery had its time.
    failed: ["queued", "pending", "skipped", "failed"],
    cancelled: ["queued", "pending", "skipped"],
    skipped: ["queued", "pending"],
  },
  workstream: {
    "": ["active"],
    // active → active: a rollback or re-run of a workstream that is still running.
    active: ["active", "completed", "failed", "cancelled"],
    completed: ["active", "archived", "merged"],
    failed: ["active", "completed", "cancelled", "archived"],
    cancelled: ["active", "archived"],
    archived: [],
    merged: [],
  },
  worker: {
    "": ["idle", "busy"],
    // idle → idle: a worker re-registering under the same id (a restarted process), or an
    // operator's request stored; busy → busy: the same request; shutdown → shutdown: a forced
    // shutdown of a worker presumed dead.
    idle: ["idle", "busy", "unresponsive", "shutdown"],
    busy: ["idle", "busy", "unresponsive", "shutdown"],
    unresponsive: ["idle", "busy", "shutdown"],
    shutdown: ["idle", "busy", "shutdown"],
  },
  breaker: {
    // (new) → open: a person opens a breaker no task has used yet.
    "": ["closed", "open"],
    // closed → closed: a reset or new settings; open → open: forced open or new settings;
    // half_open → half_open: new settings while probes run.
    closed: ["closed", "open"],
    open: ["open", "half_open", "closed"],
    half_open: ["closed", "open", "half_open"],
  },
  degradation: {
    "": ["normal", "degraded"],
    normal: ["degraded"],
    degraded: ["degraded", "normal"],
  },
  pattern: {
    "": ["active"],
    active: ["confirmed", "false_positive"],
    confirmed: [],
    false_positive: [],
  },
  resource: {
    // (new) → unavailable: a person takes a resource no task has named yet out of service.
    "": ["available", "unavailable"],
    // Self-loops: the limit changed.
    available: ["available", "exhausted", "unavailable"],
    exhausted: ["exhausted", "available", "unavailable"],
    unavailable: ["unavailable", "available"],
  },
};

function refusal(kind: EntityKind, from: string | null, to: string): unknown {
  try {
    assertTransition(kind, "x", from, to);
    return null;
  } catch (err) {
    return err;
  }
}

describe("transition table", () => {
  it("is exactly the documented table", () => {
    for (const kind of KINDS) {
      const table = TRANSITIONS[kind] as Record<string, readonly string[]>;
      expect(Object.keys(table).sort()).toEqual(["", ...STATUSES[kind]].sort());
      for (const [from, tos] of Object.entries(EXPECTED[kind])) {
        expect([...table[from]!].sort(), `${kind} ${from || "(new)"}`).toEqual([...tos].sort());
      }
    }
  });

  it("only names known statuses", () => {
    for (const kind of KINDS) {
      for (const tos of Object.values(TRANSITIONS[kind])) {
        for (const to of tos) expect(STATUSES[kind]).toContain(to);
      }
    }
  });

  for (const kind of KINDS) {
    const sources: (string | null)[] = [null, ...STATUSES[kind]];
    const pairs = sources.flatMap((from) => STATUSES[kind].map((to) => [from, to] as const));

    it(`${kind}: accepts every allowed transition`, () => {
      let allowed = 0;
      for (const [from, to] of pairs) {
        if (!EXPECTED[kind][from ?? ""]!.includes(to)) continue;
        allowed++;
        expect(canTransition(kind, from, to)).toBe(true);
        expect(() => assertTransition(kind, "x", from, to)).not.toThrow();
      }
      expect(allowed).toBeGreaterThan(0);
    });

    it(`${kind}: refuses every other pair with illegal_transition`, () => {
      let refused = 0;
      for (const [from, to] of pairs) {
        if (EXPECTED[kind][from ?? ""]!.includes(to)) continue;
        refused++;
        expect(canTransition(kind, from, to), `${from} -> ${to}`).toBe(false);
        const err = refusal(kind, from, to);
        expect(err, `${kind} ${from} -> ${to}`).toBeInstanceOf(MendError);
        expect((err as MendError).code).toBe("illegal_transition");
        expect((err as MendError).exitCode).toBe(4);
        expect((err as MendError).context).toMatchObject({ kind, id: "x", from, to });
        expect((err as MendError).message).toContain(from ?? "(new)");
        expect((err as MendError).message).toContain(to);
      }
      // (Almost) every status to itself is refused, so there are many refusals.
      expect(refused).toBeGreaterThanOrEqual(STATUSES[kind].length - 1);
    });

    it(`${kind}: refuses unknown statuses on either side`, () => {
      expect((refusal(kind, "bogus", STATUSES[kind][0]!) as MendError).code).toBe(
        "illegal_transition",
      );
      expect((refusal(kind, null, "bogus") as MendError).code).toBe("illegal_transition");
      for (const s of STATUSES[kind]) {
        expect((refusal(kind, s, "bogus") as MendError).code).toBe("illegal_transition");
      }
    });
  }

  it("no status moves to itself, except a re-registering worker and records of edits", () => {
    const selfLoops = new Set([
      "worker idle",
      // An operator's shutdown or restart request to a busy worker; a forced shutdown of a worker
      // presumed dead that still holds leases.
      "worker busy",
      "worker shutdown",
      "task pending",
      "task failed",
      // Reported stalled, or progressing again after a stall.
      "task running",
      "workstream active",
      // A breaker reset or reconfigured while closed, forced open or reconfigured while open,
      // reconfigured while half-open.
      "breaker closed",
      "breaker open",
      "breaker half_open",
      // A move between two degraded levels.
      "degradation degraded",
      // A resource's limit changed.
      "resource available",
      "resource exhausted",
      "resource unavailable",
    ]);
    for (const kind of KINDS) {
      for (const s of STATUSES[kind]) {
        expect(canTransition(kind, s, s), `${kind} ${s}`).toBe(selfLoops.has(`${kind} ${s}`));
      }
    }
  });

  it("a completed task only goes back to pending, when a person re-runs it", () => {
    expect(TRANSITIONS.task.completed).toEqual(["pending"]);
    for (const to of TASK_STATUSES.filter((s) => s !== "pending")) {
      const err = refusal("task", "completed", to);
      expect((err as MendError).code).toBe("illegal_transition");
    }
  });

  it("archived and merged workstreams are final", () => {
    expect([...FINAL_WORKSTREAM_STATUSES].sort()).toEqual(["archived", "merged"]);
    for (const s of FINAL_WORKSTREAM_STATUSES) {
      expect(TRANSITIONS.workstream[s]).toEqual([]);
    }
    // Only a completed workstream's results can have been merged.
    for (const s of WORKSTREAM_STATUSES) {
      expect(canTransition("workstream", s, "merged")).toBe(s === "completed");
      expect(canTransition("workstream", s, "archived")).toBe(
        ["completed", "failed", "cancelled"].includes(s),
      );
    }
  });

  it("terminal task statuses are not left except by operator/revival moves", () => {
    expect([...TERMINAL_TASK_STATUSES].sort()).toEqual(
      ["cancelled", "completed", "failed", "skipped"].sort(),
    );
    for (const s of TERMINAL_TASK_STATUSES) {
      // A terminal task never goes back to running directly: it must be queued (claimed) again.
      expect(canTransition("task", s, "running")).toBe(false);
      expect(canTransition("task", s, "completed")).toBe(false);
    }
    // Only a running task can complete or fail, or a queued one whose deadline passed.
    for (const s of TASK_STATUSES) {
      expect(canTransition("task", s, "completed")).toBe(s === "running");
      // (failed → failed records an escalation, not a new failure.)
      expect(canTransition("task", s, "failed")).toBe(
        s === "running" || s === "queued" || s === "failed",
      );
    }
  });
});

describe("random walks over the table", () => {
  for (const kind of KINDS) {
    it(`${kind}: only ever reaches known statuses, each step accepted`, () => {
      const table = TRANSITIONS[kind] as Record<string, readonly string[]>;
      fc.assert(
        fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 60 }), (choices) => {
          let state: string | null = null;
          const visited: string[] = [];
          for (const c of choices) {
            const exits: readonly string[] = table[state ?? ""] ?? [];
            if (exits.length === 0) {
              // A dead end is only ever a final workstream or a settled pattern.
              const final =
                (kind === "workstream" && FINAL_WORKSTREAM_STATUSES.has(state as never)) ||
                (kind === "pattern" && state !== "active");
              expect(final).toBe(true);
              break;
            }
            const next: string = exits[c % exits.length]!;
            expect(() => assertTransition(kind, "walk", state, next)).not.toThrow();
            state = next;
            visited.push(state);
            expect(STATUSES[kind]).toContain(state);
            // And from the reached state, every illegal move is still refused.
            for (const to of STATUSES[kind]) {
              expect(canTransition(kind, state, to)).toBe(table[state]!.includes(to));
            }
          }
          expect(visited.length).toBeGreaterThan(0);
        }),
        { numRuns: 300 },
      );
    });
  }

  it("task: every status is reachable from creation, and every walk can end terminal", () => {
    const table = TRANSITIONS.task as Record<string, readonly string[]>;
    const reachable = new Set<string>();
    const frontier = [...table[""]!];
    while (frontier.length) {
      const s = frontier.pop()!;
      if (reachable.has(s)) continue;
      reachable.add(s);
      frontier.push(...table[s]!);
    }
    expect([...reachable].sort()).toEqual([...TASK_STATUSES].sort());
    // From every status some terminal status is reachable (nothing is stuck forever).
    for (const start of TASK_STATUSES) {
      const seen = new Set<string>([start]);
      const todo = [start as string];
      let terminal = TERMINAL_TASK_STATUSES.has(start);
      while (todo.length && !terminal) {
        for (const n of table[todo.pop()!]!) {
          if (TERMINAL_TASK_STATUSES.has(n as never)) terminal = true;
          if (!seen.has(n)) {
            seen.add(n);
            todo.push(n);
          }
        }
      }
      expect(terminal, start).toBe(true);
    }
  });
});
