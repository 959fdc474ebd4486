/**
 * A task's recovery policy as one stack of layers, outermost first: overall deadline → circuit
 * breaker → retry → concurrency limit → per-attempt timeout. The order is fixed: each layer
 * bounds the ones inside it (no retry starts after the deadline, no attempt while the breaker is
 * open, each attempt takes a worker slot and is cut off by its timeout).
 *
 * Pure: records and handler definitions come in, nothing is read or written. `mend describe`
 * prints what these functions return.
 *
 * @module
 */
import { isDeepStrictEqual } from "node:util";
import {
  DEFAULT_TIMEOUT_MS,
  normalizeHandlerRecovery,
  normalizeRetry,
} from "../model/definition.js";
import { formatDuration, parseDuration } from "../model/duration.js";
import { FAILURE_CATEGORIES, type FailureCategory } from "../model/failure.js";
import type { TaskDefinition } from "../model/handler.js";
import type {
  BreakerRecord,
  ResourceRecord,
  TaskRecord,
  WorkerRecord,
  WorkstreamRecord,
} from "../model/records.js";
import type { BreakerConfig, FallbackPlan, RetryPolicy, RetryRule } from "../model/spec.js";
import type { BreakerStatus, ResourceStatus } from "../model/states.js";
import { backoffDelay } from "./backoff.js";
import { DEFAULT_BREAKER } from "./breaker.js";
import { DEFAULT_RETRY, ruleFor } from "./retry.js";

/** The layers, outermost first. */
export const POLICY_ORDER = ["deadline", "breaker", "retry", "concurrency", "timeout"] as const;
/** One layer's name. */
export type PolicyLayerName = (typeof POLICY_ORDER)[number];

/**
 * Where a value comes from: the stored task (as submitted), the stored breaker, the live workers,
 * the handler's own definition, or Mend's default because nothing set it.
 */
export type PolicySource = "task" | "store" | "workers" | "handler" | "default";

/** Overall deadline from submission, across every attempt; null for none. */
export interface DeadlineLayer {
  layer: "deadline";
  deadlineMs: number | null;
  source: PolicySource;
}

/** The circuit breaker guarding the task's calls; `name` null for none. */
export interface BreakerLayer {
  layer: "breaker";
  name: string | null;
  /** Its settings: as stored, or the defaults a breaker gets when nothing configured it. */
  config: BreakerConfig | null;
  source: PolicySource;
  /** Its state now, when read from the store. */
  status: BreakerStatus | null;
  /** Forced open by a person: it stays open until a person closes it. */
  forced: boolean;
}

/** Retries, and what follows once they are used up (fallback handlers, then revival). */
export interface RetryLayer {
  layer: "retry";
  policy: RetryPolicy;
  /** The categories whose effective rule (per `ruleFor`) differs from the base rule. */
  categories: Partial<Record<FailureCategory, RetryRule>>;
  source: PolicySource;
  /** Alternative handlers tried when retries are exhausted; null for none. */
  fallbacks: Omit<FallbackPlan, "tried"> | null;
  /**
   * Whether the monitor queues the failed task again once its cause clears (a workstream
   * setting); null when there is no workstream to ask (a handler on its own).
   */
  revive: boolean | null;
}

/** A resource a task may take for one of its needs, with its limit and state when known. */
export interface ResourceChoice {
  id: string;
  /** Its limit as stored; null when not read from a store, or no such resource yet. */
  maxHolders: number | null;
  status: ResourceStatus | null;
}

/**
 * Attempts run at once: a per-worker limit, so it depends on who serves the handler; and the
 * resources the task holds while it runs, whose limits every worker shares.
 */
export interface ConcurrencyLayer {
  layer: "concurrency";
  /** Live workers serving the handler and their limits; null when not known here. */
  workers: { id: string; concurrency: number }[] | null;
  source: PolicySource;
  /**
   * What the task must hold to run: each need's choices in order of preference (it takes the
   * first in service with a free slot); null for none.
   */
  resources: ResourceChoice[][] | null;
}

/** Each attempt's time limit, and the quality its result must reach. */
export interface TimeoutLayer {
  layer: "timeout";
  timeoutMs: number;
  source: PolicySource;
  /** Lowest acceptable result quality in [0, 1]; a result below it is a `quality` failure. */
  qualityThreshold: number | null;
}

/** One layer of {@link EffectivePolicy}. */
export type PolicyLayer =
  DeadlineLayer | BreakerLayer | RetryLayer | ConcurrencyLayer | TimeoutLayer;

/** The five layers in {@link POLICY_ORDER}. */
export type EffectivePolicy = [
  DeadlineLayer,
  BreakerLayer,
  RetryLayer,
  ConcurrencyLayer,
  TimeoutLayer,
];

/** A stored task and what the store knows around it. */
export interface StoredTaskInput {
  task: TaskRecord;
  /** Its workstream, for the revival setting. */
  workstream?: WorkstreamRecord | null;
  /** Its breaker's row, when it names one and the store has it. */
  breaker?: BreakerRecord | null;
  /** Registered workers; those alive and serving the task's handler set the concurrency. */
  workers?: readonly WorkerRecord[];
  /** The stored resources (those the task needs are read from it). */
  resources?: readonly ResourceRecord[];
}

/** A handler by the name it is registered under, as a task object (see `resolveHandler`). */
export interface HandlerInput {
  name: string;
  definition: TaskDefinition;
}

/** What {@link effectivePolicy} describes: a stored task, or a handler's own settings. */
export type PolicySubject = { task: StoredTaskInput } | { handler: HandlerInput };

/**
 * The effective policy layers, outermost first. For a stored task, its stored values (as
 * submitted: the definition's, else the handler's, else the defaults); for a handler, what it
 * declares, or Mend's defaults for what it does not (a definition may still override them).
 *
 * @throws MendError `invalid_argument` when a handler's settings are invalid.
 */
export function effectivePolicy(subject: PolicySubject): EffectivePolicy {
  return "task" in subject ? taskPolicy(subject.task) : handlerPolicy(subject.handler);
}

function taskPolicy({
  task,
  workstream,
  breaker,
  workers,
  resources,
}: StoredTaskInput): EffectivePolicy {
  const serving = workers
    ?.filter((w) => w.status !== "shutdown" && w.handlers.includes(task.handler))
    .map((w) => ({ id: w.id, concurrency: w.concurrency }));
  return [
    { layer: "deadline", deadlineMs: task.deadlineMs, source: "task" },
    breakerLayer(task.breaker, breaker ?? null, "task"),
    {
      layer: "retry",
      policy: task.retry,
      categories: categoryRules(task.retry),
      source: "task",
      fallbacks: task.fallbacks && {
        selector: task.fallbacks.selector,
        options: task.fallbacks.options,
      },
      revive: workstream?.revive ?? null,
    },
    {
      layer: "concurrency",
      workers: serving ?? null,
      source: serving === undefined ? "default" : "workers",
      resources: resourceChoices(task.resources, resources),
    },
    {
      layer: "timeout",
      timeoutMs: task.timeoutMs,
      source: "task",
      qualityThreshold: task.qualityThreshold,
    },
  ];
}

function handlerPolicy({ name, definition: def }: HandlerInput): EffectivePolicy {
  const recovery = normalizeHandlerRecovery(name, def);
  const retry = def.retry === undefined ? DEFAULT_RETRY : normalizeRetry(def.retry);
  return [
    {
      layer: "deadline",
      deadlineMs: recovery.deadlineMs ?? null,
      source: recovery.deadlineMs === undefined ? "default" : "handler",
    },
    breakerLayer(recovery.breaker ?? null, null, "default"),
    {
      layer: "retry",
      policy: retry,
      categories: categoryRules(retry),
      source: def.retry === undefined ? "default" : "handler",
      fallbacks: recovery.fallbacks ?? null,
      revive: null,
    },
    {
      layer: "concurrency",
      workers: null,
      source: "default",
      resources: resourceChoices(recovery.resources ?? null),
    },
    {
      layer: "timeout",
      timeoutMs: def.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(def.timeout),
      source: def.timeout === undefined ? "default" : "handler",
      qualityThreshold: recovery.qualityThreshold ?? null,
    },
  ];
}

/** Each need's choices, with the stored limit and status of each when `stored` is given. */
function resourceChoices(
  needs: readonly (readonly string[])[] | null,
  stored?: readonly ResourceRecord[],
): ResourceChoice[][] | null {
  if (needs === null) return null;
  const byId = new Map(stored?.map((r) => [r.id, r]));
  return needs.map((choices) =>
    choices.map((id) => {
      const r = byId.get(id);
      return { id, maxHolders: r?.maxHolders ?? null, status: r?.status ?? null };
    }),
  );
}

/**
 * Without a stored row, a named breaker is shown with the settings a new one gets. `unset` says
 * where "no breaker" comes from.
 */
function breakerLayer(
  name: string | null,
  row: BreakerRecord | null,
  unset: PolicySource,
): BreakerLayer {
  const layer = { layer: "breaker", name, status: null, forced: false } as const;
  if (name === null) return { ...layer, config: null, source: unset };
  if (!row) return { ...layer, config: { ...DEFAULT_BREAKER }, source: "default" };
  return { ...layer, config: row.config, source: "store", status: row.status, forced: row.forced };
}

/** The categories whose rule is not the base rule: set by the policy, or built in. */
function categoryRules(policy: RetryPolicy): Partial<Record<FailureCategory, RetryRule>> {
  const { categories: _, ...base } = policy;
  const out: Partial<Record<FailureCategory, RetryRule>> = {};
  for (const category of FAILURE_CATEGORIES) {
    const rule = ruleFor(policy, category);
    if (!isDeepStrictEqual(rule, base)) out[category] = rule;
  }
  return out;
}

/** Something about a policy that will not work as its author likely meant. */
export interface PolicyProblem {
  /** `error`: a setting never takes effect; `warning`: it may surprise at run time. */
  severity: "error" | "warning";
  layer: PolicyLayerName;
  message: string;
}

/**
 * The largest total delay the rule's retries can add up to, before any `Retry-After` stretches
 * them: every jittered delay at the top of its range. Null for `custom` backoff, whose delays
 * only the handler's function knows.
 */
export function worstCaseRetryDelayMs(rule: RetryRule): number | null {
  if (rule.backoff === "custom" && rule.scheduleMs === undefined) return null;
  let total = 0;
  let previous: number | null = null;
  for (let retry = 1; retry < rule.maxAttempts; retry++) {
    previous = backoffDelay(rule, retry, previous, () => 1);
    total += previous;
  }
  return total;
}

/**
 * Problems of a policy's layers, outermost first: a per-attempt timeout longer than the overall
 * deadline (the deadline always cuts the attempt short first); retries whose worst-case total
 * delay exceeds the deadline (the last ones never start); a breaker that stays open longer than
 * the deadline (a task that meets it open fails while it waits).
 */
export function validatePolicy(layers: readonly PolicyLayer[]): PolicyProblem[] {
  const deadline = find(layers, "deadline")?.deadlineMs ?? null;
  if (deadline === null) return [];
  const problems: PolicyProblem[] = [];
  const within = `the ${formatDuration(deadline)} overall deadline`;

  const breaker = find(layers, "breaker");
  if (breaker?.name && breaker.config && breaker.config.openMs > deadline) {
    const settings = breaker.source === "default" ? " (default settings)" : "";
    problems.push({
      severity: "warning",
      layer: "breaker",
      message: `breaker ${breaker.name} stays open ${formatDuration(breaker.config.openMs)}${settings}, longer than ${within}: a task that finds it open fails while it waits`,
    });
  }

  const retry = find(layers, "retry");
  if (retry) {
    const { categories: _, ...base } = retry.policy;
    const rules: [string, RetryRule][] = [
      ["", base],
      ...Object.entries(retry.categories).map(([c, r]): [string, RetryRule] => [` on ${c}`, r]),
    ];
    for (const [on, rule] of rules) {
      const worst = worstCaseRetryDelayMs(rule);
      if (worst === null || worst <= deadline) continue;
      const n = rule.maxAttempts - 1;
      problems.push({
        severity: "warning",
        layer: "retry",
        message: `retries${on} can wait ${formatDuration(worst)} in all (${n} retr${n === 1 ? "y" : "ies"}, worst case), longer than ${within}: the later ones never start`,
      });
    }
  }

  const timeout = find(layers, "timeout");
  if (timeout && timeout.timeoutMs > deadline) {
    problems.push({
      severity: "error",
      layer: "timeout",
      message: `the per-attempt timeout ${formatDuration(timeout.timeoutMs)} is longer than ${within}: the deadline cuts every attempt short first, so the timeout never applies`,
    });
  }
  return problems;
}

function find<N extends PolicyLayerName>(
  layers: readonly PolicyLayer[],
  name: N,
): Extract<PolicyLayer, { layer: N }> | undefined {
  return layers.find((l): l is Extract<PolicyLayer, { layer: N }> => l.layer === name);
}

// ---- as people read it

/** A breaker's settings in one phrase, e.g. `opens after 5 failures in a row, stays open 5m, …`. */
export function describeBreakerSettings(c: BreakerConfig): string {
  const opens =
    c.mode === "consecutive"
      ? `opens after ${c.failureThreshold} failure${c.failureThreshold === 1 ? "" : "s"} in a row`
      : `opens when ≥${Math.round(c.failureRate * 100)}% of ≥${c.minimumCalls} calls in ${formatDuration(c.windowMs)} fail`;
  return `${opens}, stays open ${formatDuration(c.openMs)}, closes after ${c.successThreshold} of ${c.halfOpenMaxCalls} probes succeed`;
}

/** A retry rule in one phrase, e.g. `3 attempts, exponential 1s ×2, full jitter, max delay 5m`. */
export function describeRetryRule(rule: RetryRule): string {
  const attempts = `${rule.maxAttempts} attempt${rule.maxAttempts === 1 ? "" : "s"}`;
  if (rule.maxAttempts === 1) return `${attempts} (no retry)`;
  const d = formatDuration;
  let shape: string;
  if (rule.scheduleMs !== undefined && rule.scheduleMs.length > 0) {
    shape = `after ${rule.scheduleMs.map(d).join(", ")} (the last repeats)`;
  } else if (rule.backoff === "constant") {
    shape = rule.initialMs === 0 ? "at once" : `every ${d(rule.initialMs)}`;
  } else if (rule.backoff === "linear") {
    shape = `linear ${d(rule.initialMs)} + ${d(rule.initialMs * rule.factor)} per retry`;
  } else if (rule.backoff === "fibonacci") {
    shape = `fibonacci ${d(rule.initialMs)} × 1, 2, 3, 5…`;
  } else if (rule.backoff === "custom") {
    shape = "custom delay (the handler's customDelay)";
  } else {
    shape = `exponential ${d(rule.initialMs)} ×${rule.factor}`;
  }
  const jitter = rule.jitter === "none" ? "no jitter" : `${rule.jitter} jitter`;
  return `${attempts}, ${shape}, ${jitter}, max delay ${d(rule.maxDelayMs)}`;
}

/**
 * Resource needs in one phrase: `git_repo_write (at most 1 holder, available) and one of api-a
 * (at most 2 holders, unavailable), api-b (…)`; limits and states only where known.
 */
export function describeResourceNeeds(needs: readonly (readonly ResourceChoice[])[]): string {
  const choice = (c: ResourceChoice) =>
    c.maxHolders === null
      ? c.id
      : `${c.id} (at most ${c.maxHolders} holder${c.maxHolders === 1 ? "" : "s"}, ${c.status})`;
  return needs
    .map((need) => (need.length === 1 ? choice(need[0]!) : `one of ${need.map(choice).join(", ")}`))
    .join(" and ");
}

/** A layer's effective values in one line, as `mend describe` prints them. */
export function describeLayer(layer: PolicyLayer): string {
  switch (layer.layer) {
    case "deadline":
      return layer.deadlineMs === null
        ? "none"
        : `${formatDuration(layer.deadlineMs)} from submission, across every attempt`;
    case "breaker": {
      if (layer.name === null || layer.config === null) return "none";
      const settings = describeBreakerSettings(layer.config);
      if (layer.status === null) {
        return `${layer.name}: ${settings} (defaults; a stored breaker keeps its own: mend breakers)`;
      }
      const forced = layer.forced ? " (forced: until closed by a person)" : "";
      return `${layer.name}: ${layer.status.replace("_", "-")}${forced}; ${settings}`;
    }
    case "retry": {
      const { categories: _, ...base } = layer.policy;
      const said = describeRetryRule(base);
      const worst = worstCaseRetryDelayMs(base);
      const parts = [worst ? `${said} (up to ${formatDuration(worst)} of waiting)` : said];
      for (const [category, rule] of Object.entries(layer.categories)) {
        // A rule that differs only where it cannot matter (e.g. the delay without retries).
        const text = describeRetryRule(rule);
        if (text !== said) parts.push(`on ${category}: ${text}`);
      }
      if (layer.fallbacks) {
        const handlers = layer.fallbacks.options.map((o) => o.handler).join(", ");
        parts.push(`then fallbacks (${layer.fallbacks.selector}): ${handlers}`);
      }
      if (layer.revive !== null) {
        parts.push(`revival ${layer.revive ? "on" : "off"} (from the workstream)`);
      }
      return parts.join("; ");
    }
    case "concurrency": {
      const perWorker =
        layer.workers === null
          ? "per worker (mend worker --concurrency)"
          : layer.workers.length === 0
            ? "no live worker serves this handler; per worker (mend worker --concurrency)"
            : `per worker: ${layer.workers.map((w) => `${w.concurrency} on ${w.id}`).join(", ")}`;
      return layer.resources === null
        ? perWorker
        : `${perWorker}; holds ${describeResourceNeeds(layer.resources)} while it runs`;
    }
    case "timeout":
      return (
        `${formatDuration(layer.timeoutMs)} per attempt` +
        (layer.qualityThreshold === null
          ? ""
          : `; a result below quality ${layer.qualityThreshold} is a quality failure`)
      );
  }
}
