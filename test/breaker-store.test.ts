/**
 * Circuit breakers through the SQLite store: shared by every worker, fed by counted failures,
 * gating claims while open, letting a bounded number of probes through while half-open, moved
 * by people (interventions), reconfigured by submissions, and all of it replayable.
 */
import { describe, expect, it } from "vitest";
import type { FakeClock } from "../src/engine/clock.js";
import { MendError } from "../src/errors.js";
import { validateDefinition } from "../src/model/definition.js";
import type { BreakerDefinition } from "../src/model/definition.js";
import type { BreakerRecord, TaskRecord } from "../src/model/records.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import type { Actor, ClaimedTask } from "../src/store/store.js";
import {
  claimAs,
  completed,
  eventsOf,
  expectConsistent,
  failed,
  LEASE_MS,
  planner,
  report,
  setupStore,
} from "./helpers/recovery.js";

const BREAKER = "search-api";
const OPEN_MS = 10_000;
const SETTINGS: BreakerDefinition = {
  failureThreshold: 3,
  open: "10s",
  halfOpenMaxCalls: 2,
  successThreshold: 2,
};
const operator: Actor = { actor: "alice", reason: "search API is down", command: "mend test" };

/** `search` tasks guarded by the breaker, and `plain` tasks without one. */
function definition(
  search: number,
  plain: number,
  options: { name?: string; settings?: BreakerDefinition | null } = {},
) {
  const settings = options.settings === undefined ? SETTINGS : options.settings;
  return validateDefinition({
    name: options.name ?? "research",
    ...(settings === null ? {} : { breakers: { [BREAKER]: settings } }),
    tasks: [
      ...Array.from({ length: search }, (_, i) => ({
        id: `s${i + 1}`,
        handler: "search",
        breaker: BREAKER,
        retry: { maxAttempts: 10, backoff: "constant", initial: "1s", jitter: "none" },
      })),
      ...Array.from({ length: plain }, (_, i) => ({ id: `p${i + 1}`, handler: "plain" })),
    ],
  });
}

async function breaker(store: SqliteStore): Promise<BreakerRecord> {
  const b = (await store.listBreakers()).find((r) => r.id === BREAKER);
  expect(b, `breaker ${BREAKER} exists`).toBeDefined();
  return b!;
}

async function claimOne(store: SqliteStore, worker: string, key: string): Promise<ClaimedTask> {
  const [t] = await claimAs(store, worker, ["search"], 1);
  expect(t?.key, `${worker} claims ${key}`).toBe(key);
  return t!;
}

async function tasksByKey(store: SqliteStore, ws: string): Promise<Record<string, TaskRecord>> {
  return Object.fromEntries((await store.listTasks(ws)).map((t) => [t.key, t]));
}

/** Opens the breaker with three counted failures from two workers; returns when it opened. */
async function openWithFailures(store: SqliteStore, clock: FakeClock): Promise<number> {
  const a = await claimAs(store, "w1", ["search"], 1);
  const b = await claimAs(store, "w2", ["search"], 2);
  expect(a).toHaveLength(1);
  expect(b).toHaveLength(2);
  await report(store, "w1", [failed(a[0]!, "network")]);
  await report(store, "w2", [failed(b[0]!, "external_service")]);
  expect((await breaker(store)).status).toBe("closed");
  await report(store, "w2", [failed(b[1]!, "network")]);
  return clock.now();
}

describe("circuit breaker in the store", () => {
  it("is created by the submission that names it, with its settings", async () => {
    const { store } = setupStore();
    await store.submit(definition(1, 0));
    expect(await store.listBreakers()).toEqual([
      expect.objectContaining({
        id: BREAKER,
        status: "closed",
        forced: false,
        openUntil: null,
        config: expect.objectContaining({
          mode: "consecutive",
          failureThreshold: 3,
          openMs: OPEN_MS,
          halfOpenMaxCalls: 2,
          successThreshold: 2,
        }),
      }),
    ]);
    expect(await eventsOf(store, BREAKER)).toEqual(["breaker_created"]);
  });

  it("counted failures from two workers open it; logic failures and lost workers do not count", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition(6, 3));

    const s1 = await claimOne(store, "w1", "s1");
    const s2 = await claimOne(store, "w2", "s2");
    const s3 = await claimOne(store, "w2", "s3");
    await report(store, "w1", [failed(s1, "network")]);
    expect(await breaker(store)).toMatchObject({ status: "closed", failures: 1 });
    // A 400-like failure is the request's fault, not the dependency's: not counted.
    const [logic] = await report(store, "w2", [failed(s2, "logic")]);
    expect(logic).toMatchObject({ status: "failed" });
    expect(await breaker(store)).toMatchObject({ status: "closed", failures: 1 });
    // A lost worker says nothing about the dependency either.
    clock.advance(LEASE_MS + 1);
    const swept = await store.sweepExpiredLeases(planner);
    expect(swept.map((s) => [s.taskId, s.decision.action])).toEqual([[s3.id, "retry"]]);
    expect(await breaker(store)).toMatchObject({ status: "closed", failures: 1 });

    const s4 = await claimOne(store, "w1", "s4");
    const s5 = await claimOne(store, "w2", "s5");
    await report(store, "w1", [failed(s4, "external_service")]);
    expect(await breaker(store)).toMatchObject({ status: "closed", failures: 2 });
    await report(store, "w2", [failed(s5, "network")]);
    const openedAt = clock.now();
    expect(await breaker(store)).toMatchObject({
      status: "open",
      openedAt,
      openUntil: openedAt + OPEN_MS,
      forced: false,
    });
    const opened = (await store.listTransitions({ entityId: BREAKER })).at(-1)!;
    expect(opened).toMatchObject({
      event: "breaker_opened",
      from: "closed",
      to: "open",
      actor: "worker:w2",
      severity: "error",
      detail: { reason: "3 failures in a row", task: s5.id },
    });

    // Open for every worker: no search task is claimed, by anyone, and no attempt is used up.
    const before = await tasksByKey(store, ws);
    const w1 = await claimAs(store, "w1", ["search", "plain"], 10);
    expect(w1.map((t) => t.key).sort()).toEqual(["p1", "p2", "p3"]);
    expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);
    await report(
      store,
      "w1",
      w1.map((t) => completed(t)),
    );
    clock.advance(OPEN_MS - 1);
    expect(await claimAs(store, "w1", ["search"], 10)).toEqual([]);
    expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);
    expect(await store.advanceBreakers()).toEqual([]);
    const after = await tasksByKey(store, ws);
    for (const key of ["s1", "s3", "s4", "s5", "s6"]) {
      expect(after[key]!.status, key).toBe("queued");
      expect(after[key]!.attempts, key).toBe(before[key]!.attempts);
    }
    expect((await breaker(store)).status).toBe("open");
    await expectConsistent(store, clock);
  });

  it("half-open lets at most halfOpenMaxCalls probes run; a probe failure reopens it; successes close it", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition(8, 0));
    const openedAt = await openWithFailures(store, clock);
    expect((await breaker(store)).status).toBe("open");

    // Open time is up: the next claim moves it to half-open and takes at most two probes.
    clock.advance(OPEN_MS);
    const probes = await claimAs(store, "w1", ["search"], 10);
    expect(probes).toHaveLength(2);
    expect(await breaker(store)).toMatchObject({
      status: "half_open",
      openUntil: openedAt + OPEN_MS,
    });
    expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);
    const half = (await store.listTransitions({ entityId: BREAKER })).at(-1)!;
    expect(half).toMatchObject({
      event: "breaker_half_opened",
      from: "open",
      to: "half_open",
      actor: "worker:w1",
    });

    // One probe fails: open again, for another full open time.
    await report(store, "w1", [failed(probes[0]!, "external_service")]);
    const reopenedAt = clock.now();
    expect(await breaker(store)).toMatchObject({
      status: "open",
      openedAt: reopenedAt,
      openUntil: reopenedAt + OPEN_MS,
    });
    const reopened = (await store.listTransitions({ entityId: BREAKER })).at(-1)!;
    expect(reopened).toMatchObject({
      event: "breaker_opened",
      from: "half_open",
      detail: { reason: "a half-open probe failed" },
    });
    // The other probe still finishes; while open its success changes nothing.
    await report(store, "w1", [completed(probes[1]!)]);
    expect((await breaker(store)).status).toBe("open");
    clock.advance(OPEN_MS - 1);
    expect(await claimAs(store, "w2", ["search"], 10)).toEqual([]);

    // Half-open again: two probes (the third waits), each success frees a slot, two close it.
    clock.advance(1);
    const second = await claimAs(store, "w2", ["search"], 3);
    expect(second).toHaveLength(2);
    expect((await breaker(store)).status).toBe("half_open");
    await report(store, "w2", [completed(second[0]!)]);
    expect(await breaker(store)).toMatchObject({ status: "half_open", successes: 1 });
    const third = await claimAs(store, "w1", ["search"], 3);
    expect(third).toHaveLength(1);
    expect(await claimAs(store, "w1", ["search"], 3)).toEqual([]);
    await report(store, "w2", [completed(second[1]!)]);
    expect(await breaker(store)).toMatchObject({
      status: "closed",
      openedAt: null,
      openUntil: null,
      failures: 0,
      successes: 0,
    });
    const closed = (await store.listTransitions({ entityId: BREAKER })).at(-1)!;
    expect(closed).toMatchObject({
      event: "breaker_closed",
      from: "half_open",
      to: "closed",
      actor: "worker:w2",
      detail: { reason: "2 half-open probes succeeded" },
    });

    // Closed: everything left runs, with no limit on how many at once.
    await report(store, "w1", [completed(third[0]!)]);
    clock.advance(1_000);
    const rest = await claimAs(store, "w1", ["search"], 10);
    expect(rest.length).toBeGreaterThan(2);
    await report(
      store,
      "w1",
      rest.map((t) => completed(t)),
    );
    expect(Object.values(await tasksByKey(store, ws)).map((t) => t.status)).toEqual(
      Array(8).fill("completed"),
    );
    expect((await store.getWorkstream(ws))?.status).toBe("completed");

    expect(await eventsOf(store, BREAKER)).toEqual([
      "breaker_created",
      "breaker_opened",
      "breaker_half_opened",
      "breaker_opened",
      "breaker_half_opened",
      "breaker_closed",
    ]);
    await expectConsistent(store, clock);
  });

  it("people open (until closed), close and reset it, each an intervention", async () => {
    const { store, clock } = setupStore();
    const { workstreamId: ws } = await store.submit(definition(3, 0));

    const forced = await store.controlBreaker(BREAKER, "open", operator);
    expect(forced).toMatchObject({ status: "open", forced: true, openUntil: null });
    // Forced open outlasts any open time: claims, the claim path and the monitor all wait.
    clock.advance(OPEN_MS * 10);
    expect(await claimAs(store, "w1", ["search"], 10)).toEqual([]);
    expect(await store.advanceBreakers()).toEqual([]);
    expect(await breaker(store)).toMatchObject({ status: "open", forced: true });
    for (const t of await store.listTasks(ws))
      expect(t).toMatchObject({ status: "queued", attempts: 0 });

    const closed = await store.controlBreaker(BREAKER, "close", operator);
    expect(closed).toMatchObject({ status: "closed", forced: false, openUntil: null });
    const [t1] = await claimAs(store, "w1", ["search"], 1);
    expect(t1).toBeDefined();
    await report(store, "w1", [failed(t1!, "network")]);
    expect((await breaker(store)).failures).toBe(1);

    // Closing a closed breaker is refused; resetting it clears its counters.
    const err = await store.controlBreaker(BREAKER, "close", operator).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MendError);
    expect((err as MendError).code).toBe("refused");
    const reset = await store.controlBreaker(BREAKER, "reset", operator);
    expect(reset).toMatchObject({ status: "closed", failures: 0 });

    // A breaker nobody named yet: closing it is not found, opening it creates it (forced).
    const missing = await store.controlBreaker("nope", "close", operator).catch((e: unknown) => e);
    expect((missing as MendError).code).toBe("not_found");
    expect(await store.controlBreaker("payments", "open", operator)).toMatchObject({
      id: "payments",
      status: "open",
      forced: true,
    });

    const log = await store.listTransitions({ entityId: BREAKER });
    expect(log.map((t) => [t.event, t.from, t.to, t.actor])).toEqual([
      ["breaker_created", null, "closed", "engine"],
      ["breaker_opened", "closed", "open", "alice"],
      ["breaker_closed", "open", "closed", "alice"],
      ["breaker_reset", "closed", "closed", "alice"],
    ]);
    // The record says who did it and why.
    expect(log[1]!.detail).toMatchObject({ reason: "opened by a person: search API is down" });
    const interventions = await store.listInterventions();
    expect(interventions.map((i) => [i.target, i.actor, i.reason])).toEqual([
      [`breaker:${BREAKER}`, "alice", "search API is down"],
      [`breaker:${BREAKER}`, "alice", "search API is down"],
      [`breaker:${BREAKER}`, "alice", "search API is down"],
      ["breaker:payments", "alice", "search API is down"],
    ]);
    expect(interventions[0]).toMatchObject({
      before: { status: "closed", forced: false },
      after: { status: "open", forced: true, openUntil: null },
    });
    expect(interventions[2]).toMatchObject({
      before: { status: "closed", failures: 1 },
      after: { status: "closed", failures: 0 },
    });
    await expectConsistent(store, clock);
  });

  it("a submission with different settings reconfigures it (breaker_configured); one without keeps them", async () => {
    const { store, clock } = setupStore();
    await store.submit(definition(1, 0));
    await store.submit(definition(1, 0, { name: "same" }));
    expect(await eventsOf(store, BREAKER)).toEqual(["breaker_created"]);

    await store.submit(
      definition(1, 0, { name: "stricter", settings: { ...SETTINGS, failureThreshold: 5 } }),
    );
    const log = await store.listTransitions({ entityId: BREAKER });
    expect(log.map((t) => t.event)).toEqual(["breaker_created", "breaker_configured"]);
    expect(log[1]).toMatchObject({
      from: "closed",
      to: "closed",
      detail: {
        from: expect.objectContaining({ failureThreshold: 3 }),
        to: expect.objectContaining({ failureThreshold: 5 }),
      },
    });
    expect((await breaker(store)).config.failureThreshold).toBe(5);

    // Named without settings: the breaker keeps the ones it has.
    await store.submit(definition(1, 0, { name: "unsaid", settings: null }));
    expect(await eventsOf(store, BREAKER)).toEqual(["breaker_created", "breaker_configured"]);
    expect((await breaker(store)).config.failureThreshold).toBe(5);
    await expectConsistent(store, clock);
  });

  it("settings submitted while half-open apply once the probes have decided", async () => {
    const { store, clock } = setupStore();
    await store.submit(definition(6, 0));
    await openWithFailures(store, clock);
    clock.advance(OPEN_MS);
    const probes = await claimAs(store, "w1", ["search"], 5);
    expect((await breaker(store)).status).toBe("half_open");
    await store.submit(
      definition(1, 0, { name: "stricter", settings: { ...SETTINGS, failureThreshold: 5 } }),
    );
    await report(
      store,
      "w1",
      probes.map((t) => completed(t)),
    );
    expect((await breaker(store)).status).toBe("closed");
    expect((await breaker(store)).config.failureThreshold).toBe(5);
  });

  it("replay rebuilds every breaker after a mixed run (invariant 2)", async () => {
    const { store, clock } = setupStore();
    await store.submit(definition(6, 2));
    await openWithFailures(store, clock);
    clock.advance(OPEN_MS);
    const probes = await claimAs(store, "w1", ["search"], 5);
    await report(
      store,
      "w1",
      probes.map((t) => completed(t)),
    );
    expect((await breaker(store)).status).toBe("closed");
    await store.controlBreaker(BREAKER, "open", operator);
    await store.submit(definition(2, 0, { name: "again", settings: { ...SETTINGS, open: "30s" } }));
    await store.controlBreaker(BREAKER, "reset", operator);
    const replayed = await store.replay();
    expect(replayed.breakers[BREAKER]).toMatchObject({
      status: "closed",
      forced: false,
      config: expect.objectContaining({ openMs: 30_000 }),
    });
    await expectConsistent(store, clock);
  });
});
