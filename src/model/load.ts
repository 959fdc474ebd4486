/**
 * Loading what a user points the CLI at: a workstream definition file (YAML or JSON), and a
 * module of handlers (with, optionally, its resources' health checks).
 */
import { readFile, stat } from "node:fs/promises";
import { extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { MendError } from "../errors.js";
import { capabilityProblem } from "./capabilities.js";
import type { HandlerMap } from "./handler.js";

/**
 * Reads and parses a definition file: `.json` as JSON, `.yaml`/`.yml` as YAML, anything else as
 * JSON if it parses, else YAML. Returns the raw value, for `validateDefinition`.
 *
 * @throws MendError `not_found` when the file does not exist; `invalid_definition` when it does
 *   not parse, with the line and column.
 */
export async function loadDefinitionFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if (errorCode(err) === "ENOENT") {
      throw new MendError("not_found", `definition file not found: ${path}`, { path });
    }
    throw new MendError(
      "invalid_argument",
      `cannot read ${path}: ${messageOf(err)}`,
      { path },
      {
        cause: err,
      },
    );
  }
  const ext = extname(path).toLowerCase();
  if (ext === ".json") return parseJson(text, path);
  if (ext === ".yaml" || ext === ".yml") return parseYamlText(text, path);
  try {
    return JSON.parse(text);
  } catch {
    return parseYamlText(text, path);
  }
}

/** The YAML parser, loaded on first use: a worker given only JSON (or no file) never needs it. */
const yaml = () => import("yaml");

async function parseJson(text: string, path: string): Promise<unknown> {
  try {
    return JSON.parse(text);
  } catch (err) {
    // V8 gives a position for some errors only, and never a line: find the spot ourselves then.
    const message = messageOf(err);
    const position = / in JSON at position (\d+)/.exec(message)?.[1];
    const reason = message
      .replace(/ in JSON at position \d+.*$/s, "")
      .replace(/, [\s\S]* is not valid JSON$/, "");
    const offset = position === undefined ? await jsonErrorOffset(text) : Number(position);
    throw parseError(path, reason, text, offset, err);
  }
}

async function parseYamlText(text: string, path: string): Promise<unknown> {
  const { parse: parseYaml, YAMLParseError } = await yaml();
  try {
    return parseYaml(text, { prettyErrors: false });
  } catch (err) {
    if (!(err instanceof YAMLParseError)) throw err;
    throw parseError(path, err.message, text, err.pos[0], err);
  }
}

function parseError(
  path: string,
  reason: string,
  text: string,
  offset: number,
  cause: unknown,
): MendError {
  const { line, column } = lineColumn(text, offset);
  return new MendError(
    "invalid_definition",
    `cannot parse ${path}: ${reason} at line ${line}, column ${column}`,
    { path, line, column },
    { cause },
  );
}

function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf("\n") + 1;
  return { line: before.split("\n").length, column: offset - lineStart + 1 };
}

/**
 * Where JSON that V8 rejected without a position goes wrong. JSON is (nearly) YAML, and the YAML
 * parser reports positions; failing that, the end of the text is where parsing gave up.
 */
async function jsonErrorOffset(text: string): Promise<number> {
  const { parse: parseYaml, YAMLParseError } = await yaml();
  try {
    parseYaml(text, { prettyErrors: false });
  } catch (err) {
    if (err instanceof YAMLParseError) return err.pos[0];
  }
  return text.length;
}

/**
 * Imports a handlers module (relative to the working directory) and returns its default export:
 * an object mapping handler names to functions or task objects (`{ run, ... }`).
 *
 * @throws MendError `not_found` when the file does not exist; `invalid_argument` when it fails to
 *   load or its default export is not such an object.
 */
export async function loadHandlersModule(path: string): Promise<HandlerMap> {
  const exported = (await importHandlersModule(path)).default;
  const usage = "export default { name: async (ctx) => result, … }";
  if (exported === undefined) {
    throw new MendError(
      "invalid_argument",
      `handlers module ${path} has no default export; use ${usage}`,
      { path },
    );
  }
  if (typeof exported !== "object" || exported === null || Array.isArray(exported)) {
    throw new MendError(
      "invalid_argument",
      `the default export of handlers module ${path} must be an object mapping handler names to handlers (${usage})`,
      { path },
    );
  }
  const entries = Object.entries(exported);
  if (entries.length === 0) {
    throw new MendError("invalid_argument", `handlers module ${path} exports no handlers`, {
      path,
    });
  }
  const invalid = entries.filter(([, handler]) => !isHandler(handler)).map(([name]) => name);
  if (invalid.length > 0) {
    throw new MendError(
      "invalid_argument",
      `handlers module ${path}: ${invalid.map((n) => `"${n}"`).join(", ")} must be a function or a task object with a run function`,
      { path, invalid },
    );
  }
  return exported as HandlerMap;
}

/**
 * The resources' health checks a handlers module declares in its named export `resourceChecks`:
 * an object mapping resource names to functions that return (a promise of) true while the
 * resource works. The monitor runs them (`MonitorOptions.resourceChecks`). Null when the module
 * has no such export.
 *
 * @throws MendError `not_found` when the file does not exist; `invalid_argument` when it fails to
 *   load, or `resourceChecks` is not such an object (every bad entry named).
 */
export async function loadResourceChecks(
  path: string,
): Promise<Record<string, () => Promise<boolean> | boolean> | null> {
  const exported = (await importHandlersModule(path)).resourceChecks;
  if (exported === undefined) return null;
  const usage = 'export const resourceChecks = { "api-a": async () => (await ping()).ok, … }';
  if (typeof exported !== "object" || exported === null || Array.isArray(exported)) {
    throw new MendError(
      "invalid_argument",
      `the resourceChecks export of handlers module ${path} must be an object mapping resource names to functions that return true while the resource works (${usage}); got ${describeValue(exported)}`,
      { path },
    );
  }
  const problems: string[] = [];
  for (const [name, check] of Object.entries(exported)) {
    const problem = capabilityProblem(name);
    if (problem) problems.push(problem.replace(/capability/g, "resource"));
    if (typeof check !== "function") {
      problems.push(
        `"${name}" must be a function returning true or false (or a promise of it), got ${describeValue(check)}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new MendError(
      "invalid_argument",
      `resourceChecks of handlers module ${path}: ${problems.join("; ")}`,
      { path, problems },
    );
  }
  return exported as Record<string, () => Promise<boolean> | boolean>;
}

/**
 * Imports a handlers module (relative to the working directory). Node caches it, so the handlers
 * and the resource checks read one instance.
 */
async function importHandlersModule(path: string): Promise<Record<string, unknown>> {
  const absolute = resolve(process.cwd(), path);
  try {
    await stat(absolute);
  } catch (err) {
    if (errorCode(err) === "ENOENT") {
      throw new MendError("not_found", `handlers module not found: ${path}`, { path });
    }
    throw err;
  }
  try {
    return (await import(pathToFileURL(absolute).href)) as Record<string, unknown>;
  } catch (err) {
    throw new MendError(
      "invalid_argument",
      `cannot load handlers module ${path}: ${messageOf(err)}`,
      { path },
      { cause: err },
    );
  }
}

/** A value's kind, for error messages: `an array`, `null`, `a string`… */
function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? "an" : "a"} ${type}`;
}

function isHandler(value: unknown): boolean {
  return (
    typeof value === "function" ||
    (typeof value === "object" &&
      value !== null &&
      typeof (value as { run?: unknown }).run === "function")
  );
}

function errorCode(err: unknown): unknown {
  return (err as { code?: unknown } | null)?.code;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
