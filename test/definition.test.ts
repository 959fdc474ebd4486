import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import {
  dependentsOf,
  downstreamOf,
  findCycle,
  findCycles,
  formatCycle,
  topologicalOrder,
} from "../src/model/dag.js";
import {
  DEFAULT_MAX_INPUT_BYTES,
  type DefinitionProblem,
  defineWorkstream,
  normalizeRetry,
  validateDefinition,
  type WorkstreamDefinition,
} from "../src/model/definition.js";
import { DEFAULT_RETRY, RETRY_PRESETS } from "../src/recovery/retry.js";

/** The error `validateDefinition` throws for `raw`. */
function refusal(raw: unknown, options?: Parameters<typeof validateDefinition>[1]): MendError {
  try {
    validateDefinition(raw, options);
  } catch (err) {
    expect(err).toBeInstanceOf(MendError);
    expect((err as MendError).code).toBe("invalid_definition");
    return err as MendError;
  }
  throw new Error("expected the definition to be refused");
}

function problems(err: MendError): DefinitionProblem[] {
  return err.context.problems as DefinitionProblem[];
}

const two = (extra: Record<string, unknown> = {}) => ({
  name: "research",
  tasks: [
    { id: "plan", handler: "plan" },
    { id: "search-1", handler: "search", deps: ["plan"], ...extra },
  ],
});

describe("validateDefinition: refusals", () => {
  it("names an unknown key and suggests the one meant", () => {
    const err = refusal({ name: "research", tasks: [{ id: "plan", hanlder: "plan" }] });
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        "  - tasks[0].handler: required\n" +
        '  - tasks[0]: unknown key "hanlder" (did you mean "handler"?)',
    );
    expect(err.exitCode).toBe(2);
  });

  it("lists the allowed keys when nothing is close", () => {
    const err = refusal({ name: "research", owner: "me", tasks: [{ id: "a", handler: "h" }] });
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        '  - unknown key "owner" (allowed: name, onFailure, revive, compensation, breakers, resources, defaults, tasks)',
    );
  });

  it("names both positions of a duplicate id", () => {
    const err = refusal({
      name: "research",
      tasks: [
        { id: "plan", handler: "plan" },
        { id: "search", handler: "search" },
        { id: "plan", handler: "plan" },
      ],
    });
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        '  - tasks[2].id: duplicate task id "plan" (also tasks[0].id)',
    );
  });

  it("names an unknown dependency and lists the task ids", () => {
    const err = refusal({
      name: "research",
      tasks: [
        { id: "plan", handler: "plan" },
        { id: "search-1", handler: "search", deps: ["plam"] },
      ],
    });
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        '  - tasks[1].deps[0]: unknown dependency "plam" (tasks are: plan, search-1)',
    );
    expect(problems(err)).toEqual([
      {
        path: "tasks[1].deps[0]",
        message: 'unknown dependency "plam" (tasks are: plan, search-1)',
      },
    ]);
  });

  it("suggests rather than lists when there are many tasks", () => {
    const tasks = Array.from({ length: 30 }, (_, i) => ({ id: `t${i}`, handler: "h" }));
    const err = refusal({
      name: "wide",
      tasks: [...tasks, { id: "x", handler: "h", deps: ["t3x"] }],
    });
    expect(problems(err)).toEqual([
      {
        path: "tasks[30].deps[0]",
        message: 'unknown dependency "t3x" (did you mean "t3"? there are 31 tasks)',
      },
    ]);
  });

  it("refuses a self-dependency", () => {
    const err = refusal(two({ deps: ["search-1"] }));
    expect(problems(err)).toEqual([
      { path: "tasks[1].deps[0]", message: 'task "search-1" depends on itself' },
    ]);
  });

  it("names the tasks of a cycle in order", () => {
    const err = refusal({
      name: "loop",
      tasks: [
        { id: "start", handler: "h" },
        { id: "a", handler: "h", deps: ["start", "c"] },
        { id: "b", handler: "h", deps: ["a"] },
        { id: "c", handler: "h", deps: ["b"] },
      ],
    });
    expect(err.message).toBe(
      'invalid workstream definition "loop":\n' +
        "  - tasks[1].deps[1]: cycle: a → c → b → a (each task depends on the next)",
    );
  });

  it("reports each separate cycle once", () => {
    const err = refusal({
      name: "loops",
      tasks: [
        { id: "a", handler: "h", deps: ["b"] },
        { id: "b", handler: "h", deps: ["a"] },
        { id: "c", handler: "h", deps: ["d"] },
        { id: "d", handler: "h", deps: ["c", "a"] },
      ],
    });
    expect(problems(err).map((p) => p.message)).toEqual([
      "cycle: a → b → a (each task depends on the next)",
      "cycle: c → d → c (each task depends on the next)",
    ]);
  });

  it("names a handler that is not registered, and the ones that are", () => {
    const err = refusal(two(), { handlers: new Set(["search", "plan-v2"]) });
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        '  - tasks[0].handler: unknown handler "plan" (handlers are: plan-v2, search)',
    );
    expect(() => validateDefinition(two(), { handlers: ["plan", "search"] })).not.toThrow();
  });

  it("names a bad duration with its path", () => {
    const err = refusal(two({ timeout: "30 secs", retry: { initial: "fast" } }));
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        '  - tasks[1].retry.initial: invalid duration "fast": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h\n' +
        '  - tasks[1].timeout: invalid duration "30 secs": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h',
    );
  });

  it("refuses a zero timeout", () => {
    expect(problems(refusal(two({ timeout: 0 })))).toEqual([
      { path: "tasks[1].timeout", message: "must be greater than 0" },
    ]);
  });

  it("refuses a stallAfter that is not a positive duration", () => {
    const err = refusal({ ...two({ stallAfter: "soon" }), defaults: { stallAfter: 0 } });
    expect(problems(err)).toEqual([
      { path: "defaults.stallAfter", message: "must be greater than 0" },
      {
        path: "tasks[1].stallAfter",
        message:
          'invalid duration "soon": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h',
      },
    ]);
  });

  it("refuses an input over the limit, saying its size and the limit", () => {
    const input = { text: "x".repeat(DEFAULT_MAX_INPUT_BYTES) };
    const err = refusal(two({ input }));
    expect(err.message).toBe(
      'invalid workstream definition "research":\n' +
        "  - tasks[1].input: input is 256 KiB (262155 bytes), over the limit of 256 KiB (262144 bytes); pass large data by reference (a file path or URL) instead",
    );
    expect(problems(refusal(two({ input: "x".repeat(100) }), { maxInputBytes: 64 }))).toEqual([
      {
        path: "tasks[1].input",
        message:
          "input is 102 bytes, over the limit of 64 bytes; pass large data by reference (a file path or URL) instead",
      },
    ]);
  });

  it("refuses input that JSON cannot carry", () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const cases: [unknown, DefinitionProblem][] = [
      [
        { at: new Date(0) },
        {
          path: "tasks[1].input.at",
          message: "a Date is not JSON-serializable; use an ISO string",
        },
      ],
      [
        { list: [1, Number.NaN] },
        { path: "tasks[1].input.list[1]", message: "NaN is not a JSON number" },
      ],
      [
        { "two words": () => 1 },
        { path: 'tasks[1].input["two words"]', message: "a function is not JSON-serializable" },
      ],
      [
        { m: new Map() },
        {
          path: "tasks[1].input.m",
          message: "a Map is not JSON-serializable; use plain objects and arrays",
        },
      ],
      [
        circular,
        {
          path: "tasks[1].input.self",
          message: "circular reference; input must be plain JSON data",
        },
      ],
      [
        [undefined],
        { path: "tasks[1].input[0]", message: "undefined is not JSON-serializable; use null" },
      ],
    ];
    for (const [input, problem] of cases)
      expect(problems(refusal(two({ input })))).toEqual([problem]);
  });

  it("refuses an empty task list", () => {
    expect(refusal({ name: "nothing", tasks: [] }).message).toBe(
      'invalid workstream definition "nothing":\n  - tasks: a workstream needs at least one task',
    );
  });

  it("refuses missing and badly written names and ids", () => {
    const err = refusal({
      tasks: [
        { id: "-x", handler: "h" },
        { id: "a".repeat(129), handler: "h" },
      ],
    });
    expect(err.message).toBe(
      "invalid workstream definition:\n" +
        "  - name: required\n" +
        '  - tasks[0].id: task id "-x" must start with a letter or digit and contain only letters, digits, ".", "_" and "-"\n' +
        "  - tasks[1].id: task id is 129 characters long; the limit is 128",
    );
    expect(problems(refusal({ name: "a/b", tasks: [{ id: "a", handler: "h" }] }))).toEqual([
      {
        path: "name",
        message: "may contain only letters, digits, spaces and the characters . _ -",
      },
    ]);
    expect(refusal(["not", "an", "object"]).message).toBe(
      "invalid workstream definition:\n  - expected an object, got a list",
    );
  });

  it("refuses more than 100,000 tasks", () => {
    const tasks = Array.from({ length: 100_001 }, (_, i) => ({ id: `t${i}`, handler: "h" }));
    expect(problems(refusal({ name: "huge", tasks }))).toEqual([
      {
        path: "tasks",
        message:
          "100001 tasks is over the limit of 100000; split the work into several workstreams",
      },
    ]);
  });

  it("refuses bad retry settings with precise paths", () => {
    const err = refusal(
      two({
        retry: {
          maxAttempts: 1001,
          factor: 0,
          backoff: "custom",
          jitter: "ful",
          on: { netwrk: { maxAttempts: 2 }, timeout: { preset: "default" } },
        },
      }),
    );
    expect(problems(err)).toEqual([
      { path: "tasks[1].retry.maxAttempts", message: "must be at most 1000, got 1001" },
      {
        path: "tasks[1].retry.backoff",
        message:
          'backoff "custom" needs a delay function, which only the TypeScript API can give: defineTask({ run, retry: { backoff: "custom", customDelay } })',
      },
      { path: "tasks[1].retry.factor", message: "must be more than 0, got 0" },
      {
        path: "tasks[1].retry.jitter",
        message:
          'expected one of "none", "full", "equal", "decorrelated", got "ful" (did you mean "full"?)',
      },
      {
        path: "tasks[1].retry.on.timeout",
        message:
          'unknown key "preset" (allowed: maxAttempts, backoff, initial, factor, max, jitter, schedule)',
      },
      {
        path: "tasks[1].retry.on",
        message: 'unknown failure category "netwrk" (did you mean "network"?)',
      },
    ]);
    expect(problems(refusal(two({ retry: "5m-15m" })))).toEqual([
      {
        path: "tasks[1].retry",
        message: 'unknown retry preset "5m-15m" (presets are: default, none, 5m-15m-45m)',
      },
    ]);
    expect(problems(refusal(two({ retry: 3 })))).toEqual([
      {
        path: "tasks[1].retry",
        message:
          "expected a retry preset name (default, none, 5m-15m-45m) or a retry object, got 3",
      },
    ]);
  });

  it("reports every problem at once, root first, then task by task", () => {
    const err = refusal({
      name: "many",
      onFailure: "halt",
      tasks: [
        { id: "a", handler: "h", deps: "b", priority: 1.5 },
        { id: "b", handler: "h", deps: ["a", "zz"], critical: "yes" },
      ],
    });
    expect(problems(err).map((p) => p.path)).toEqual([
      "onFailure",
      "tasks[0].deps",
      "tasks[0].priority",
      "tasks[1].critical",
      "tasks[1].deps[1]",
    ]);
    expect(problems(err)[1]!.message).toBe(
      'expected a list of task ids, got "b" (write deps: [b])',
    );
  });
});

describe("validateDefinition: normalization", () => {
  it("applies defaults", () => {
    const spec = validateDefinition({
      name: "research",
      tasks: [{ id: "plan", handler: "plan", input: { topic: "solar storage", unset: undefined } }],
    });
    expect(spec).toEqual({
      name: "research",
      onFailure: "continue",
      revive: true,
      compensation: { on: ["cancelled"], order: "reverse" },
      breakers: {},
      resources: {},
      tasks: [
        {
          key: "plan",
          handler: "plan",
          input: { topic: "solar storage" },
          deps: [],
          priority: 0,
          retry: DEFAULT_RETRY,
          timeoutMs: 600_000,
          deadlineMs: null,
          critical: true,
          breaker: null,
          fallbacks: null,
          compensation: null,
          qualityThreshold: null,
          stallAfterMs: null,
          requires: null,
          resources: null,
        },
      ],
    });
  });

  it("applies workstream defaults under task settings", () => {
    const spec = validateDefinition({
      name: "tuned",
      onFailure: "stop",
      defaults: { timeout: "2m", priority: 3, critical: false, retry: { maxAttempts: 7 } },
      tasks: [
        { id: "a", handler: "h" },
        {
          id: "b",
          handler: "h",
          deps: ["a"],
          timeout: 1500,
          priority: -1,
          retry: { jitter: "none" },
        },
      ],
    });
    expect(spec.onFailure).toBe("stop");
    const [a, b] = spec.tasks;
    expect(a).toMatchObject({ timeoutMs: 120_000, priority: 3, critical: false, input: null });
    expect(a!.retry).toEqual({ ...DEFAULT_RETRY, maxAttempts: 7 });
    expect(b).toMatchObject({ timeoutMs: 1500, priority: -1, deps: ["a"] });
    expect(b!.retry).toEqual({ ...DEFAULT_RETRY, maxAttempts: 7, jitter: "none" });
  });

  it("takes stallAfter from the task, else the workstream's defaults, else null (the monitor's)", () => {
    const withDefault = validateDefinition({
      ...two({ stallAfter: "2h" }),
      defaults: { stallAfter: "45m" },
    });
    expect(withDefault.tasks.map((t) => t.stallAfterMs)).toEqual([2_700_000, 7_200_000]);
    expect(validateDefinition(two()).tasks.map((t) => t.stallAfterMs)).toEqual([null, null]);
  });

  it("translates the retry object's fields", () => {
    const [, search] = validateDefinition(
      two({
        retry: {
          maxAttempts: 5,
          backoff: "exponential",
          initial: "1s",
          factor: 2,
          max: "1m",
          jitter: "full",
          on: { rate_limited: { schedule: ["5s", "30s"] }, timeout: { maxAttempts: 2 } },
        },
      }),
    ).tasks;
    expect(search!.retry).toEqual({
      maxAttempts: 5,
      backoff: "exponential",
      initialMs: 1000,
      factor: 2,
      maxDelayMs: 60_000,
      jitter: "full",
      categories: { rate_limited: { scheduleMs: [5000, 30_000] }, timeout: { maxAttempts: 2 } },
    });
  });

  it("resolves presets, by name or as the base of an object", () => {
    const byName = validateDefinition(two({ retry: "5m-15m-45m" })).tasks[1]!.retry;
    expect(byName).toEqual(RETRY_PRESETS["5m-15m-45m"]);
    expect(byName.scheduleMs).toEqual([300_000, 900_000, 2_700_000]);
    expect(Object.isFrozen(byName)).toBe(false);

    const tuned = validateDefinition(two({ retry: { preset: "5m-15m-45m", maxAttempts: 2 } }))
      .tasks[1]!.retry;
    expect(tuned).toEqual({ ...RETRY_PRESETS["5m-15m-45m"], maxAttempts: 2 });

    // Asking for a backoff drops the preset's schedule, which would otherwise override it.
    const reshaped = validateDefinition(
      two({ retry: { preset: "5m-15m-45m", backoff: "linear", initial: "1m" } }),
    ).tasks[1]!.retry;
    expect(reshaped.scheduleMs).toBeUndefined();
    expect(reshaped).toMatchObject({ backoff: "linear", initialMs: 60_000 });

    const none = validateDefinition({
      name: "once",
      defaults: { retry: "none" },
      tasks: [{ id: "a", handler: "h" }],
    }).tasks[0]!.retry;
    expect(none.maxAttempts).toBe(1);
  });

  it("types TypeScript definitions", () => {
    const def: WorkstreamDefinition = defineWorkstream({
      name: "typed",
      tasks: [{ id: "a", handler: "h", timeout: "5s", retry: { preset: "default" } }],
    });
    expect(validateDefinition(def).tasks[0]!.timeoutMs).toBe(5000);
  });
});

describe("normalizeRetry (TypeScript API)", () => {
  it("allows a custom backoff with its delay function, leaving the function out", () => {
    const policy = normalizeRetry({
      backoff: "custom",
      customDelay: (n) => n * 100,
      maxAttempts: 4,
    });
    expect(policy).toEqual({ ...DEFAULT_RETRY, backoff: "custom", maxAttempts: 4 });
  });

  it("refuses a custom backoff without one", () => {
    const attempt = () => normalizeRetry({ backoff: "custom" });
    expect(attempt).toThrow(MendError);
    expect(attempt).toThrow(
      'invalid retry policy:\n  - customDelay: backoff "custom" needs a customDelay function',
    );
  });

  it("resolves presets over the given base", () => {
    expect(normalizeRetry("none")).toEqual({ ...DEFAULT_RETRY, maxAttempts: 1 });
    expect(normalizeRetry({ jitter: "none" }, RETRY_PRESETS["5m-15m-45m"])).toEqual(
      RETRY_PRESETS["5m-15m-45m"],
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Graph helpers

/** A small random digraph over n0..n(size-1), as adjacency (dependency) lists. */
const graphArb = fc
  .integer({ min: 1, max: 7 })
  .chain((size) =>
    fc.tuple(
      fc.constant(Array.from({ length: size }, (_, i) => `n${i}`)),
      fc.array(fc.tuple(fc.nat(size - 1), fc.nat(size - 1)), { maxLength: size * 2 }),
    ),
  )
  .map(([nodes, pairs]) => {
    const adjacency = new Map<string, string[]>(nodes.map((n) => [n, []]));
    for (const [from, to] of pairs) adjacency.get(nodes[from]!)!.push(nodes[to]!);
    return { nodes, adjacency, edges: (n: string) => adjacency.get(n) ?? [] };
  });

/** reach[a][b]: b can be reached from a by one or more edges (Floyd–Warshall closure). */
function reachability(nodes: string[], edges: (n: string) => readonly string[]) {
  const reach = new Map(nodes.map((a) => [a, new Set(edges(a))]));
  for (const k of nodes) {
    for (const a of nodes) {
      if (reach.get(a)!.has(k)) for (const b of reach.get(k)!) reach.get(a)!.add(b);
    }
  }
  return reach;
}

function isValidCycle(cycle: string[], edges: (n: string) => readonly string[]): boolean {
  if (cycle.length < 2 || cycle[0] !== cycle[cycle.length - 1]) return false;
  const members = cycle.slice(0, -1);
  if (new Set(members).size !== members.length) return false;
  return members.every((node, i) => edges(node).includes(cycle[i + 1]!));
}

describe("dag", () => {
  it("findCycle finds a cycle exactly when there is one", () => {
    fc.assert(
      fc.property(graphArb, ({ nodes, edges }) => {
        const reach = reachability(nodes, edges);
        const hasCycle = nodes.some((n) => reach.get(n)!.has(n));
        const cycle = findCycle(nodes, edges);
        expect(cycle !== null).toBe(hasCycle);
        if (cycle) expect(isValidCycle(cycle, edges)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it("findCycles gives one valid cycle per strongly connected group", () => {
    fc.assert(
      fc.property(graphArb, ({ nodes, edges }) => {
        const reach = reachability(nodes, edges);
        const groups = new Set(
          nodes
            .filter((n) => reach.get(n)!.has(n))
            .map((n) => nodes.filter((m) => reach.get(n)!.has(m) && reach.get(m)!.has(n)).join()),
        );
        const cycles = findCycles(nodes, edges);
        expect(cycles).toHaveLength(groups.size);
        for (const cycle of cycles) expect(isValidCycle(cycle, edges)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it("topologicalOrder puts dependencies first, or names a cycle", () => {
    fc.assert(
      fc.property(graphArb, ({ nodes, edges }) => {
        if (findCycle(nodes, edges)) {
          expect(() => topologicalOrder(nodes, edges)).toThrow(/^cycle: /);
          return;
        }
        const order = topologicalOrder(nodes, edges);
        expect([...order].sort()).toEqual([...nodes].sort());
        for (const node of nodes) {
          for (const dep of edges(node))
            expect(order.indexOf(dep)).toBeLessThan(order.indexOf(node));
        }
      }),
      { numRuns: 300 },
    );
  });

  it("downstreamOf is everything that transitively depends on a node", () => {
    fc.assert(
      fc.property(graphArb, ({ nodes, edges }) => {
        const reach = reachability(nodes, edges);
        const dependents = dependentsOf(nodes, edges);
        for (const start of nodes) {
          const expected = nodes.filter((n) => n !== start && reach.get(n)!.has(start));
          expect([...downstreamOf(start, dependents)].sort()).toEqual(expected.sort());
        }
      }),
      { numRuns: 200 },
    );
  });

  it("handles a 100,000-task chain without recursion", () => {
    const nodes = Array.from({ length: 100_000 }, (_, i) => `t${i}`);
    const edges = (n: string) => (n === "t0" ? [] : [`t${Number(n.slice(1)) - 1}`]);
    expect(findCycle(nodes, edges)).toBeNull();
    expect(topologicalOrder(nodes, edges)[99_999]).toBe("t99999");
    expect(downstreamOf("t0", dependentsOf(nodes, edges)).size).toBe(99_999);
    const looped = (n: string) => (n === "t0" ? ["t99999"] : edges(n));
    expect(findCycle(nodes, looped)).toHaveLength(100_001);
    expect(findCycles(nodes, looped)).toHaveLength(1);
  });

  it("formats cycles, eliding the middle of long ones", () => {
    expect(formatCycle(["a", "b", "a"])).toBe("a → b → a");
    const long = [...Array.from({ length: 30 }, (_, i) => `t${i}`), "t0"];
    expect(formatCycle(long)).toBe(
      "t0 → t1 → t2 → t3 → t4 → t5 → t6 → t7 → t8 → t9 → … 11 more … → t21 → t22 → t23 → t24 → t25 → t26 → t27 → t28 → t29 → t0",
    );
  });

  it("ignores edges to unknown nodes", () => {
    expect(findCycle(["a"], () => ["ghost"])).toBeNull();
    expect(topologicalOrder(["a", "b"], (n) => (n === "b" ? ["a", "ghost"] : []))).toEqual([
      "a",
      "b",
    ]);
  });
});
