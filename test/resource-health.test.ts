/**
 * The monitor's resource health checks, on a fake clock and SQLite: a failing check takes its
 * resource out of service (waiting tasks take their alternative), a passing one puts it back,
 * and a resource a person took out stays out whatever its check says.
 */
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Monitor, type ResourceChecks } from "../src/engine/Monitor.js";
import { validateDefinition } from "../src/model/definition.js";
import type { SqliteStore } from "../src/store/sqlite/SqliteStore.js";
import {
  byKey,
  claimAs,
  completed,
  expectConsistent,
  operator,
  settle,
} from "./conformance/helpers.js";
import { tempStore } from "./helpers/tmp.js";

const CHECK_MS = 10_000;
/** Longer than the test: no lease expires while the clock moves between checks. */
const LEASE = 600_000;

/** A store with three tasks that each need one of api-a (preferred) and api-b, one holder each. */
async function setup(checks: ResourceChecks) {
  const clock = new FakeClock();
  const { store } = tempStore(clock);
  const monitor = new Monitor({
    store,
    clock,
    id: "m",
    resourceChecks: checks,
    resourceCheckMs: CHECK_MS,
  });
  const { workstreamId } = await store.submit(
    validateDefinition({
      name: "apis",
      tasks: ["x", "y", "z"].map((id) => ({
        id,
        handler: "work",
        resources: [{ oneOf: ["api-a", "api-b"] }],
      })),
    }),
  );
  /** One monitor sweep: the resources it changed, as `[id, status, reason]`. */
  const sweep = async () =>
    (await monitor.tick())!.resources.map((r) => [r.id, r.status, r.reason] as const);
  return { clock, store, monitor, workstreamId, sweep };
}

async function resource(store: SqliteStore, id: string) {
  return (await store.listResources()).find((r) => r.id === id);
}

describe("resource health checks", () => {
  it("a failing check takes the resource out of service, so waiting tasks take their alternative; a passing one puts it back", async () => {
    let healthy = true;
    const { clock, store, workstreamId, sweep } = await setup({ "api-a": () => healthy });
    // Passing: nothing to change. Failing, but not yet due: still nothing.
    expect(await sweep()).toEqual([]);
    healthy = false;
    clock.advance(CHECK_MS - 1);
    expect(await sweep()).toEqual([]);
    clock.advance(1);
    expect(await sweep()).toEqual([
      ["api-a", "unavailable", "health check failed: it returned false"],
    ]);
    // Only api-b can be held: one task runs on it, the others wait, visibly.
    const [first, ...rest] = await claimAs(store, "w1", ["work"], 3, LEASE);
    expect(rest).toEqual([]);
    expect((await byKey(store, workstreamId))[first!.key]!.held).toEqual(["api-b"]);
    const started = (await store.listTransitions({ entityId: first!.id })).find(
      (t) => t.event === "task_started",
    );
    expect(started!.detail).toEqual({
      reallocated: [{ need: ["api-a", "api-b"], to: "api-b", because: "api-a is unavailable" }],
    });
    expect(await sweep()).toEqual([["api-b", "exhausted", "all 1 slot held; 2 tasks waiting"]]);
    // When api-b frees, the next waiting task takes it; api-a stays idle while its check fails.
    await settle(store, "w1", [completed(first!)]);
    const [second] = await claimAs(store, "w1", ["work"], 3, LEASE);
    expect((await byKey(store, workstreamId))[second!.key]!.held).toEqual(["api-b"]);
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([]);
    // Passing again: back in service, and the last task takes it.
    healthy = true;
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([["api-a", "available", null]]);
    const [third] = await claimAs(store, "w1", ["work"], 3, LEASE);
    expect((await byKey(store, workstreamId))[third!.key]!.held).toEqual(["api-a"]);
    const log = await store.listTransitions({ entityId: "api-a" });
    expect(log.map((t) => [t.event, t.actor])).toEqual([
      ["resource_created", "engine"],
      ["resource_unavailable", "monitor"],
      ["resource_available", "monitor"],
    ]);
    // The monitor's changes are not a person's: no interventions.
    expect(await store.listInterventions()).toEqual([]);
    await expectConsistent(store, clock);
  });

  it("a resource a person took out of service stays out, whatever its check says", async () => {
    let healthy = true;
    const { clock, store, sweep } = await setup({ "api-a": () => healthy });
    await store.markResource("api-a", false, "vendor incident", operator);
    expect(await sweep()).toEqual([]);
    healthy = false;
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([]);
    healthy = true;
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([]);
    expect(await resource(store, "api-a")).toMatchObject({
      status: "unavailable",
      reason: "vendor incident",
    });
    // Once the person puts it back, the check watches it again.
    await store.markResource("api-a", true, "vendor is back", operator);
    healthy = false;
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([
      ["api-a", "unavailable", "health check failed: it returned false"],
    ]);
    await expectConsistent(store, clock);
  });

  it("a check that throws or never answers fails, saying why; one for an unknown resource creates it out of service", async () => {
    let answer: () => Promise<boolean> = () => Promise.reject(new Error("connect ECONNREFUSED"));
    const { clock, store, monitor, sweep } = await setup({
      "api-a": () => answer(),
      "gpu-pool": () => false,
    });
    expect(await sweep()).toEqual([
      ["api-a", "unavailable", "health check failed: connect ECONNREFUSED"],
      ["gpu-pool", "unavailable", "health check failed: it returned false"],
    ]);
    expect(await resource(store, "gpu-pool")).toMatchObject({ maxHolders: 1, holders: 0 });
    // Back, then hanging: after 5 s without an answer it counts as failed.
    answer = () => Promise.resolve(true);
    clock.advance(CHECK_MS);
    expect(await sweep()).toEqual([["api-a", "available", null]]);
    answer = () => new Promise<boolean>(() => {});
    clock.advance(CHECK_MS);
    const tick = monitor.tick();
    while (clock.pending === 0) await new Promise((resolve) => setImmediate(resolve));
    clock.advance(5_000);
    expect((await tick)!.resources.map((r) => [r.id, r.reason])).toEqual([
      ["api-a", "health check failed: no answer within 5000 ms"],
    ]);
    await expectConsistent(store, clock);
  });
});
