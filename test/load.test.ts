import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import { validateDefinition } from "../src/model/definition.js";
import {
  defineTask,
  type HandlerMap,
  handlerNames,
  resolveHandler,
  type TaskContext,
} from "../src/model/handler.js";
import { loadDefinitionFile, loadHandlersModule, loadResourceChecks } from "../src/model/load.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mend-load-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

async function rejection(promise: Promise<unknown>): Promise<MendError> {
  const err = await promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MendError);
  return err as MendError;
}

describe("loadDefinitionFile", () => {
  it("loads the YAML fixture into a valid definition", async () => {
    const spec = validateDefinition(await loadDefinitionFile("test/fixtures/research.yaml"), {
      handlers: ["plan", "search", "summarize"],
    });
    expect(spec.name).toBe("research");
    expect(spec.tasks.map((t) => [t.key, t.deps])).toEqual([
      ["plan", []],
      ["search-1", ["plan"]],
      ["search-2", ["plan"]],
      ["summarize", ["search-1", "search-2"]],
    ]);
    expect(spec.tasks[1]).toMatchObject({ priority: 5, timeoutMs: 30_000, critical: true });
    expect(spec.tasks[2]!.retry.scheduleMs).toEqual([300_000, 900_000, 2_700_000]);
  });

  it("loads JSON", async () => {
    const raw = await loadDefinitionFile("test/fixtures/research.json");
    expect(validateDefinition(raw).tasks[1]!.timeoutMs).toBe(30_000);
  });

  it("reads YAML 1.2: `on` is a key, not a boolean", async () => {
    const path = await file(
      "on.yml",
      "name: x\ntasks:\n  - id: a\n    handler: h\n    retry:\n      on:\n        network: { maxAttempts: 9 }\n",
    );
    const spec = validateDefinition(await loadDefinitionFile(path));
    expect(spec.tasks[0]!.retry.categories).toEqual({ network: { maxAttempts: 9 } });
  });

  it("tries JSON then YAML for other extensions", async () => {
    const json = await file("def.txt", '{"name": "j", "tasks": []}');
    const yaml = await file("def", "name: y\ntasks: []\n");
    expect(await loadDefinitionFile(json)).toEqual({ name: "j", tasks: [] });
    expect(await loadDefinitionFile(yaml)).toEqual({ name: "y", tasks: [] });
  });

  it("reports a missing file as not found", async () => {
    const path = join(dir, "missing.yaml");
    const err = await rejection(loadDefinitionFile(path));
    expect(err.code).toBe("not_found");
    expect(err.message).toBe(`definition file not found: ${path}`);
  });

  it("reports a YAML syntax error with its line and column", async () => {
    const path = await file("bad.yaml", "name: x\ntasks:\n  - id: a: b\n");
    const err = await rejection(loadDefinitionFile(path));
    expect(err.code).toBe("invalid_definition");
    expect(err.message).toBe(
      `cannot parse ${path}: Nested mappings are not allowed in compact mappings at line 3, column 9`,
    );
    expect(err.context).toMatchObject({ line: 3, column: 9 });
  });

  it("refuses duplicate YAML keys", async () => {
    const path = await file("dup.yaml", "name: x\nname: y\n");
    expect((await rejection(loadDefinitionFile(path))).message).toBe(
      `cannot parse ${path}: Map keys must be unique at line 2, column 1`,
    );
  });

  it("reports a JSON syntax error with its line and column", async () => {
    const cases: [string, string][] = [
      ['{\n  "name": "x",\n  "tasks": [}\n', "Unexpected token '}' at line 3, column 13"],
      ['{\n  "name": "x",\n}', "Expected double-quoted property name at line 3, column 1"],
      ['{"name": "x"', "Expected ',' or '}' after property value at line 1, column 13"],
      ["", "Unexpected end of JSON input at line 1, column 1"],
      ['{\n  "critical": tru}', "Unexpected token '}' at line 2, column 19"],
    ];
    for (const [text, reason] of cases) {
      const path = await file("bad.json", text);
      const err = await rejection(loadDefinitionFile(path));
      expect(err.code).toBe("invalid_definition");
      expect(err.message).toBe(`cannot parse ${path}: ${reason}`);
    }
  });
});

describe("loadHandlersModule", () => {
  it("loads the fixture's default export, relative to the working directory", async () => {
    const handlers = await loadHandlersModule("test/fixtures/handlers.mjs");
    expect(handlerNames(handlers)).toEqual(["plan", "search", "summarize"]);
    const summarize = resolveHandler(handlers, "summarize");
    expect(await summarize.run({ taskId: "t_1" } as TaskContext)).toBe("done: t_1");
    expect(resolveHandler(handlers, "search").timeout).toBe("30s");
  });

  it("accepts an absolute path", async () => {
    const path = await file("abs.mjs", "export default { ping: () => 'pong' };\n");
    expect(Object.keys(await loadHandlersModule(path))).toEqual(["ping"]);
    expect(Object.keys(await loadHandlersModule(relative(process.cwd(), path)))).toEqual(["ping"]);
  });

  it("reports a missing module as not found", async () => {
    const err = await rejection(loadHandlersModule("test/fixtures/nope.mjs"));
    expect(err.code).toBe("not_found");
    expect(err.message).toBe("handlers module not found: test/fixtures/nope.mjs");
  });

  it("refuses a module without a usable default export", async () => {
    const cases: [string, string, string][] = [
      [
        "named.mjs",
        "export const plan = () => 1;\n",
        "has no default export; use export default { name: async (ctx) => result, … }",
      ],
      [
        "list.mjs",
        "export default [() => 1];\n",
        "must be an object mapping handler names to handlers (export default { name: async (ctx) => result, … })",
      ],
      ["empty.mjs", "export default {};\n", "exports no handlers"],
      [
        "bad-entries.mjs",
        "export default { ok: () => 1, text: 'no', task: { retry: {} } };\n",
        '"text", "task" must be a function or a task object with a run function',
      ],
      ["broken.mjs", "export default {\n", "cannot load handlers module"],
    ];
    for (const [name, text, fragment] of cases) {
      const path = await file(name, text);
      const err = await rejection(loadHandlersModule(path));
      expect(err.code).toBe("invalid_argument");
      expect(err.message).toContain(path);
      expect(err.message).toContain(fragment);
    }
  });
});

describe("loadResourceChecks", () => {
  it("returns the module's resourceChecks export, or null when it has none", async () => {
    const checks = await loadResourceChecks("test/fixtures/resource-check-handlers.mjs");
    expect(Object.keys(checks!)).toEqual(["api-a", "api-b"]);
    expect(await checks!["api-b"]!()).toBe(true);
    expect(await loadResourceChecks("test/fixtures/handlers.mjs")).toBeNull();
  });

  it("refuses a resourceChecks that is not an object of functions, naming every bad entry", async () => {
    const cases: [string, string][] = [
      [
        "export const resourceChecks = [() => true];",
        "the resourceChecks export of handlers module PATH must be an object mapping resource names to functions that return true while the resource works",
      ],
      ["export const resourceChecks = null;", "; got null"],
      [
        'export const resourceChecks = { "api-a": "yes", "a b": () => true };',
        'resourceChecks of handlers module PATH: "api-a" must be a function returning true or false (or a promise of it), got a string; resource "a b" must start with a letter or digit',
      ],
    ];
    for (const [i, [source, fragment]] of cases.entries()) {
      const path = await file(`checks-${i}.mjs`, `export default { work: () => 1 };\n${source}\n`);
      const err = await rejection(loadResourceChecks(path));
      expect(err.code).toBe("invalid_argument");
      expect(err.message).toContain(fragment.replace("PATH", path));
    }
    await expect(loadResourceChecks(join(dir, "missing.mjs"))).rejects.toMatchObject({
      code: "not_found",
    });
  });
});

describe("handler helpers", () => {
  const handlers: HandlerMap = {
    greet: defineTask<{ who: string }, string>({ run: (ctx) => `hi ${ctx.input.who}` }),
    add: (ctx: TaskContext<{ a: number; b: number }>) => ctx.input.a + ctx.input.b,
  };

  it("wraps a plain function as a task object", async () => {
    const add = resolveHandler(handlers, "add");
    expect(await add.run({ input: { a: 2, b: 3 } } as TaskContext)).toBe(5);
    expect(resolveHandler(handlers, "greet")).toBe(handlers.greet);
  });

  it("names the registered handlers when one is missing", () => {
    expect(() => resolveHandler(handlers, "gret")).toThrow(
      'unknown handler "gret" (handlers are: add, greet)',
    );
    expect(() => resolveHandler({}, "x")).toThrow(
      'unknown handler "x" (no handlers are registered)',
    );
    expect(() => resolveHandler(handlers, "toString")).toThrow(MendError);
  });
});
