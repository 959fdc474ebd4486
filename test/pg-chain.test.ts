/**
 * The PostgreSQL store chains a small transaction's records on the server as it commits
 * (`append_chained`, migration v4) and a large one's in the worker before it appends them. Both
 * must give the very hashes of `transitionHash`, or the log would fail its own verification.
 */
import { describe, expect, it, vi } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { claimAs, completed, expectConsistent, report } from "./helpers/recovery.js";
import { tempPgStore } from "./helpers/pg.js";
import { spec } from "./helpers/specs.js";

/** Text that a hand-written hash could get wrong: escapes, newlines, non-ASCII, emoji. */
const AWKWARD = `quote " backslash \\ tab \t newline \n é ß 中文 🚀 $fn$ E'\\n' '' end`;

describe("the log's hash chain on PostgreSQL", () => {
  it("records chained by the server and by the worker form one chain that verifies", async () => {
    const clock = new FakeClock();
    const store = await tempPgStore(clock);
    const onServer = vi.spyOn(store, "chainOnServer");

    // Small: chained on the server. Large (a 20 KB input): chained here.
    await store.submit(spec([{ id: "a", input: { text: AWKWARD } }], { name: "awkward é ß" }));
    await store.submit(
      spec(
        Array.from({ length: 30 }, (_, i) => ({ id: `b${i}`, input: { pad: "x".repeat(700) } })),
      ),
    );
    expect(onServer.mock.results.map((r) => r.value)).toEqual([true, false]);

    // Claims and completions, a few at a time (server) and many at once (worker).
    const one = await claimAs(store, "w1", ["work"], 1);
    await report(
      store,
      "w1",
      one.map((t) => ({ ...completed(t), output: { said: AWKWARD } })),
    );
    const many = await claimAs(store, "w2", ["work"], 30);
    expect(many).toHaveLength(30);
    await report(
      store,
      "w2",
      many.map((t) => completed(t)),
    );
    expect(onServer.mock.results.some((r) => r.value === true)).toBe(true);
    expect(onServer.mock.results.filter((r) => r.value === false).length).toBeGreaterThan(1);

    const log = await store.listTransitions();
    expect(log.map((t) => t.seq)).toEqual(log.map((_, i) => i + 1));
    expect(log.find((t) => t.event === "task_created")?.data).toMatchObject({
      input: { text: AWKWARD },
    });
    expect(await store.verifyChain()).toMatchObject({ ok: true, checked: log.length });
    await expectConsistent(store, clock);
  });

  it("small transactions committing side by side each take the head in turn: one gapless chain", async () => {
    const clock = new FakeClock();
    const store = await tempPgStore(clock);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.submit(spec([{ id: "t" }], { name: `s${i}` }))),
    );
    const log = await store.listTransitions();
    expect(log).toHaveLength(40);
    expect(log.map((t) => t.seq)).toEqual(log.map((_, i) => i + 1));
    expect(await store.verifyChain()).toMatchObject({ ok: true, checked: 40 });
  });
});
