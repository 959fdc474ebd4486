import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import { DEFAULT_TIMEOUT_MS } from "../src/model/definition.js";
import type {
  BreakerRecord,
  TaskRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../src/model/records.js";
import type { RetryRule } from "../src/model/spec.js";
import { DEFAULT_BREAKER } from "../src/recovery/breaker.js";
import {
  type EffectivePolicy,
  POLICY_ORDER,
  describeLayer,
  effectivePolicy,
  validatePolicy,
  worstCaseRetryDelayMs,
} from "../src/recovery/policy.js";
import { DEFAULT_RETRY, ruleFor } from "../src/recovery/retry.js";

import { taskRecord } from "./helpers/records.js";
const NOW = Date.UTC(2026, 0, 1);

function task(fields: Partial<TaskRecord> = {}): TaskRecord {
  return taskRecord("ws_1", "search", NOW, { status: "queued", ...fields });
}

function breakerRow(fields: Partial<BreakerRecord> = {}): BreakerRecord {
  return {
    id: "search-api",
    status: "closed",
    config: { ...DEFAULT_BREAKER, openMs: 30_000 },
    openedAt: null,
    closedAt: null,
    openUntil: null,
    forced: false,
    failures: 0,
    successes: 0,
    window: [],
    createdAt: NOW,
    updatedAt: NOW,
    ...fields,
  };
}

function worker(id: string, fields: Partial<WorkerRecord> = {}): WorkerRecord {
  return {
    id,
    host: "h",
    pid: 1,
    concurrency: 4,
    handlers: ["search"],
    capabilities: [],
    supervised: false,
    control: null,
    status: "idle",
    startedAt: NOW,
    heartbeatAt: NOW,
    ...fields,
  };
}

const WORKSTREAM = {
  id: "ws_1",
  name: "research",
  status: "active",
  onFailure: "continue",
  revive: true,
  compensation: { on: ["cancelled"], order: "reverse" },
  compensates: null,
  createdAt: NOW,
  updatedAt: NOW,
} satisfies WorkstreamRecord;

const rule = (fields: Partial<RetryRule>): RetryRule => ({
  maxAttempts: 4,
  backoff: "exponential",
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 300_000,
  jitter: "none",
  ...fields,
});

describe("effectivePolicy of a stored task", () => {
  it("gives the five layers outermost first, with the task's, the breaker's and the workers' values", () => {
    const retry = { ...DEFAULT_RETRY, categories: { rate_limited: { maxAttempts: 6 } } };
    const layers = effectivePolicy({
      task: {
        task: task({
          deadlineMs: 600_000,
          breaker: "search-api",
          retry,
          timeoutMs: 45_000,
          qualityThreshold: 0.7,
          fallbacks: {
            selector: "sequential",
            options: [{ handler: "cached", on: [], quality: 0.5 }],
            tried: ["search"],
          },
        }),
        workstream: WORKSTREAM,
        breaker: breakerRow({ status: "open", forced: true }),
        workers: [
          worker("w1"),
          worker("w2", { concurrency: 2 }),
          worker("gone", { status: "shutdown" }),
          worker("other", { handlers: ["summarize"] }),
        ],
      },
    });
    expect(layers.map((l) => l.layer)).toEqual([...POLICY_ORDER]);
    const [deadline, breaker, retryLayer, concurrency, timeout] = layers;
    expect(deadline).toEqual({ layer: "deadline", deadlineMs: 600_000, source: "task" });
    expect(breaker).toMatchObject({
      name: "search-api",
      config: { openMs: 30_000 },
      source: "store",
      status: "open",
      forced: true,
    });
    expect(retryLayer.policy).toBe(retry);
    // Per-category rules as ruleFor gives them: the policy's own and the built-in ones.
    expect(Object.keys(retryLayer.categories).sort()).toEqual([
      "rate_limited",
      "timeout",
      "worker_lost",
    ]);
    expect(retryLayer.categories.rate_limited).toEqual(ruleFor(retry, "rate_limited"));
    expect(retryLayer.categories.rate_limited?.maxAttempts).toBe(6);
    // Fallbacks without the run's bookkeeping; revival from the workstream.
    expect(retryLayer.fallbacks).toEqual({
      selector: "sequential",
      options: [{ handler: "cached", on: [], quality: 0.5 }],
    });
    expect(retryLayer.revive).toBe(true);
    expect(concurrency).toEqual({
      layer: "concurrency",
      workers: [
        { id: "w1", concurrency: 4 },
        { id: "w2", concurrency: 2 },
      ],
      source: "workers",
      resources: null,
    });
    expect(timeout).toEqual({
      layer: "timeout",
      timeoutMs: 45_000,
      source: "task",
      qualityThreshold: 0.7,
    });
  });

  it("without a breaker row, workers or workstream: defaults and unknowns, said as such", () => {
    const [, breaker, retry, concurrency] = effectivePolicy({
      task: { task: task({ breaker: "search-api" }) },
    });
    expect(breaker).toMatchObject({
      name: "search-api",
      config: DEFAULT_BREAKER,
      source: "default",
      status: null,
    });
    expect(retry.revive).toBeNull();
    expect(concurrency).toMatchObject({ workers: null, source: "default" });
    expect(describeLayer(concurrency)).toBe("per worker (mend worker --concurrency)");

    const [, none, , noWorkers] = effectivePolicy({ task: { task: task(), workers: [] } });
    expect(none).toMatchObject({ name: null, config: null });
    expect(describeLayer(none)).toBe("none");
    expect(describeLayer(noWorkers)).toMatch(/^no live worker serves this handler/);
  });
});

describe("effectivePolicy of a handler", () => {
  it("a plain function: Mend's defaults throughout", () => {
    const layers = effectivePolicy({ handler: { name: "plain", definition: { run: () => 1 } } });
    expect(layers.map((l) => [l.layer, l.source])).toEqual([
      ["deadline", "default"],
      ["breaker", "default"],
      ["retry", "default"],
      ["concurrency", "default"],
      ["timeout", "default"],
    ]);
    const [deadline, breaker, retry, , timeout] = layers;
    expect(deadline.deadlineMs).toBeNull();
    expect(breaker.name).toBeNull();
    expect(retry.policy).toEqual(DEFAULT_RETRY);
    expect(retry.fallbacks).toBeNull();
    expect(timeout.timeoutMs).toBe(DEFAULT_TIMEOUT_MS);
    expect(validatePolicy(layers)).toEqual([]);
  });

  it("a task object: its retry, timeout, breaker, deadline, fallbacks and quality threshold", () => {
    const layers = effectivePolicy({
      handler: {
        name: "search",
        definition: {
          run: () => 1,
          retry: { maxAttempts: 5, backoff: "constant", initial: "2s", jitter: "none" },
          timeout: "20s",
          breaker: "search-api",
          deadline: "10m",
          fallbacks: [{ handler: "cached", quality: 0.5 }],
          qualityThreshold: 0.6,
        },
      },
    });
    const [deadline, breaker, retry, , timeout] = layers;
    expect(deadline).toMatchObject({ deadlineMs: 600_000, source: "handler" });
    expect(breaker).toMatchObject({ name: "search-api", source: "default", status: null });
    expect(retry).toMatchObject({
      source: "handler",
      policy: { maxAttempts: 5, backoff: "constant", initialMs: 2000, jitter: "none" },
      fallbacks: { selector: "sequential", options: [{ handler: "cached", quality: 0.5 }] },
    });
    expect(timeout).toMatchObject({ timeoutMs: 20_000, source: "handler", qualityThreshold: 0.6 });
    expect(describeLayer(retry)).toContain("5 attempts, every 2s, no jitter");
    expect(describeLayer(retry)).toContain("then fallbacks (sequential): cached");
  });

  it("refuses invalid settings, naming the handler", () => {
    const bad = { run: () => 1, breaker: "no spaces allowed", deadline: "soon" } as never;
    expect(() => effectivePolicy({ handler: { name: "broken", definition: bad } })).toThrow(
      MendError,
    );
    expect(() => effectivePolicy({ handler: { name: "broken", definition: bad } })).toThrow(
      /handler "broken"/,
    );
    expect(() =>
      effectivePolicy({ handler: { name: "t", definition: { run: () => 1, timeout: "later" } } }),
    ).toThrow(/invalid duration "later"/);
  });
});

describe("worstCaseRetryDelayMs", () => {
  it("adds every retry's delay at the top of its jitter range", () => {
    expect(worstCaseRetryDelayMs(rule({}))).toBe(1000 + 2000 + 4000);
    expect(worstCaseRetryDelayMs(rule({ jitter: "full" }))).toBe(7000);
    expect(worstCaseRetryDelayMs(rule({ maxDelayMs: 1500 }))).toBe(1000 + 1500 + 1500);
    expect(worstCaseRetryDelayMs(rule({ scheduleMs: [100, 200] }))).toBe(100 + 200 + 200);
    // Decorrelated: each draw up to 3 × the last one.
    expect(worstCaseRetryDelayMs(rule({ jitter: "decorrelated" }))).toBe(3000 + 9000 + 27_000);
    expect(worstCaseRetryDelayMs(rule({ maxAttempts: 1 }))).toBe(0);
  });

  it("does not guess a custom delay", () => {
    expect(worstCaseRetryDelayMs(rule({ backoff: "custom" }))).toBeNull();
  });
});

describe("validatePolicy", () => {
  /** The layers of a task with these values. */
  const layersOf = (fields: Partial<TaskRecord>, breaker?: BreakerRecord): EffectivePolicy =>
    effectivePolicy({ task: { task: task(fields), breaker } });

  it("finds nothing to say without a deadline, or when every layer fits inside it", () => {
    expect(validatePolicy(layersOf({ timeoutMs: 3_600_000, breaker: "search-api" }))).toEqual([]);
    expect(
      validatePolicy(
        layersOf({ deadlineMs: 600_000, breaker: "search-api" }, breakerRow({ id: "search-api" })),
      ),
    ).toEqual([]);
  });

  it("a per-attempt timeout longer than the deadline is an error", () => {
    expect(validatePolicy(layersOf({ deadlineMs: 60_000, timeoutMs: 120_000 }))).toEqual([
      {
        severity: "error",
        layer: "timeout",
        message: expect.stringMatching(
          /^the per-attempt timeout 2m is longer than the 1m overall deadline/,
        ),
      },
    ]);
  });

  it("retries that can wait longer than the deadline are a warning, per rule", () => {
    const retry = {
      ...rule({ initialMs: 10_000, factor: 3 }),
      categories: { rate_limited: { initialMs: 1000, factor: 1 } },
    };
    const problems = validatePolicy(layersOf({ deadlineMs: 60_000, timeoutMs: 5000, retry }));
    // 10 s + 30 s + 90 s over the base rule; rate_limited waits 3 s in all and fits.
    expect(problems).toEqual([
      {
        severity: "warning",
        layer: "retry",
        message:
          "retries can wait 2m10s in all (3 retries, worst case), longer than the 1m overall deadline: the later ones never start",
      },
    ]);
  });

  it("a breaker open longer than the deadline is a warning: the task fails while it waits", () => {
    const stored = validatePolicy(
      layersOf(
        { deadlineMs: 60_000, timeoutMs: 5000, breaker: "search-api" },
        breakerRow({ config: { ...DEFAULT_BREAKER, openMs: 120_000 } }),
      ),
    );
    expect(stored).toEqual([
      {
        severity: "warning",
        layer: "breaker",
        message: expect.stringMatching(
          /^breaker search-api stays open 2m, longer than the 1m overall deadline: a task that finds it open fails while it waits$/,
        ),
      },
    ]);
    // Without a stored row the defaults are checked, and the message says so.
    const defaults = validatePolicy(
      layersOf({ deadlineMs: 60_000, timeoutMs: 5000, breaker: "search-api" }),
    );
    expect(defaults[0]?.message).toContain("stays open 5m (default settings)");
  });

  it("lists problems outermost layer first", () => {
    const problems = validatePolicy(
      layersOf({
        deadlineMs: 1000,
        timeoutMs: 2000,
        breaker: "search-api",
        retry: rule({}),
      }),
    );
    // The retry rule and the built-in rule for timeouts both wait longer than 1 s.
    expect(problems.map((p) => [p.layer, p.severity])).toEqual([
      ["breaker", "warning"],
      ["retry", "warning"],
      ["retry", "warning"],
      ["timeout", "error"],
    ]);
    expect(problems[2]?.message).toMatch(/^retries on timeout can wait 14s in all/);
  });
});

describe("describeLayer", () => {
  it("says each layer's values in one line", () => {
    const [deadline, breaker, retry, concurrency, timeout] = effectivePolicy({
      task: {
        task: task({
          deadlineMs: 600_000,
          breaker: "search-api",
          timeoutMs: 30_000,
          qualityThreshold: 0.7,
        }),
        workstream: { ...WORKSTREAM, revive: false },
        breaker: breakerRow({ status: "open", forced: true }),
        workers: [worker("w1")],
      },
    });
    expect(describeLayer(deadline)).toBe("10m from submission, across every attempt");
    expect(describeLayer(breaker)).toBe(
      "search-api: open (forced: until closed by a person); opens after 5 failures in a row, stays open 30s, closes after 3 of 3 probes succeed",
    );
    expect(describeLayer(retry)).toBe(
      "3 attempts, exponential 1s ×2, full jitter, max delay 5m (up to 3s of waiting); " +
        "on timeout: 3 attempts, exponential 2s ×2, no jitter, max delay 5m; " +
        "on worker_lost: 3 attempts, at once, no jitter, max delay 5m; " +
        "revival off (from the workstream)",
    );
    expect(describeLayer(concurrency)).toBe("per worker: 4 on w1");
    expect(describeLayer(timeout)).toBe(
      "30s per attempt; a result below quality 0.7 is a quality failure",
    );
  });
  it("says what resources a task holds while it runs, with their limits and states when stored", () => {
    const stored = { reason: null, createdAt: NOW, updatedAt: NOW };
    const [, , , concurrency] = effectivePolicy({
      task: {
        task: task({ resources: [["git_repo_write"], ["api-a", "api-b"]] }),
        workers: [worker("w1")],
        resources: [
          { id: "git_repo_write", status: "available", maxHolders: 1, ...stored },
          { id: "api-a", status: "unavailable", maxHolders: 2, ...stored },
        ],
      },
    });
    expect(concurrency.resources).toEqual([
      [{ id: "git_repo_write", maxHolders: 1, status: "available" }],
      [
        { id: "api-a", maxHolders: 2, status: "unavailable" },
        { id: "api-b", maxHolders: null, status: null },
      ],
    ]);
    expect(describeLayer(concurrency)).toBe(
      "per worker: 4 on w1; holds git_repo_write (at most 1 holder, available) and one of api-a (at most 2 holders, unavailable), api-b while it runs",
    );
    const [, , , handler] = effectivePolicy({
      handler: {
        name: "push",
        definition: { run: () => null, resources: ["git_repo_write", { oneOf: ["a", "b"] }] },
      },
    });
    expect(describeLayer(handler)).toBe(
      "per worker (mend worker --concurrency); holds git_repo_write and one of a, b while it runs",
    );
  });
});
