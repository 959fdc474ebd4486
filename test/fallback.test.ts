/**
 * Fallbacks and result quality: the pure selector (src/recovery/fallback.ts), and through the
 * store a task that switches handler when its own fails for good, or when its result's quality
 * is below the task's threshold.
 */
import { describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import type { Failure, FailureCategory } from "../src/model/failure.js";
import type { FallbackOption, FallbackPlan } from "../src/model/spec.js";
import { chooseFallback, fallbackMatches, qualityFactor } from "../src/recovery/fallback.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import {
  claimAs,
  completed,
  eventsOf,
  expectConsistent,
  failed,
  report,
  setupStore,
} from "./helpers/recovery.js";

function option(handler: string, over: Partial<FallbackOption> = {}): FallbackOption {
  return { handler, on: [], quality: 1, ...over };
}

function failureOf(category: FailureCategory, extra: Partial<Failure> = {}): Failure {
  return { category, recoverable: true, message: "x", ...extra };
}

function choose(
  plan: Partial<FallbackPlan> & Pick<FallbackPlan, "options">,
  over: {
    current?: string;
    failure?: Failure;
    elapsedMs?: number;
    random?: () => number;
    load?: (h: string) => number;
  } = {},
): string | null {
  return (
    chooseFallback({
      plan: { selector: "sequential", tried: [], ...plan },
      current: over.current ?? "primary",
      failure: over.failure ?? failureOf("external_service"),
      elapsedMs: over.elapsedMs ?? 0,
      random: over.random ?? (() => 0),
      load: over.load ?? (() => 0),
    })?.handler ?? null
  );
}

describe("chooseFallback (pure)", () => {
  const abc = [
    option("a", { quality: 0.5 }),
    option("b", { quality: 0.9 }),
    option("c", { quality: 0.9 }),
  ];

  it("sequential: the first untried option whose conditions hold", () => {
    expect(choose({ options: abc })).toBe("a");
    expect(choose({ options: abc, tried: ["primary", "a"] })).toBe("b");
    // The handler that just failed is never chosen again, tried or not.
    expect(choose({ options: abc }, { current: "a" })).toBe("b");
    expect(choose({ options: abc, tried: ["a", "b"] }, { current: "c" })).toBeNull();
    expect(choose({ options: [] })).toBeNull();
  });

  it("best_quality: the highest quality factor, ties in order", () => {
    expect(choose({ selector: "best_quality", options: abc })).toBe("b");
    expect(choose({ selector: "best_quality", options: abc, tried: ["b"] })).toBe("c");
    expect(choose({ selector: "best_quality", options: abc, tried: ["b", "c"] })).toBe("a");
  });

  it("random: picks by the random source, within bounds", () => {
    expect(choose({ selector: "random", options: abc }, { random: () => 0 })).toBe("a");
    expect(choose({ selector: "random", options: abc }, { random: () => 0.5 })).toBe("b");
    expect(choose({ selector: "random", options: abc }, { random: () => 0.999 })).toBe("c");
    // A source that returns 1 (out of contract) still picks an option.
    expect(choose({ selector: "random", options: abc }, { random: () => 1 })).toBe("c");
    expect(
      choose({ selector: "random", options: abc, tried: ["a", "c"] }, { random: () => 0.9 }),
    ).toBe("b");
  });

  it("least_loaded: the fewest running tasks, ties in order", () => {
    const load = (h: string) => ({ a: 3, b: 1, c: 1 })[h] ?? 0;
    expect(choose({ selector: "least_loaded", options: abc }, { load })).toBe("b");
    expect(choose({ selector: "least_loaded", options: abc, tried: ["b"] }, { load })).toBe("c");
    expect(choose({ selector: "least_loaded", options: abc }, { load: () => 0 })).toBe("a");
  });

  it("conditions: on (empty = any), qualityBelow, after", () => {
    const onNet = option("n", { on: ["network"] });
    expect(fallbackMatches(onNet, failureOf("network"), 0)).toBe(true);
    expect(fallbackMatches(onNet, failureOf("external_service"), 0)).toBe(false);
    expect(fallbackMatches(option("any"), failureOf("logic"), 0)).toBe(true);

    const q = option("q", { qualityBelow: 0.6 });
    expect(fallbackMatches(q, failureOf("quality", { quality: 0.4 }), 0)).toBe(true);
    expect(fallbackMatches(q, failureOf("quality", { quality: 0.6 }), 0)).toBe(false);
    expect(fallbackMatches(q, failureOf("quality", { quality: 0.7 }), 0)).toBe(false);
    // No quality known: the condition cannot hold.
    expect(fallbackMatches(q, failureOf("network"), 0)).toBe(false);

    const late = option("late", { afterMs: 30_000 });
    expect(fallbackMatches(late, failureOf("timeout"), 29_999)).toBe(false);
    expect(fallbackMatches(late, failureOf("timeout"), 30_000)).toBe(true);

    // Only matching options are candidates, whatever the selector.
    const options = [onNet, q, late, option("last", { on: ["timeout"] })];
    expect(choose({ options }, { failure: failureOf("timeout"), elapsedMs: 0 })).toBe("last");
    expect(choose({ options }, { failure: failureOf("timeout"), elapsedMs: 30_000 })).toBe("late");
    expect(choose({ options }, { failure: failureOf("quality", { quality: 0.1 }) })).toBe("q");
    expect(choose({ options }, { failure: failureOf("logic") })).toBeNull();
    expect(choose({ selector: "best_quality", options }, { failure: failureOf("network") })).toBe(
      "n",
    );
  });

  it("qualityFactor: the option's factor, 1 for the task's own handler or no plan", () => {
    const plan: FallbackPlan = {
      selector: "sequential",
      options: [option("b", { quality: 0.9 })],
      tried: [],
    };
    expect(qualityFactor(plan, "b")).toBe(0.9);
    expect(qualityFactor(plan, "primary")).toBe(1);
    expect(qualityFactor(null, "b")).toBe(1);
  });
});

// ------------------------------------------------------------------ through the store

function definition(task: Record<string, unknown>) {
  return validateDefinition({
    name: "fallbacks",
    tasks: [
      {
        id: "t",
        handler: "primary",
        retry: { maxAttempts: 2, backoff: "constant", initial: "1s", jitter: "none" },
        ...task,
      },
    ],
  });
}

async function only(store: SqliteStore, ws: string) {
  const [t] = await store.listTasks(ws);
  return t!;
}

describe("fallbacks in the store", () => {
  it("a task whose handler fails for good switches to its fallback, which only its workers claim", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition({ fallbacks: [{ handler: "backup", on: ["external_service"] }] }),
    );
    const first = await claimAs(store, "wp", ["primary"], 1);
    const [retry] = await report(store, "wp", [failed(first[0]!, "external_service")]);
    expect(retry).toMatchObject({ status: "queued", decision: { action: "retry" } });
    clock.advance(1_000);
    const second = await claimAs(store, "wp", ["primary"], 1);
    expect(second[0]!.attempts).toBe(2);
    const [switched] = await report(store, "wp", [failed(second[0]!, "external_service")]);
    expect(switched).toMatchObject({
      applied: true,
      status: "queued",
      decision: { action: "fallback", handler: "backup", runAt: clock.now() },
    });

    const task = await only(store, ws);
    expect(task).toMatchObject({
      status: "queued",
      handler: "backup",
      attempts: 0,
      runAt: clock.now(),
      leaseToken: null,
      fallbacks: { selector: "sequential", tried: ["primary"] },
    });
    expect(task.lastError).toMatchObject({ category: "external_service" });
    const last = (await store.listTransitions({ entityId: task.id })).at(-1)!;
    expect(last).toMatchObject({
      event: "task_fallback",
      from: "running",
      to: "queued",
      detail: { from: "primary", to: "backup", attempt: 2 },
    });

    // Only a worker that registers the backup handler can claim it now.
    expect(await claimAs(store, "wp", ["primary"], 5)).toEqual([]);
    const backup = await claimAs(store, "wb", ["backup"], 5);
    expect(backup).toHaveLength(1);
    expect(backup[0]).toMatchObject({ handler: "backup", attempts: 1 });
    await report(store, "wb", [completed(backup[0]!)]);
    const done = (await store.listTransitions({ entityId: task.id })).at(-1)!;
    expect(done).toMatchObject({
      event: "task_recovered",
      to: "completed",
      detail: { handler: "backup", attempt: 1 },
    });
    expect(await only(store, ws)).toMatchObject({ status: "completed", handler: "backup" });
    expect((await store.getWorkstream(ws))?.status).toBe("completed");
    await expectConsistent(store, clock);
  });

  it("a failure the fallback does not answer fails the task; a chain of fallbacks is tried in order", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition({
        retry: { maxAttempts: 1 },
        fallbacks: [
          { handler: "backup", on: ["external_service"] },
          { handler: "third", on: ["network"] },
        ],
      }),
    );
    // A logic failure: no option answers it.
    const [t] = await claimAs(store, "w", ["primary"], 1);
    const [s] = await report(store, "w", [failed(t!, "logic")]);
    expect(s).toMatchObject({ status: "failed", decision: { action: "fail" } });
    expect(await only(store, ws)).toMatchObject({ status: "failed", handler: "primary" });

    const other = await store.submit(
      definition({
        retry: { maxAttempts: 1 },
        fallbacks: [
          { handler: "backup", on: ["external_service"] },
          { handler: "third", on: ["network"] },
        ],
      }),
    );
    const [p] = await claimAs(store, "w", ["primary"], 1);
    await report(store, "w", [failed(p!, "external_service")]);
    const [b] = await claimAs(store, "w", ["backup"], 1);
    const [s2] = await report(store, "w", [failed(b!, "network")]);
    expect(s2).toMatchObject({ decision: { action: "fallback", handler: "third" } });
    expect(await only(store, other.workstreamId)).toMatchObject({
      handler: "third",
      fallbacks: { tried: ["primary", "backup"] },
    });
    // Nothing left after the last one.
    const [c] = await claimAs(store, "w", ["third"], 1);
    const [s3] = await report(store, "w", [failed(c!, "network")]);
    expect(s3).toMatchObject({ status: "failed" });
    expect(await only(store, other.workstreamId)).toMatchObject({
      status: "failed",
      handler: "third",
      fallbacks: { tried: ["primary", "backup"] },
    });
    await expectConsistent(store, clock);
  });

  it("a result below the quality threshold is a quality failure, answered by a better fallback", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(
      definition({
        handler: "cheap",
        qualityThreshold: 0.6,
        retry: { maxAttempts: 1 },
        fallbacks: [{ handler: "better", qualityBelow: 0.6, quality: 0.9 }],
      }),
    );
    const [t] = await claimAs(store, "w", ["cheap"], 1);
    const [s] = await report(store, "w", [completed(t!, 0.4)]);
    expect(s).toMatchObject({
      status: "queued",
      decision: { action: "fallback", handler: "better" },
    });
    const task = await only(store, ws);
    expect(task).toMatchObject({
      status: "queued",
      handler: "better",
      quality: null,
      output: null,
    });
    expect(task.lastError).toMatchObject({ category: "quality", recoverable: true, quality: 0.4 });
    const fb = (await store.listTransitions({ entityId: task.id })).at(-1)!;
    expect(fb.event).toBe("task_fallback");
    expect((fb.detail as { failure: Failure }).failure).toMatchObject({
      category: "quality",
      quality: 0.4,
    });

    // The fallback's 0.8 is scaled by its factor 0.9: 0.72, above the threshold.
    const [b] = await claimAs(store, "w", ["better"], 1);
    const [done] = await report(store, "w", [completed(b!, 0.8)]);
    expect(done).toMatchObject({ status: "completed" });
    const final = await only(store, ws);
    expect(final.status).toBe("completed");
    expect(final.quality).toBeCloseTo(0.72, 10);
    expect(final.output).toEqual({ key: "t" });
    expect((await eventsOf(store, final.id)).at(-1)).toBe("task_recovered");
    await expectConsistent(store, clock);
  });

  // The fallback gets its own breaker (none here), not the primary's.
  it("a fallback is not held back by the primary's open breaker", async () => {
    const { store } = setupStore();
    const { workstreamId: ws } = await store.submit(
      validateDefinition({
        name: "outage",
        breakers: { "search-api": { failureThreshold: 1 } },
        tasks: [
          {
            id: "t",
            handler: "primary",
            breaker: "search-api",
            retry: { maxAttempts: 1 },
            fallbacks: [{ handler: "backup", on: ["external_service"] }],
          },
        ],
      }),
    );
    const [t] = await claimAs(store, "w", ["primary"], 1);
    const [s] = await report(store, "w", [failed(t!, "external_service")]);
    expect(s).toMatchObject({ decision: { action: "fallback", handler: "backup" } });
    expect((await store.listBreakers())[0]!.status).toBe("open");
    expect(await only(store, ws)).toMatchObject({ status: "queued", handler: "backup" });
    expect(await claimAs(store, "wb", ["backup"], 1)).toHaveLength(1);
  });

  it("without a fallback, a quality failure is retried; quality is stored as reported (factor 1)", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition({ qualityThreshold: 0.6 }));
    const [t] = await claimAs(store, "w", ["primary"], 1);
    const [s] = await report(store, "w", [completed(t!, 0.59)]);
    expect(s).toMatchObject({ status: "queued", decision: { action: "retry" } });
    expect((await only(store, ws)).lastError).toMatchObject({ category: "quality", quality: 0.59 });
    expect((await eventsOf(store, t!.id)).at(-1)).toBe("task_retry_scheduled");
    clock.advance(1_000);
    const [again] = await claimAs(store, "w", ["primary"], 1);
    await report(store, "w", [completed(again!, 0.6)]);
    expect(await only(store, ws)).toMatchObject({ status: "completed", quality: 0.6 });

    // No threshold: any quality is accepted and stored; none reported stores null.
    const free = await store.submit(
      validateDefinition({
        name: "free",
        tasks: [
          { id: "a", handler: "primary" },
          { id: "b", handler: "primary" },
        ],
      }),
    );
    const [a, b] = await claimAs(store, "w", ["primary"], 2);
    await report(store, "w", [completed(a!, 0.1), completed(b!)]);
    const byKey = Object.fromEntries(
      (await store.listTasks(free.workstreamId)).map((x) => [x.key, x]),
    );
    expect(byKey.a).toMatchObject({ status: "completed", quality: 0.1 });
    expect(byKey.b).toMatchObject({ status: "completed", quality: null });
    await expectConsistent(store, clock);
  });
});
