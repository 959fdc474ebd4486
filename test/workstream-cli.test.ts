import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { complete, fail, runToCompletion, settle, start } from "./helpers/exchange.js";
import { json, runCli } from "./helpers/cli.js";
import { spec } from "./helpers/specs.js";
import { tmpDir } from "./helpers/tmp.js";

const ACTOR = "carol@test";

/** A store in a temp dir, set up in this process, and a runner of CLI commands against it. */
function cliStore() {
  const url = `sqlite:${join(tmpDir(), "mend.db")}`;
  const mend = (...args: string[]) =>
    runCli(["--store", url, ...args], { env: { MEND_ACTOR: ACTOR } });
  /** Runs `fn` on the store in this process, closing it afterwards. */
  const withStore = async <T>(fn: (store: Store) => Promise<T>): Promise<T> => {
    const store = await openStore(url);
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  };
  return { url, mend, withStore };
}

/**
 * a → (b, c) → d after a completed (the checkpoint returned), then b completed and c running.
 */
async function diamondMidway(withStore: ReturnType<typeof cliStore>["withStore"]) {
  return withStore(async (store) => {
    const { workstreamId: ws } = await store.submit(
      spec(
        [
          { id: "a" },
          { id: "b", deps: ["a"] },
          { id: "c", deps: ["a"] },
          { id: "d", deps: ["b", "c"] },
        ],
        { name: "diamond" },
      ),
    );
    await runToCompletion(store, ["a"]);
    const [checkpoint] = await store.listCheckpoints(ws, 1);
    const [b] = await start(store, ["b", "c"]);
    await settle(store, [complete(b!)]);
    return { ws, seq: checkpoint!.seq };
  });
}

/** A workstream whose only task failed for good. */
async function failedOne(store: Store, name: string): Promise<string> {
  const { workstreamId } = await store.submit(spec([{ id: "f", maxAttempts: 1 }], { name }));
  const [f] = await start(store, ["f"]);
  await settle(store, [fail(f!)]);
  return workstreamId;
}

describe("mend workstream checkpoints", () => {
  it("lists checkpoints newest first, as a table or in the seed's JSON shape", async () => {
    const { mend, withStore } = cliStore();
    const { ws, seq } = await diamondMidway(withStore);
    const [human, all, two] = await Promise.all([
      mend("workstream", "checkpoints", "diamond"),
      mend("--json", "workstream", "checkpoints", ws, "--limit", "0"),
      mend("--json", "workstream", "checkpoints", ws, "--limit", "2"),
    ]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(
      /SEQ\s+TIME\s+EVENT\s+TASK\s+COMPLETED\s+FAILED\s+PENDING\s+RUNNING/,
    );
    expect(human.stdout).toMatch(/task_completed\s+b\s+2\s+0\s+1\s+1/);
    expect(human.stdout).toContain(`--to latest is checkpoint ${seq}`);

    const checkpoints = json<Record<string, unknown>[]>(all);
    expect(checkpoints[0]).toEqual({
      workstream_id: ws,
      checkpoint_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      seq: expect.any(Number),
      event: "task_completed",
      task: "b",
      completed_tasks: ["a", "b"],
      failed_tasks: [],
      pending_tasks: ["d"],
      running_tasks: ["c"],
      cancelled_tasks: [],
      skipped_tasks: [],
      resources_held: {},
    });
    expect(checkpoints.find((c) => c.seq === seq)).toMatchObject({
      completed_tasks: ["a"],
      pending_tasks: ["b", "c", "d"],
      running_tasks: [],
    });
    expect(json(two)).toEqual(checkpoints.slice(0, 2));
  });
});

describe("mend workstream rollback", () => {
  it("dry run lists what would change, kept completions included, and writes nothing; --yes applies it", async () => {
    const { mend, withStore } = cliStore();
    const { ws, seq } = await diamondMidway(withStore);
    const before = await withStore((s) => s.snapshot());

    const [dry, dryJson, noYes] = await Promise.all([
      mend("workstream", "rollback", ws, "--to", String(seq), "--reason", "bad batch", "--dry-run"),
      mend("--json", "workstream", "rollback", ws, "--to", "latest", "--reason", "x", "--dry-run"),
      mend("workstream", "rollback", ws, "--to", String(seq), "--reason", "bad batch"),
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`dry run: roll back diamond ${ws} to checkpoint ${seq}`);
    expect(dry.stdout).toMatch(
      /c\s+running\s+queued\s+1 → 0\s+lease revoked: its worker is told to stop/,
    );
    expect(dry.stdout).toContain("kept: completed after the checkpoint, cannot be undone: b");
    expect(dry.stdout).toContain("nothing was changed (dry run)");
    expect(dry.stdout).not.toMatch(/resources/);
    expect(json(dryJson)).toMatchObject({
      operation: "rollback",
      dryRun: true,
      checkpoint: { seq },
      kept: ["b"],
      changes: [{ key: "c", from: "running", to: "queued" }],
    });
    // Without a terminal to confirm on and without --yes: refused as usage, nothing written.
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(
      /roll back diamond.*1 task change, 1 running task stopped, 1 completed task kept.*--yes/,
    );
    expect(await withStore((s) => s.snapshot())).toEqual(before);
    expect(await withStore((s) => s.listInterventions())).toEqual([]);

    const done = await mend(
      "workstream",
      "rollback",
      ws,
      "--to",
      String(seq),
      "--reason",
      "bad batch",
      "--yes",
    );
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toContain(`rolled back diamond ${ws} to checkpoint ${seq}`);
    const [status, ivs] = await Promise.all([
      mend("--json", "status", ws),
      mend("--json", "interventions"),
    ]);
    expect(
      json<{ tasks: { id: string; status: string }[] }>(status).tasks.map((t) => [t.id, t.status]),
    ).toEqual([
      ["a", "completed"],
      ["b", "completed"],
      ["c", "queued"],
      ["d", "pending"],
    ]);
    expect(json<unknown[]>(ivs)).toEqual([
      expect.objectContaining({
        actor: ACTOR,
        target: ws,
        reason: "bad batch",
        command: expect.stringContaining(`workstream rollback ${ws} --to ${seq}`),
        before: { status: "active", tasks: { c: "running" } },
      }),
    ]);
    await withStore(async (s) => expect(await s.replay()).toEqual(await s.snapshot()));
  });

  it("refuses bad arguments with the documented exit codes, writing nothing", async () => {
    const { mend, withStore } = cliStore();
    const { ws } = await diamondMidway(withStore);
    const otherSeq = await withStore(async (s) => {
      const other = await s.submit(spec([{ id: "o" }], { name: "other" }));
      return (await s.listCheckpoints(other.workstreamId, 1))[0]!.seq;
    });
    const before = await withStore(async (s) => [await s.snapshot(), await s.listTransitions()]);
    const cases: [string[], number, RegExp][] = [
      [
        ["workstream", "rollback", "nope", "--to", "latest", "--reason", "x", "--yes"],
        3,
        /no workstream "nope"/,
      ],
      [
        ["workstream", "rollback", ws, "--to", String(otherSeq), "--reason", "x", "--yes"],
        3,
        /belongs to workstream ws_.*see mend workstream checkpoints/,
      ],
      [
        ["workstream", "rollback", ws, "--to", "1", "--reason", "x", "--yes"],
        3,
        /workstream_created/,
      ],
      [
        ["workstream", "rollback", ws, "--to", "100000", "--reason", "x", "--yes"],
        2,
        /newer than the newest checkpoint/,
      ],
      [
        ["workstream", "rollback", ws, "--to", "yesterday", "--reason", "x", "--yes"],
        2,
        /--to must be latest or a checkpoint's seq/,
      ],
      [["workstream", "rollback", ws, "--to", "latest", "--yes"], 2, /--reason/],
      [
        ["workstream", "rollback", ws, "--to", "latest", "--reason", " ", "--yes"],
        2,
        /--reason must not be empty/,
      ],
      [
        ["workstream", "resume", ws, "--from-task", "zz", "--yes"],
        3,
        /has no task "zz" \(its tasks: a, b, c, d\)/,
      ],
      [["workstream", "checkpoints", ws, "--limit", "-1"], 2, /whole number/],
      [["dag", ws, "--format", "png"], 2, /unknown format "png": use one of ascii, mermaid, dot/],
      [
        ["deps", "remove", "--from", `${ws}/d`, "--to", "a", "--yes"],
        2,
        /does not depend on .*\/a; it depends on: b, c/,
      ],
      [["deps", "remove", "--from", `${ws}/zz`, "--to", "a", "--yes"], 3, /zz/],
    ];
    const results = await Promise.all(cases.map(([args]) => mend(...args)));
    results.forEach((r, i) => {
      const [args, code, message] = cases[i]!;
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(code);
      expect(r.stderr, args.join(" ")).toMatch(message);
    });
    expect(await withStore(async (s) => [await s.snapshot(), await s.listTransitions()])).toEqual(
      before,
    );
  });
});

describe("archived and merged workstreams", () => {
  it("refuse every recovery with exit 4, naming the status", async () => {
    const { mend, withStore } = cliStore();
    const { failed, done } = await withStore(async (s) => {
      const failed = await failedOne(s, "broken");
      const { workstreamId: done } = await s.submit(
        spec([{ id: "x" }, { id: "y", deps: ["x"] }], { name: "done" }),
      );
      await runToCompletion(s, ["x"]);
      await runToCompletion(s, ["y"]);
      return { failed, done };
    });
    const [archive, merge, badMerge, noReason] = await Promise.all([
      mend("--json", "workstream", "archive", failed, "--reason", "investigated", "--yes"),
      mend("workstream", "merge", done, "--reason", "merged into main", "--yes"),
      mend("workstream", "merge", failed, "--reason", "x", "--yes"),
      mend("workstream", "archive", done, "--yes"),
    ]);
    expect(json(archive)).toEqual({ workstream: failed, status: "archived" });
    expect(merge.code, merge.stderr).toBe(0);
    expect(merge.stdout).toContain(`merged ${done}: now merged`);
    expect(badMerge.code).toBe(4);
    expect(noReason.code).toBe(2);

    const before = await withStore(async (s) => [await s.snapshot(), await s.listTransitions()]);
    const refused = await Promise.all(
      [
        [failed, "archived"],
        [done, "merged"],
      ].flatMap(([ws, status]) =>
        [
          ["workstream", "rollback", ws!, "--to", "latest", "--reason", "x", "--yes"],
          ["workstream", "rollback", ws!, "--to", "latest", "--reason", "x", "--dry-run"],
          ["workstream", "retry", ws!, "--yes"],
          ["workstream", "retry-failed", ws!, "--yes"],
          ["workstream", "resume", ws!, "--from-task", status === "merged" ? "x" : "f", "--yes"],
          ["workstream", "archive", ws!, "--reason", "again", "--yes"],
          ...(status === "merged"
            ? [["deps", "remove", "--from", `${ws}/y`, "--to", "x", "--yes"]]
            : []),
        ].map(async (args) => [args, status, await mend(...args)] as const),
      ),
    );
    for (const [args, status, r] of refused) {
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(4);
      expect(r.stderr, args.join(" ")).toContain(`is ${status}`);
    }
    // A task-level retry would reopen the archived workstream: refused too.
    expect((await mend("retry", `${failed}/f`)).code).toBe(4);
    expect(await withStore(async (s) => [await s.snapshot(), await s.listTransitions()])).toEqual(
      before,
    );
    const [list, view] = await Promise.all([mend("--json", "status"), mend("status", done)]);
    expect(
      json<{ id: string; status: string }[]>(list)
        .map((w) => w.status)
        .sort(),
    ).toEqual(["archived", "merged"]);
    expect(view.stdout).toContain(`done  ${done}  merged`);
  });
});

describe("re-runs, the DAG and dependencies from the CLI", () => {
  it("retry-failed and resume print their plans; dag shows the states; deps remove frees a task", async () => {
    const { mend, withStore } = cliStore();
    const ws = await withStore(async (s) => {
      const { workstreamId } = await s.submit(
        spec([{ id: "a", maxAttempts: 1 }, { id: "b", deps: ["a"] }, { id: "c" }], {
          name: "trio",
        }),
      );
      const [a, c] = await start(s, ["a", "c"]);
      await settle(s, [fail(a!), complete(c!)]);
      return workstreamId;
    });
    const [ascii, mermaid, dot, dagJson] = await Promise.all([
      mend("dag", "trio"),
      mend("dag", ws, "--format", "mermaid"),
      mend("dag", ws, "--format", "dot"),
      mend("--json", "dag", ws),
    ]);
    expect(ascii.stdout).toBe(
      `trio  ${ws}  failed\na    failed\nc    completed\n  b  pending    ← a\n`,
    );
    expect(mermaid.stdout).toMatch(/^graph TD\n/);
    expect(mermaid.stdout).toContain('t0["a<br/>failed"]:::failed');
    expect(dot.stdout).toContain('"a" -> "b";');
    expect(json(dagJson)).toEqual({
      id: ws,
      name: "trio",
      status: "failed",
      tasks: [
        { key: "a", status: "failed", deps: [] },
        { key: "b", status: "pending", deps: ["a"] },
        { key: "c", status: "completed", deps: [] },
      ],
    });

    const dry = await mend("workstream", "retry-failed", ws, "--dry-run");
    expect(dry.stdout).toMatch(/a\s+failed\s+queued/);
    expect(dry.stdout).toContain("workstream: failed → active");
    const resumed = json<{ operation: string; changes: { key: string; to: string }[] }>(
      await mend(
        "--json",
        "workstream",
        "resume",
        ws,
        "--from-task",
        `${ws}/c`,
        "--reason",
        "redo c",
        "--yes",
      ),
    );
    expect(resumed).toMatchObject({ operation: "resume", changes: [{ key: "c", to: "queued" }] });

    const removed = json(
      await mend(
        "--json",
        "deps",
        "remove",
        "--from",
        `${ws}/b`,
        "--to",
        "a",
        "--reason",
        "b can do without a",
        "--yes",
      ),
    );
    expect(removed).toEqual({
      taskId: `${ws}/b`,
      removed: "a",
      deps: { from: ["a"], to: [] },
      status: { from: "pending", to: "queued" },
      dryRun: false,
    });
    expect((await mend("dag", ws)).stdout).toMatch(/\nb\s+queued\n/);
    const ivs = json<{ target: string; reason: string | null; command: string }[]>(
      await mend("--json", "interventions"),
    );
    expect(ivs.map((i) => [i.target, i.reason])).toEqual([
      [ws, "redo c"],
      [`${ws}/b`, "b can do without a"],
    ]);
    expect(ivs[1]!.command).toMatch(/deps remove/);
    await withStore(async (s) => expect(await s.replay()).toEqual(await s.snapshot()));
  });
});
