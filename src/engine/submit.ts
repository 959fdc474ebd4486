import {
  normalizeHandlerRecovery,
  normalizeRetry,
  validateDefinition,
} from "../model/definition.js";
import { parseDuration } from "../model/duration.js";
import {
  compensationSpecOf,
  type HandlerMap,
  handlerNames,
  resolveHandler,
  withCompensations,
} from "../model/handler.js";
import type { WorkstreamSpec } from "../model/spec.js";
import type { Store } from "../store/store.js";

/** Options of {@link submitWorkstream}. */
export interface SubmitOptions {
  /**
   * When given, every task's handler must be one of these (checked before anything is written),
   * and a handler's own `retry` and `timeout` apply to tasks whose definition sets neither; its
   * `compensate` (registered as `<name>:compensate`) to tasks whose definition sets none.
   */
  handlers?: HandlerMap;
  /** Largest accepted task input, in bytes of JSON. */
  maxInputBytes?: number;
  actor?: string;
}

/**
 * Validates a workstream definition (YAML/JSON already parsed, or a TypeScript object) and stores
 * it. A definition with any problem is refused whole, writing nothing.
 */
export async function submitWorkstream(
  store: Store,
  definition: unknown,
  options: SubmitOptions = {},
): Promise<{ workstreamId: string; taskIds: string[] }> {
  const handlers = options.handlers && withCompensations(options.handlers);
  const spec = validateDefinition(definition, {
    handlers: handlers ? handlerNames(handlers) : undefined,
    maxInputBytes: options.maxInputBytes,
  });
  if (handlers) applyHandlerDefaults(spec, definition, handlers);
  return store.submit(spec, options.actor ?? "engine");
}

type RawTask = Partial<
  Record<
    | "retry"
    | "timeout"
    | "deadline"
    | "breaker"
    | "fallbacks"
    | "qualityThreshold"
    | "compensate"
    | "requires"
    | "stallAfter"
    | "resources",
    unknown
  >
>;
type RawDefinition = { tasks: RawTask[]; defaults?: RawTask };

/** Where the definition says nothing about a setting, the handler's own applies. */
function applyHandlerDefaults(spec: WorkstreamSpec, raw: unknown, handlers: HandlerMap): void {
  const def = raw as RawDefinition;
  const unset = (written: RawTask, key: keyof RawTask) =>
    written[key] === undefined && def.defaults?.[key] === undefined;
  spec.tasks.forEach((task, i) => {
    const written = def.tasks[i] ?? {};
    const handler = resolveHandler(handlers, task.handler);
    const recovery = normalizeHandlerRecovery(task.handler, handler);
    if (recovery.breaker !== undefined && unset(written, "breaker")) {
      task.breaker = recovery.breaker;
      if (!(recovery.breaker in spec.breakers)) spec.breakers[recovery.breaker] = null;
    }
    if (recovery.deadlineMs !== undefined && unset(written, "deadline")) {
      task.deadlineMs = recovery.deadlineMs;
    }
    if (recovery.fallbacks !== undefined && written.fallbacks === undefined) {
      for (const option of recovery.fallbacks.options) {
        resolveHandler(handlers, option.handler);
        if (option.breaker !== undefined) spec.breakers[option.breaker] ??= null;
      }
      task.fallbacks = recovery.fallbacks;
    }
    if (recovery.qualityThreshold !== undefined && unset(written, "qualityThreshold")) {
      task.qualityThreshold = recovery.qualityThreshold;
    }
    if (recovery.requires !== undefined && unset(written, "requires")) {
      task.requires = recovery.requires;
    }
    if (recovery.stallAfterMs !== undefined && unset(written, "stallAfter")) {
      task.stallAfterMs = recovery.stallAfterMs;
    }
    if (recovery.resources !== undefined && unset(written, "resources")) {
      task.resources = recovery.resources;
      for (const need of task.resources ?? [])
        for (const name of need) spec.resources[name] ??= null;
    }
    if (written.compensate === undefined) {
      task.compensation = compensationSpecOf(task.handler, handler);
    }
    if (handler.retry && written.retry === undefined && def.defaults?.retry === undefined) {
      task.retry = normalizeRetry(handler.retry);
    }
    if (
      handler.timeout !== undefined &&
      written.timeout === undefined &&
      def.defaults?.timeout === undefined
    ) {
      task.timeoutMs = parseDuration(handler.timeout);
    }
  });
}
