/**
 * Workstream definitions as people write them (YAML, JSON or a TypeScript object) and their
 * validation into a normalized {@link WorkstreamSpec}. Validation reports every problem it finds in
 * one error, each with the path to the offending value (DESIGN.md invariant 9).
 */
import { z } from "zod";
import { MendError } from "../errors.js";
import { DEFAULT_RETRY, RETRY_PRESETS } from "../recovery/retry.js";
import { findCycles, formatCycle } from "./dag.js";
import { parseDuration } from "./duration.js";
import { FAILURE_CATEGORIES, type Failure, type FailureCategory } from "./failure.js";
import { DEFAULT_BREAKER } from "../recovery/breaker.js";
import { capabilityProblem, normalizeCapabilities } from "./capabilities.js";
import type {
  BreakerConfig,
  CompensationPolicy,
  CompensationSpec,
  FallbackPlan,
  ResourceConfig,
  RetryPolicy,
  RetryRule,
  TaskSpec,
  WorkstreamSpec,
} from "./spec.js";

/** Largest JSON encoding of one task's input, in bytes, unless the caller sets another. */
export const DEFAULT_MAX_INPUT_BYTES = 262_144;
/** A task's timeout when neither it nor the workstream's `defaults` sets one: 10 minutes. */
export const DEFAULT_TIMEOUT_MS = 600_000;
/** Most tasks one workstream may hold. */
export const MAX_TASKS = 100_000;
/** Longest task id. */
export const MAX_TASK_ID_LENGTH = 128;
/** What a task id may look like. */
export const TASK_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const NAME_PATTERN = /^[\p{L}\p{N}._ -]+$/u;
const MAX_NAME_LENGTH = 200;
/** The error message lists this many problems; `context.problems` always has them all. */
const MAX_LISTED_PROBLEMS = 50;
/** Longer lists of valid names are summarized rather than printed in full. */
const MAX_LISTED_NAMES = 20;

/** One thing wrong with a definition. `path` is like `tasks[2].deps[0]`; empty for the root. */
export interface DefinitionProblem {
  path: string;
  message: string;
}

/** Options for {@link validateDefinition}. */
export interface ValidateOptions {
  /** Registered handler names; when given, every task's handler must be one of them. */
  handlers?: ReadonlySet<string> | readonly string[];
  /** Largest JSON encoding of one task's input, in bytes. Default {@link DEFAULT_MAX_INPUT_BYTES}. */
  maxInputBytes?: number;
}

// ---------------------------------------------------------------------------------------------
// Schemas

function durationSchema(minMs: 0 | 1) {
  return z
    .custom<string | number>((value) => typeof value === "string" || typeof value === "number", {
      error: (iss) =>
        `expected a duration such as "30s" or "10m", or a number of milliseconds, got ${describe(iss.input)}`,
    })
    .transform((value, ctx) => {
      let ms: number;
      try {
        ms = parseDuration(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: messageOf(err), input: value });
        return z.NEVER;
      }
      if (ms < minMs) {
        ctx.addIssue({ code: "custom", message: "must be greater than 0", input: value });
        return z.NEVER;
      }
      return ms;
    });
}

const presetNames = Object.keys(RETRY_PRESETS);

const presetNameSchema = z.string().refine((name) => Object.hasOwn(RETRY_PRESETS, name), {
  error: (iss) => unknownName("retry preset", String(iss.input), presetNames, "presets"),
});

const backoffSchema = z.enum(["constant", "linear", "exponential", "fibonacci", "custom"]);

const CUSTOM_BACKOFF_IN_FILE =
  'backoff "custom" needs a delay function, which only the TypeScript API can give: ' +
  'defineTask({ run, retry: { backoff: "custom", customDelay } })';

/**
 * Retry schemas. Files may not ask for `backoff: custom`; the TypeScript API may, together with a
 * `customDelay` function (which stays with the handler and is not part of the stored policy).
 */
function retrySchemas(api: boolean) {
  const rule = {
    maxAttempts: z.number().int().min(1).max(1000).optional(),
    backoff: (api
      ? backoffSchema
      : backoffSchema.refine((kind) => kind !== "custom", { error: CUSTOM_BACKOFF_IN_FILE })
    ).optional(),
    initial: durationSchema(0).optional(),
    factor: z.number().gt(0).optional(),
    max: durationSchema(0).optional(),
    jitter: z.enum(["none", "full", "equal", "decorrelated"]).optional(),
    schedule: z.array(durationSchema(0)).min(1).max(1000).optional(),
  };
  const categoryRule = z.strictObject(rule);
  const object = z.strictObject({
    preset: presetNameSchema.optional(),
    ...rule,
    on: z.partialRecord(z.enum(FAILURE_CATEGORIES), categoryRule).optional(),
  });
  const either = z.union([presetNameSchema, object], {
    error: (iss) =>
      iss.code === "invalid_union"
        ? `expected a retry preset name (${presetNames.join(", ")}) or a retry object, got ${describe(iss.input)}`
        : undefined,
  });
  return { categoryRule, object, either };
}

const fileRetry = retrySchemas(false);

const apiRetryObject = retrySchemas(true)
  .object.extend({
    customDelay: z
      .custom<(retryNumber: number, failure: Failure) => number>(
        (value) => typeof value === "function",
        { error: (iss) => `expected a function, got ${describe(iss.input)}` },
      )
      .optional(),
  })
  .refine((spec) => spec.backoff !== "custom" || spec.customDelay !== undefined, {
    error: 'backoff "custom" needs a customDelay function',
    path: ["customDelay"],
  });

const taskIdSchema = z
  .string()
  .max(MAX_TASK_ID_LENGTH, {
    error: (iss) =>
      `task id is ${String(iss.input).length} characters long; the limit is ${MAX_TASK_ID_LENGTH}`,
  })
  .regex(TASK_ID_PATTERN, {
    error: (iss) =>
      `task id ${describe(iss.input)} must start with a letter or digit and contain only letters, digits, ".", "_" and "-"`,
  });

/** Breaker names, like task ids: they appear in commands and metric labels. */
const breakerNameSchema = z.string().regex(TASK_ID_PATTERN, {
  error: (iss) =>
    `breaker name ${describe(iss.input)} must start with a letter or digit and contain only letters, digits, ".", "_" and "-"`,
});

const breakerSchema = z
  .strictObject({
    mode: z.enum(["consecutive", "rate"]).optional(),
    failureThreshold: z.number().int().min(1).max(10_000).optional(),
    failureRate: z.number().gt(0).max(1).optional(),
    window: durationSchema(1).optional(),
    minimumCalls: z.number().int().min(1).optional(),
    open: durationSchema(1).optional(),
    halfOpenMaxCalls: z.number().int().min(1).max(1000).optional(),
    successThreshold: z.number().int().min(1).max(1000).optional(),
  })
  .refine(
    (b) =>
      (b.successThreshold ?? DEFAULT_BREAKER.successThreshold) <=
      (b.halfOpenMaxCalls ?? DEFAULT_BREAKER.halfOpenMaxCalls),
    {
      error:
        "successThreshold must not exceed halfOpenMaxCalls: the breaker could never close again",
    },
  );

const qualitySchema = z.number().min(0).max(1);

/** Capabilities a worker must have to claim the task, e.g. `[gpu, repo-write]`. */
const requiresSchema = z.array(
  z.string().superRefine((name, ctx) => {
    const problem = capabilityProblem(name);
    if (problem) ctx.addIssue({ code: "custom", message: problem, input: name });
  }),
  {
    error: (iss) =>
      iss.code === "invalid_type" && typeof iss.input === "string"
        ? `expected a list of capabilities, got ${describe(iss.input)} (write requires: [${iss.input}])`
        : undefined,
  },
);

/** A resource's name: as a capability's (letters, digits, `.`, `_`, `-`). */
const resourceNameSchema = z.string().superRefine((name, ctx) => {
  const problem = capabilityProblem(name);
  if (problem) {
    ctx.addIssue({
      code: "custom",
      message: problem.replace(/capability/g, "resource"),
      input: name,
    });
  }
});

/**
 * What a task must hold to run: each entry is a resource, or `{ oneOf: [a, b] }` to take the
 * first of them that is available with a free slot (the others are alternatives).
 */
const resourceNeedsSchema = z.array(
  z.union([resourceNameSchema, z.strictObject({ oneOf: z.array(resourceNameSchema).min(1) })]),
);

/** A resource's settings in a definition's `resources`. */
const resourceSchema = z.strictObject({
  maxHolders: z.number().int().min(1).max(1_000_000),
});

const fallbackOptionSchema = z.strictObject({
  handler: z.string().min(1),
  on: z.array(z.enum(FAILURE_CATEGORIES)).optional(),
  qualityBelow: qualitySchema.optional(),
  after: durationSchema(0).optional(),
  quality: qualitySchema.optional(),
  breaker: breakerNameSchema.optional(),
});

const fallbacksSchema = z.union([
  z.array(fallbackOptionSchema).min(1),
  z.strictObject({
    selector: z.enum(["sequential", "best_quality", "random", "least_loaded"]).optional(),
    options: z.array(fallbackOptionSchema).min(1),
  }),
]);

const compensateSchema = z.union([
  z.string().min(1),
  z.strictObject({
    handler: z.string().min(1),
    idempotent: z.boolean().optional(),
    timeout: durationSchema(1).optional(),
  }),
]);

const taskSchema = z.strictObject({
  id: taskIdSchema,
  handler: z.string().min(1),
  input: z.unknown().optional(),
  deps: z
    .array(z.string(), {
      error: (iss) =>
        iss.code === "invalid_type" && typeof iss.input === "string"
          ? `expected a list of task ids, got ${describe(iss.input)} (write deps: [${iss.input}])`
          : undefined,
    })
    .optional(),
  priority: z.number().int().optional(),
  critical: z.boolean().optional(),
  retry: fileRetry.either.optional(),
  timeout: durationSchema(1).optional(),
  deadline: durationSchema(1).optional(),
  breaker: breakerNameSchema.optional(),
  fallbacks: fallbacksSchema.optional(),
  compensate: compensateSchema.optional(),
  qualityThreshold: qualitySchema.optional(),
  requires: requiresSchema.optional(),
  stallAfter: durationSchema(1).optional(),
  resources: resourceNeedsSchema.optional(),
});

const defaultsSchema = z.strictObject({
  retry: fileRetry.either.optional(),
  timeout: durationSchema(1).optional(),
  priority: z.number().int().optional(),
  critical: z.boolean().optional(),
  deadline: durationSchema(1).optional(),
  breaker: breakerNameSchema.optional(),
  qualityThreshold: qualitySchema.optional(),
  requires: requiresSchema.optional(),
  stallAfter: durationSchema(1).optional(),
  resources: resourceNeedsSchema.optional(),
});

/** The schema of a workstream definition file (structure only; see {@link validateDefinition}). */
export const workstreamDefinitionSchema = z.strictObject({
  name: z.string().min(1, { abort: true }).max(MAX_NAME_LENGTH).regex(NAME_PATTERN, {
    error: "may contain only letters, digits, spaces and the characters . _ -",
  }),
  onFailure: z.enum(["continue", "stop"]).optional(),
  revive: z.boolean().optional(),
  compensation: z
    .strictObject({
      on: z.array(z.enum(["failed", "cancelled"])).optional(),
      order: z.enum(["reverse", "parallel", "dependency"]).optional(),
    })
    .optional(),
  breakers: z.record(breakerNameSchema, breakerSchema).optional(),
  resources: z.record(resourceNameSchema, resourceSchema).optional(),
  defaults: defaultsSchema.optional(),
  tasks: z
    .array(taskSchema)
    .min(1, { error: "a workstream needs at least one task" })
    .max(MAX_TASKS, {
      error: (iss) =>
        `${(iss.input as unknown[]).length} tasks is over the limit of ${MAX_TASKS}; split the work into several workstreams`,
    }),
});

/** The recovery settings a handler may declare with `defineTask`, as written. */
const handlerRecoverySchema = z.object({
  breaker: breakerNameSchema.optional(),
  deadline: durationSchema(1).optional(),
  fallbacks: fallbacksSchema.optional(),
  qualityThreshold: qualitySchema.optional(),
  requires: requiresSchema.optional(),
  stallAfter: durationSchema(1).optional(),
  resources: resourceNeedsSchema.optional(),
});

/** A handler's recovery settings, validated and normalized (absent ones are left out). */
export interface HandlerRecovery {
  breaker?: string;
  deadlineMs?: number;
  fallbacks?: Omit<FallbackPlan, "tried">;
  qualityThreshold?: number;
  /** Sorted, without repeats; null for an empty list (no requirement). */
  requires?: string[] | null;
  stallAfterMs?: number;
  /** Normalized as a task's (see {@link normalizeResourceNeeds}); null for an empty list. */
  resources?: string[][] | null;
}

/**
 * Validates the recovery settings of a handler declared with `defineTask` (`breaker`,
 * `deadline`, `fallbacks`, `qualityThreshold`, `requires`, `stallAfter`), in the definition
 * file's formats.
 *
 * @throws MendError `invalid_argument` naming the handler and every problem.
 */
export function normalizeHandlerRecovery(name: string, def: object): HandlerRecovery {
  const parsed = handlerRecoverySchema.safeParse(def, { error: errorMessage });
  if (!parsed.success) {
    const problems = problemsFromIssues(parsed.error.issues, []);
    throw new MendError(
      "invalid_argument",
      `invalid recovery settings of handler "${name}":\n${listProblems(problems)}`,
      { handler: name, problems },
    );
  }
  const d = parsed.data;
  const out: HandlerRecovery = {};
  if (d.breaker !== undefined) out.breaker = d.breaker;
  if (d.deadline !== undefined) out.deadlineMs = d.deadline;
  if (d.fallbacks !== undefined) {
    const { tried: _, ...plan } = normalizeFallbacks(d.fallbacks);
    out.fallbacks = plan;
  }
  if (d.qualityThreshold !== undefined) out.qualityThreshold = d.qualityThreshold;
  if (d.requires !== undefined) out.requires = normalizeCapabilities(d.requires);
  if (d.stallAfter !== undefined) out.stallAfterMs = d.stallAfter;
  if (d.resources !== undefined) out.resources = normalizeResourceNeeds(d.resources);
  return out;
}

/**
 * Resource needs in their stored form: each need a list of resources in order of preference
 * (repeats dropped), needs that repeat another dropped; null for none.
 */
export function normalizeResourceNeeds(
  needs: readonly (string | { oneOf: readonly string[] })[],
): string[][] | null {
  const out: string[][] = [];
  const seen = new Set<string>();
  for (const need of needs) {
    const options = [...new Set(typeof need === "string" ? [need] : need.oneOf)];
    const key = JSON.stringify(options);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(options);
  }
  return out.length === 0 ? null : out;
}

/** Fallbacks as written: a list of options (tried in order), or `{ selector, options }`. */
export type FallbackDefinition = z.input<typeof fallbacksSchema>;
/** A circuit breaker's settings as written in a definition (durations as text or ms). */
export type BreakerDefinition = z.input<typeof breakerSchema>;
/** A workstream definition as written by people, before validation and defaults. */
export type WorkstreamDefinition = z.input<typeof workstreamDefinitionSchema>;
/** The object form of a retry policy as written in a definition (durations as text or ms). */
export type RetryDefinition = z.input<typeof fileRetry.object>;

type ParsedDefinition = z.output<typeof workstreamDefinitionSchema>;
/**
 * The object form of a retry policy given through the TypeScript API: may also use
 * `backoff: "custom"` with a `customDelay(retryNumber, failure)` returning milliseconds.
 */
export type TaskRetryDefinition = z.input<typeof apiRetryObject>;

type ParsedRetry = z.output<typeof fileRetry.either>;
type ParsedRule = z.output<typeof fileRetry.categoryRule>;

/** Identity, so a TypeScript definition is checked against {@link WorkstreamDefinition}. */
export function defineWorkstream(def: WorkstreamDefinition): WorkstreamDefinition {
  return def;
}

// ---------------------------------------------------------------------------------------------
// Validation

/**
 * Validates a workstream definition and returns it normalized: durations in milliseconds,
 * `defaults` applied, retry policies resolved over {@link DEFAULT_RETRY} or their preset, `input`
 * as plain JSON data (`null` when absent).
 *
 * @throws MendError `invalid_definition` listing every problem found; `context.problems` holds
 *   them as {@link DefinitionProblem}s.
 */
export function validateDefinition(raw: unknown, options: ValidateOptions = {}): WorkstreamSpec {
  const parsed = workstreamDefinitionSchema.safeParse(raw, { error: errorMessage });
  const problems = parsed.success ? [] : problemsFromIssues(parsed.error.issues, []);
  const inputs = crossCheck(raw, options, problems);
  if (!parsed.success || problems.length > 0) throw definitionError(raw, problems);
  return normalize(parsed.data, inputs);
}

/**
 * Resolves a retry policy given through the TypeScript API (e.g. `defineTask({ retry })`) over
 * `base`. Unlike a file, it may use `backoff: "custom"` with a `customDelay` function; the function
 * is not part of the returned (stored) policy.
 *
 * @throws MendError `invalid_argument` listing every problem.
 */
export function normalizeRetry(
  spec: string | TaskRetryDefinition,
  base: RetryPolicy = DEFAULT_RETRY,
): RetryPolicy {
  const parsed = z
    .union([presetNameSchema, apiRetryObject], {
      error: (iss) =>
        `expected a retry preset name or a retry object, got ${describe(iss.input as unknown)}`,
    })
    .safeParse(spec, { error: errorMessage });
  if (!parsed.success) {
    const problems = problemsFromIssues(parsed.error.issues, []);
    throw new MendError("invalid_argument", `invalid retry policy:\n${listProblems(problems)}`, {
      problems,
    });
  }
  if (typeof parsed.data === "string") return resolveRetry(parsed.data, base);
  const { customDelay: _, ...rule } = parsed.data;
  return resolveRetry(rule, base);
}

function definitionError(raw: unknown, problems: DefinitionProblem[]): MendError {
  const name = isRecord(raw) && typeof raw.name === "string" && raw.name.trim() !== "";
  const title = name
    ? `invalid workstream definition ${describe(raw.name)}`
    : "invalid workstream definition";
  return new MendError("invalid_definition", `${title}:\n${listProblems(problems)}`, { problems });
}

function listProblems(problems: readonly DefinitionProblem[]): string {
  const lines = problems
    .slice(0, MAX_LISTED_PROBLEMS)
    .map((p) => `  - ${p.path === "" ? "" : `${p.path}: `}${p.message}`);
  if (problems.length > MAX_LISTED_PROBLEMS) {
    lines.push(`  - … and ${problems.length - MAX_LISTED_PROBLEMS} more`);
  }
  return lines.join("\n");
}

/**
 * The checks a schema cannot express: ids and dependencies across tasks, cycles, handlers, and
 * inputs. Works on the raw value so that they are reported alongside structural problems; a value
 * of the wrong type is skipped here because the schema already reported it. Returns each task's
 * input as JSON text, by task index.
 */
function crossCheck(
  raw: unknown,
  options: ValidateOptions,
  problems: DefinitionProblem[],
): (string | undefined)[] {
  if (!isRecord(raw) || !Array.isArray(raw.tasks)) return [];
  const tasks: unknown[] = raw.tasks;
  const found: DefinitionProblem[] = [];

  const ids = tasks.map((task) =>
    isRecord(task) &&
    typeof task.id === "string" &&
    task.id.length <= MAX_TASK_ID_LENGTH &&
    TASK_ID_PATTERN.test(task.id)
      ? task.id
      : undefined,
  );
  const indexOf = new Map<string, number>();
  ids.forEach((id, i) => {
    if (id === undefined) return;
    const first = indexOf.get(id);
    if (first === undefined) indexOf.set(id, i);
    else
      found.push({
        path: `tasks[${i}].id`,
        message: `duplicate task id "${id}" (also tasks[${first}].id)`,
      });
  });
  const allIds = [...indexOf.keys()];

  const depsOf = new Map<string, string[]>();
  tasks.forEach((task, i) => {
    if (!isRecord(task) || !Array.isArray(task.deps)) return;
    const id = ids[i];
    const deps: string[] = [];
    task.deps.forEach((dep: unknown, j) => {
      if (typeof dep !== "string") return;
      const path = `tasks[${i}].deps[${j}]`;
      if (dep === id) found.push({ path, message: `task "${dep}" depends on itself` });
      else if (!indexOf.has(dep)) {
        found.push({ path, message: unknownName("dependency", dep, allIds, "tasks") });
      } else if (deps.includes(dep)) found.push({ path, message: `"${dep}" is listed twice` });
      else deps.push(dep);
    });
    if (id !== undefined && indexOf.get(id) === i) depsOf.set(id, deps);
  });
  for (const cycle of findCycles(allIds, (id) => depsOf.get(id) ?? [])) {
    const from = indexOf.get(cycle[0]!)!;
    const depIndex = (tasks[from] as { deps: unknown[] }).deps.indexOf(cycle[1]);
    found.push({
      path: `tasks[${from}].deps[${depIndex}]`,
      message: `cycle: ${formatCycle(cycle)} (each task depends on the next)`,
    });
  }

  if (options.handlers !== undefined) {
    const handlers = new Set(options.handlers);
    const available = [...handlers].sort();
    const check = (name: unknown, path: string) => {
      if (typeof name !== "string" || name === "" || handlers.has(name)) return;
      found.push({ path, message: unknownName("handler", name, available, "handlers") });
    };
    tasks.forEach((task, i) => {
      if (!isRecord(task)) return;
      check(task.handler, `tasks[${i}].handler`);
      const fallbacks = isRecord(task.fallbacks) ? task.fallbacks.options : task.fallbacks;
      if (Array.isArray(fallbacks)) {
        const path = `tasks[${i}].fallbacks${Array.isArray(task.fallbacks) ? "" : ".options"}`;
        fallbacks.forEach((f: unknown, j) => {
          if (isRecord(f)) check(f.handler, `${path}[${j}].handler`);
        });
      }
      if (typeof task.compensate === "string") check(task.compensate, `tasks[${i}].compensate`);
      else if (isRecord(task.compensate)) {
        check(task.compensate.handler, `tasks[${i}].compensate.handler`);
      }
    });
  }

  const limit = options.maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
  const inputs = tasks.map((task, i) => {
    if (!isRecord(task) || task.input === undefined) return undefined;
    const path = `tasks[${i}].input`;
    const problem = nonJson(task.input, path);
    if (problem) {
      found.push(problem);
      return undefined;
    }
    const json = JSON.stringify(task.input);
    const size = Buffer.byteLength(json, "utf8");
    if (size > limit) {
      found.push({
        path,
        message: `input is ${formatBytes(size)}, over the limit of ${formatBytes(limit)}; pass large data by reference (a file path or URL) instead`,
      });
    }
    return json;
  });

  problems.push(...found);
  sortByTask(problems);
  return inputs;
}

/** Stable: root problems first, then each task's problems together, in task order. */
function sortByTask(problems: DefinitionProblem[]): void {
  const taskIndex = (p: DefinitionProblem) => Number(/^tasks\[(\d+)\]/.exec(p.path)?.[1] ?? -1);
  problems.sort((a, b) => taskIndex(a) - taskIndex(b));
}

/** The first value under `value` that JSON cannot carry faithfully, as a problem. */
function nonJson(value: unknown, path: string): DefinitionProblem | undefined {
  const ancestors = new Set<object>();
  const visit = (v: unknown, at: string): DefinitionProblem | undefined => {
    if (v === null || typeof v === "string" || typeof v === "boolean") return undefined;
    if (typeof v === "number") {
      return Number.isFinite(v) ? undefined : { path: at, message: `${v} is not a JSON number` };
    }
    if (typeof v !== "object") {
      return { path: at, message: `${describe(v)} is not JSON-serializable` };
    }
    if (ancestors.has(v)) {
      return { path: at, message: "circular reference; input must be plain JSON data" };
    }
    if (!Array.isArray(v)) {
      const proto = Object.getPrototypeOf(v);
      if (v instanceof Date) {
        return { path: at, message: "a Date is not JSON-serializable; use an ISO string" };
      }
      if (proto !== Object.prototype && proto !== null) {
        const kind = (v as object).constructor?.name ?? "class instance";
        return {
          path: at,
          message: `a ${kind} is not JSON-serializable; use plain objects and arrays`,
        };
      }
    }
    ancestors.add(v);
    try {
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          if (v[i] === undefined) {
            return { path: `${at}[${i}]`, message: "undefined is not JSON-serializable; use null" };
          }
          const problem = visit(v[i], `${at}[${i}]`);
          if (problem) return problem;
        }
      } else {
        for (const [key, child] of Object.entries(v)) {
          // An undefined property is simply absent in JSON, as TypeScript callers expect.
          if (child === undefined) continue;
          const problem = visit(child, `${at}${formatKey(key)}`);
          if (problem) return problem;
        }
      }
    } finally {
      ancestors.delete(v);
    }
    return undefined;
  };
  try {
    return visit(value, path);
  } catch (err) {
    if (err instanceof RangeError) return { path, message: "input is nested too deeply" };
    throw err;
  }
}

function normalize(def: ParsedDefinition, inputs: readonly (string | undefined)[]): WorkstreamSpec {
  const defaults = def.defaults ?? {};
  const baseRetry = resolveRetry(defaults.retry, DEFAULT_RETRY);
  const tasks = def.tasks.map((task, i): TaskSpec => {
    const json = inputs[i];
    return {
      key: task.id,
      handler: task.handler,
      input: json === undefined ? null : JSON.parse(json),
      deps: task.deps ?? [],
      priority: task.priority ?? defaults.priority ?? 0,
      retry: resolveRetry(task.retry, baseRetry),
      timeoutMs: task.timeout ?? defaults.timeout ?? DEFAULT_TIMEOUT_MS,
      deadlineMs: task.deadline ?? defaults.deadline ?? null,
      critical: task.critical ?? defaults.critical ?? true,
      breaker: task.breaker ?? defaults.breaker ?? null,
      fallbacks: task.fallbacks === undefined ? null : normalizeFallbacks(task.fallbacks),
      compensation: task.compensate === undefined ? null : normalizeCompensation(task.compensate),
      qualityThreshold: task.qualityThreshold ?? defaults.qualityThreshold ?? null,
      requires: normalizeCapabilities(task.requires ?? defaults.requires ?? []),
      stallAfterMs: task.stallAfter ?? defaults.stallAfter ?? null,
      resources: normalizeResourceNeeds(task.resources ?? defaults.resources ?? []),
    };
  });
  const breakers: Record<string, BreakerConfig | null> = {};
  for (const task of tasks) {
    if (task.breaker !== null) breakers[task.breaker] = null;
    for (const option of task.fallbacks?.options ?? []) {
      if (option.breaker !== undefined) breakers[option.breaker] = null;
    }
  }
  for (const [name, written] of Object.entries(def.breakers ?? {})) {
    breakers[name] = breakerConfig(written);
  }
  return {
    name: def.name,
    onFailure: def.onFailure ?? "continue",
    revive: def.revive ?? true,
    compensation: { ...DEFAULT_COMPENSATION, ...def.compensation },
    breakers,
    resources: resourcesOf(tasks, def.resources ?? {}),
    tasks,
  };
}

/** Every resource the tasks need, with the settings the definition gives (null: none given). */
export function resourcesOf(
  tasks: readonly Pick<TaskSpec, "resources">[],
  written: Record<string, ResourceConfig>,
): Record<string, ResourceConfig | null> {
  const resources: Record<string, ResourceConfig | null> = {};
  for (const task of tasks) {
    for (const need of task.resources ?? []) for (const name of need) resources[name] = null;
  }
  for (const [name, config] of Object.entries(written)) resources[name] = { ...config };
  return resources;
}

/** When a workstream compensates unless it says otherwise: when a person cancels it. */
export const DEFAULT_COMPENSATION: CompensationPolicy = Object.freeze({
  on: ["cancelled"],
  order: "reverse",
}) as CompensationPolicy;

/** A breaker's settings as written (or absent) over {@link DEFAULT_BREAKER}. */
export function breakerConfig(written: BreakerDefinition | undefined): BreakerConfig {
  const b = written === undefined ? {} : breakerSchema.parse(written);
  return {
    mode: b.mode ?? DEFAULT_BREAKER.mode,
    failureThreshold: b.failureThreshold ?? DEFAULT_BREAKER.failureThreshold,
    failureRate: b.failureRate ?? DEFAULT_BREAKER.failureRate,
    windowMs: b.window ?? DEFAULT_BREAKER.windowMs,
    minimumCalls: b.minimumCalls ?? DEFAULT_BREAKER.minimumCalls,
    openMs: b.open ?? DEFAULT_BREAKER.openMs,
    halfOpenMaxCalls: b.halfOpenMaxCalls ?? DEFAULT_BREAKER.halfOpenMaxCalls,
    successThreshold: b.successThreshold ?? DEFAULT_BREAKER.successThreshold,
  };
}

function normalizeFallbacks(spec: z.output<typeof fallbacksSchema>): FallbackPlan {
  const { selector, options } = Array.isArray(spec)
    ? { selector: "sequential" as const, options: spec }
    : { selector: spec.selector ?? "sequential", options: spec.options };
  return {
    selector,
    options: options.map((o) => ({
      handler: o.handler,
      on: o.on ?? [],
      ...(o.qualityBelow === undefined ? {} : { qualityBelow: o.qualityBelow }),
      ...(o.after === undefined ? {} : { afterMs: o.after }),
      ...(o.breaker === undefined ? {} : { breaker: o.breaker }),
      quality: o.quality ?? 1,
    })),
    tried: [],
  };
}

function normalizeCompensation(spec: z.output<typeof compensateSchema>): CompensationSpec {
  const c = typeof spec === "string" ? { handler: spec } : spec;
  return {
    handler: c.handler,
    idempotent: c.idempotent ?? false,
    timeoutMs: c.timeout ?? DEFAULT_TIMEOUT_MS,
  };
}

/** A parsed retry spec over `base`: a preset name replaces it, an object overrides its fields. */
function resolveRetry(spec: ParsedRetry | undefined, base: RetryPolicy): RetryPolicy {
  if (spec === undefined) return structuredClone(base);
  if (typeof spec === "string") return structuredClone(RETRY_PRESETS[spec]!);
  const { preset, on, ...rule } = spec;
  const policy = structuredClone(preset === undefined ? base : RETRY_PRESETS[preset]!);
  overlay(policy, rule);
  if (on !== undefined) {
    const categories = { ...policy.categories };
    for (const [category, categoryRule] of Object.entries(on) as [FailureCategory, ParsedRule][]) {
      const merged = { ...categories[category] };
      overlay(merged, categoryRule);
      categories[category] = merged;
    }
    policy.categories = categories;
  }
  return policy;
}

function overlay(target: Partial<RetryRule>, rule: ParsedRule): void {
  if (rule.maxAttempts !== undefined) target.maxAttempts = rule.maxAttempts;
  if (rule.backoff !== undefined) target.backoff = rule.backoff;
  if (rule.initial !== undefined) target.initialMs = rule.initial;
  if (rule.factor !== undefined) target.factor = rule.factor;
  if (rule.max !== undefined) target.maxDelayMs = rule.max;
  if (rule.jitter !== undefined) target.jitter = rule.jitter;
  if (rule.schedule !== undefined) target.scheduleMs = rule.schedule;
  // A schedule overrides the backoff, so an inherited one would silently void the backoff asked for.
  else if (rule.backoff !== undefined) delete target.scheduleMs;
}

// ---------------------------------------------------------------------------------------------
// Messages

const EXPECTED: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
  object: "an object",
  array: "a list",
  record: "an object",
};

/** Zod's messages, reworded to say what was expected and what was found. */
function errorMessage(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case "invalid_type":
      if (iss.input === undefined) return "required";
      return `expected ${EXPECTED[iss.expected] ?? iss.expected}, got ${describe(iss.input)}`;
    case "too_small":
    case "too_big": {
      const bound = iss.code === "too_small" ? iss.minimum : iss.maximum;
      const [least, most] = iss.inclusive ? ["at least", "at most"] : ["more than", "less than"];
      const relation = iss.code === "too_small" ? least : most;
      if (iss.origin === "string") {
        return iss.code === "too_small" && bound === 1
          ? "must not be empty"
          : `must be ${relation} ${String(bound)} characters long`;
      }
      if (iss.origin === "array") return `must have ${relation} ${String(bound)} items`;
      return `must be ${relation} ${String(bound)}, got ${describe(iss.input)}`;
    }
    case "invalid_value": {
      const values = iss.values.map((v) => JSON.stringify(v));
      const guess =
        typeof iss.input === "string" ? closest(iss.input, iss.values.map(String)) : undefined;
      const hint = guess === undefined ? "" : ` (did you mean "${guess}"?)`;
      return `expected one of ${values.join(", ")}, got ${describe(iss.input)}${hint}`;
    }
    case "unrecognized_keys":
      return unknownKeys(iss.keys, iss.inst);
    case "invalid_union":
      return `got ${describe(iss.input)}, which matches none of the allowed forms`;
    default:
      return undefined;
  }
}

function unknownKeys(keys: readonly string[], inst: unknown): string {
  const def = (inst as { _zod?: { def?: { type?: string } } } | undefined)?._zod?.def;
  const isRecordSchema = def?.type === "record";
  const allowed = isRecordSchema
    ? ((inst as { keyType?: { options?: string[] } }).keyType?.options ?? [])
    : Object.keys((inst as { shape?: object } | undefined)?.shape ?? {});
  const kind = isRecordSchema ? "failure category" : "key";
  if (keys.length === 1) {
    const key = keys[0]!;
    const guess = closest(key, allowed);
    const hint =
      guess === undefined ? `allowed: ${allowed.join(", ")}` : `did you mean "${guess}"?`;
    return `unknown ${kind} "${key}" (${hint})`;
  }
  return `unknown ${kind}s ${keys.map((k) => `"${k}"`).join(", ")} (allowed: ${allowed.join(", ")})`;
}

/**
 * Zod issues as problems. A union's issue is replaced by the issues of the one branch whose
 * shape the value has (e.g. a retry *object* with a bad field), which say far more.
 */
function problemsFromIssues(
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[],
): DefinitionProblem[] {
  return issues.flatMap((iss): DefinitionProblem[] => {
    const path = [...prefix, ...iss.path];
    if (iss.code === "invalid_union") {
      const matching = iss.errors.filter(
        (branch) => !branch.every((b) => b.code === "invalid_type" && b.path.length === 0),
      );
      if (matching.length === 1) return problemsFromIssues(matching[0]!, path);
    }
    return [{ path: formatPath(path), message: iss.message }];
  });
}

function unknownName(kind: string, name: string, valid: readonly string[], plural: string): string {
  if (valid.length === 0) return `unknown ${kind} "${name}" (there are no ${plural})`;
  if (valid.length <= MAX_LISTED_NAMES) {
    return `unknown ${kind} "${name}" (${plural} are: ${valid.join(", ")})`;
  }
  const guess = closest(name, valid);
  const hint = guess === undefined ? "" : `did you mean "${guess}"? `;
  return `unknown ${kind} "${name}" (${hint}there are ${valid.length} ${plural})`;
}

/** The candidate nearest to `word` by edit distance, if one is near enough to be a typo. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  const limit = Math.max(1, Math.floor(word.length / 3));
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of candidates) {
    if (Math.abs(candidate.length - word.length) >= bestDistance) continue;
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** A zod issue's path as error messages write it: `tasks[0].retry.maxAttempts`. */
export function formatPath(path: readonly PropertyKey[]): string {
  const text = path
    .map((segment) => (typeof segment === "number" ? `[${segment}]` : formatKey(String(segment))))
    .join("");
  return text.startsWith(".") ? text.slice(1) : text;
}

function formatKey(key: string): string {
  return /^[A-Za-z_$][\w$-]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/** A value as it would appear in an error message. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return "a list";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
    case "number":
    case "boolean":
      return String(value);
    case "object":
      return "an object";
    default:
      return `a ${typeof value}`;
  }
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  return `${Number((bytes / 1024).toFixed(1))} KiB (${bytes} bytes)`;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
