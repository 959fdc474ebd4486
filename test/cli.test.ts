import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openStore } from "../src/store/open.js";
import { assertBuilt, CLI, type CliResult, FIXTURES, json, runCli } from "./helpers/cli.js";
import { tmpDir } from "./helpers/tmp.js";

const HANDLERS = join(FIXTURES, "handlers.mjs");
const ACTOR = "carol@test";

/** A fresh store in a temp dir, and a runner of CLI commands against it. */
function cliStore() {
  const dir = tmpDir();
  const url = `sqlite:${join(dir, "mend.db")}`;
  const mend = (...args: string[]) =>
    runCli(["--store", url, ...args], { env: { MEND_ACTOR: ACTOR } });
  const file = (name: string, content: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
    return path;
  };
  return { dir, url, mend, file };
}

/** The JSON lines `mend events --json` prints. */
function eventLines(r: CliResult): { event: string; severity: string; id: string }[] {
  expect(r.code, r.stderr).toBe(0);
  return r.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));
}

const TWO_TASKS = {
  name: "pair",
  tasks: [
    { id: "a", handler: "plan", input: { topic: "x" } },
    { id: "b", handler: "summarize", deps: ["a"] },
  ],
};

describe("mend submit", () => {
  it("prints the new workstream's id, or {workstream} with --json", async () => {
    const { mend, file } = cliStore();
    const plain = await mend("submit", file("ws.json", TWO_TASKS));
    expect(plain.code, plain.stderr).toBe(0);
    const id = plain.stdout.trim();
    expect(id).toMatch(/^ws_[0-9a-z]+$/);

    const yaml = file("ws.yaml", "name: yaml-one\ntasks:\n  - id: only\n    handler: plan\n");
    const viaJson = json<{ workstream: string }>(
      await mend("--json", "submit", yaml, "--handlers", HANDLERS),
    );
    expect(viaJson.workstream).toMatch(/^ws_[0-9a-z]+$/);
    expect(viaJson.workstream).not.toBe(id);

    const all = json<{ id: string; name: string; status: string }[]>(
      await mend("--json", "status"),
    );
    expect(all.map((w) => [w.id, w.name, w.status]).sort()).toEqual(
      [
        [id, "pair", "active"],
        [viaJson.workstream, "yaml-one", "active"],
      ].sort(),
    );
  });

  const bad: [string, string, unknown, RegExp[], string[]?][] = [
    [
      "unknown dependency",
      "ws.json",
      { name: "bad", tasks: [{ id: "a", handler: "plan", deps: ["nope"] }] },
      [/tasks\[0\]\.deps\[0\]/, /nope/],
    ],
    [
      "cycle",
      "ws.json",
      {
        name: "bad",
        tasks: [
          { id: "a", handler: "plan", deps: ["c"] },
          { id: "b", handler: "plan", deps: ["a"] },
          { id: "c", handler: "plan", deps: ["b"] },
        ],
      },
      [/cycle/i, /\ba\b/, /\bb\b/, /\bc\b/],
    ],
    [
      "duplicate id",
      "ws.json",
      {
        name: "bad",
        tasks: [
          { id: "a", handler: "plan" },
          { id: "a", handler: "plan" },
        ],
      },
      [/duplicate task id "a"/],
    ],
    [
      "handler missing from --handlers",
      "ws.json",
      { name: "bad", tasks: [{ id: "a", handler: "ghost" }] },
      [/ghost/, /plan/],
      ["--handlers", HANDLERS],
    ],
    [
      "bad duration",
      "ws.yaml",
      "name: bad\ntasks:\n  - id: a\n    handler: plan\n    timeout: 5 parsecs\n",
      [/tasks\[0\]\.timeout/, /5 parsecs/],
    ],
    [
      "oversize input",
      "ws.json",
      { name: "bad", tasks: [{ id: "a", handler: "plan", input: { blob: "x".repeat(300_000) } }] },
      [/tasks\[0\]\.input/, /bytes|large|limit/i],
    ],
  ];
  for (const [what, name, content, patterns, extra] of bad) {
    it(`refuses a definition with ${what}: exit 2, named, nothing written`, async () => {
      const { mend, file, url } = cliStore();
      const r = await mend("submit", file(name, content), ...(extra ?? []));
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(r.stdout).toBe("");
      for (const p of patterns) expect(r.stderr).toMatch(p);
      // Nothing was written (read in-process: cheaper than two more CLI runs per case).
      const store = await openStore(url);
      try {
        expect(await store.listWorkstreams()).toEqual([]);
        expect(await store.listTransitions()).toEqual([]);
      } finally {
        await store.close();
      }
    });
  }

  it("after a refused definition, status --json is [] and there are no events", async () => {
    const { mend, file } = cliStore();
    const cyclic = {
      name: "bad",
      tasks: [
        { id: "a", handler: "plan", deps: ["b"] },
        { id: "b", handler: "plan", deps: ["a"] },
      ],
    };
    expect((await mend("submit", file("ws.json", cyclic))).code).toBe(2);
    const [status, events] = await Promise.all([
      mend("--json", "status"),
      mend("--json", "events", "--limit", "0"),
    ]);
    expect(json(status)).toEqual([]);
    expect(eventLines(events)).toEqual([]);
  });

  it("reports a refused definition as JSON with --json", async () => {
    const { mend, file } = cliStore();
    const r = await mend(
      "--json",
      "submit",
      file("ws.json", { name: "bad", tasks: [{ id: "a", handler: "plan", deps: ["a"] }] }),
    );
    expect(r.code).toBe(2);
    const body = JSON.parse(r.stdout) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("invalid_definition");
    expect(body.error.message).toMatch(/depends on itself/);
  });

  it("a missing definition file is not found (exit 3)", async () => {
    const { mend, dir } = cliStore();
    const r = await mend("submit", join(dir, "absent.yaml"));
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/absent\.yaml/);
  });
});

describe("inspecting and acting on tasks", () => {
  it("status, show, retry, skip, cancel, interventions and events", async () => {
    const { mend, file } = cliStore();
    const wsId = (await mend("submit", file("ws.json", TWO_TASKS))).stdout.trim();

    // Read-only views, run side by side.
    const [viewR, byNameR, human, shown, shownJsonR] = await Promise.all([
      mend("--json", "status", wsId),
      mend("--json", "status", "pair"),
      mend("status", wsId),
      mend("show", `${wsId}/b`),
      mend("--json", "show", `${wsId}/b`),
    ]);
    // status WS --json: the workstream and its tasks, by the ids as written.
    const view = json<{
      id: string;
      name: string;
      status: string;
      tasks: { id: string; status: string; attempts: number }[];
    }>(viewR);
    expect(view).toMatchObject({ id: wsId, name: "pair", status: "active" });
    expect(view.tasks.map((t) => [t.id, t.status, t.attempts])).toEqual([
      ["a", "queued", 0],
      ["b", "pending", 0],
    ]);
    // By name as well, and in human form.
    expect(json<{ id: string }>(byNameR).id).toBe(wsId);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/\ba\b.*queued/);

    // show WS/TASK.
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(`${wsId}/b`);
    expect(shown.stdout).toMatch(/pending/);
    expect(shown.stdout).toMatch(/task_created/);
    const shownJson = json<{ task: { id: string; key: string }; history: { event: string }[] }>(
      shownJsonR,
    );
    expect(shownJson.task).toMatchObject({ id: `${wsId}/b`, key: "b" });
    expect(shownJson.history.map((h) => h.event)).toEqual(["task_created"]);

    // Not found: exit 3.
    const notFound = [
      ["show", `${wsId}/nope`],
      ["retry", `${wsId}/nope`],
      ["skip", `${wsId}/nope`, "--yes", "--reason", "x"],
      ["status", "no-such-workstream"],
      ["show", "nope/a"],
    ];
    const nfResults = await Promise.all(notFound.map((args) => mend(...args)));
    nfResults.forEach((r, i) => {
      expect(r.code, `${notFound[i]!.join(" ")}: ${r.stderr}`).toBe(3);
      expect(r.stderr).toMatch(/nope|no-such-workstream/);
    });

    // retry of a task that has not failed: refused, exit 4.
    const retry = await mend("retry", `${wsId}/a`, "--reason", "why not");
    expect(retry.code).toBe(4);
    expect(retry.stderr).toMatch(/queued/);

    // skip without --yes and without a terminal: usage error, nothing changes.
    const [noYes, noYesCancel] = await Promise.all([
      mend("skip", `${wsId}/b`, "--reason", "x"),
      mend("cancel", `${wsId}/b`),
    ]);
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(/--yes/);
    expect(noYesCancel.code).toBe(2);
    expect(json(await mend("--json", "interventions"))).toEqual([]);
    expect(
      json<{ tasks: { id: string; status: string }[] }>(await mend("--json", "status", wsId)).tasks,
    ).toMatchObject([{ status: "queued" }, { status: "pending" }]);

    // skip --yes --reason: done and logged.
    const skip = await mend("--json", "skip", `${wsId}/b`, "--yes", "--reason", "x");
    expect(json(skip)).toMatchObject({ task: `${wsId}/b`, status: "skipped" });
    const ivs = json<
      {
        actor: string;
        target: string;
        reason: string;
        command: string;
        after: { status: string };
      }[]
    >(await mend("--json", "interventions"));
    expect(ivs).toHaveLength(1);
    expect(ivs[0]).toMatchObject({
      actor: ACTOR,
      target: `${wsId}/b`,
      reason: "x",
      after: { status: "skipped" },
    });
    expect(ivs[0]!.command).toMatch(/skip/);

    // A refused action (skipping it again) logs nothing.
    expect((await mend("skip", `${wsId}/b`, "--yes", "--reason", "again")).code).toBe(4);
    // cancel --yes works on the queued task; retry brings it back.
    expect(json(await mend("--json", "cancel", `${wsId}/a`, "--yes"))).toMatchObject({
      status: "cancelled",
    });
    expect(json(await mend("--json", "retry", `${wsId}/a`, "--reason", "again"))).toMatchObject({
      status: "queued",
    });
    expect(json<unknown[]>(await mend("--json", "interventions"))).toHaveLength(3);

    // events: --severity filters out everything below it.
    const [allR, warningsR, errorsR, badSeverity] = await Promise.all([
      mend("--json", "events", "--limit", "0"),
      mend("--json", "events", "--severity", "warning"),
      mend("--json", "events", "--severity", "error"),
      mend("events", "--severity", "loud"),
    ]);
    const all = eventLines(allR);
    expect(all.some((e) => e.severity === "info")).toBe(true);
    const warnings = eventLines(warningsR);
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.every((e) => ["warning", "error", "critical"].includes(e.severity))).toBe(true);
    expect(warnings.map((e) => e.event)).toEqual(
      all.filter((e) => e.severity !== "info").map((e) => e.event),
    );
    expect(warnings.map((e) => e.event)).toEqual(
      expect.arrayContaining(["task_skipped", "task_cancelled"]),
    );
    const errorsOnly = eventLines(errorsR);
    expect(errorsOnly.every((e) => ["error", "critical"].includes(e.severity))).toBe(true);
    expect(badSeverity.code).toBe(2);
    expect(badSeverity.stderr).toMatch(/loud/);
  });
});

describe("help", () => {
  it("every command has --help, exiting 0", async () => {
    const top = await runCli(["--help"]);
    expect(top.code).toBe(0);
    const commands = [...top.stdout.split("Commands:")[1]!.matchAll(/^\s{2}([a-z-]+)/gm)].map(
      (m) => m[1]!,
    );
    expect(commands).toEqual(
      expect.arrayContaining([
        "submit",
        "run",
        "worker",
        "status",
        "show",
        "events",
        "retry",
        "skip",
        "cancel",
        "interventions",
      ]),
    );
    const results = await Promise.all(
      commands
        .filter((c) => c !== "help")
        .map(async (c) => [c, await runCli([c, "--help"])] as const),
    );
    for (const [c, r] of results) {
      expect(r.code, `${c} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout, c).toMatch(new RegExp(`Usage: mend ${c}`));
    }
    expect((await runCli(["help", "submit"])).code).toBe(0);
    // An unknown command or option is a usage error.
    expect((await runCli(["frobnicate"])).code).toBe(2);
    expect((await runCli(["status", "--frobnicate"])).code).toBe(2);
  });

  it("ends quietly when the reader closes the pipe early (mend … | head)", async () => {
    assertBuilt();
    const child = spawn(process.execPath, [CLI, "worker", "--help"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    // Closed before the CLI has loaded, so its first write finds no reader.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const code = await new Promise((resolve) => child.on("close", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });
});
