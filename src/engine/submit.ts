import { validateDefinition } from "../model/definition.js";
import { type HandlerMap, handlerNames } from "../model/handler.js";
import type { Store } from "../store/store.js";

/** Options of {@link submitWorkstream}. */
export interface SubmitOptions {
  /** When given, every task's handler must be one of these (checked before anything is written). */
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
  const spec = validateDefinition(definition, {
    handlers: options.handlers ? handlerNames(options.handlers) : undefined,
    maxInputBytes: options.maxInputBytes,
  });
  return store.submit(spec, options.actor ?? "engine");
}
