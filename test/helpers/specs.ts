/** Building workstreams for store-level tests, and reading facts back from the log. */
import { validateDefinition } from "../../src/model/definition.js";
import type { Failure, FailureCategory } from "../../src/model/failure.js";
import type { TransitionRecord } from "../../src/model/records.js";
import type { WorkstreamSpec } from "../../src/model/spec.js";
import type { Store } from "../../src/store/store.js";

/** A task as the tests write it; everything but `id` has a default. */
export interface TaskDef {
  id: string;
  handler?: string;
  deps?: string[];
  priority?: number;
  critical?: boolean;
  maxAttempts?: number;
  input?: unknown;
}

/**
 * A validated spec (through the real `validateDefinition`). Retries use a constant 1 s backoff
 * without jitter so tests know exactly when a retried task is due.
 */
export function spec(
  tasks: TaskDef[],
  options: { name?: string; onFailure?: "continue" | "stop" } = {},
): WorkstreamSpec {
  return validateDefinition({
    name: options.name ?? "test",
    onFailure: options.onFailure ?? "continue",
    tasks: tasks.map((t) => ({
      id: t.id,
      handler: t.handler ?? "work",
      ...(t.deps ? { deps: t.deps } : {}),
      ...(t.priority !== undefined ? { priority: t.priority } : {}),
      ...(t.critical !== undefined ? { critical: t.critical } : {}),
      ...(t.input !== undefined ? { input: t.input } : {}),
      retry: {
        maxAttempts: t.maxAttempts ?? 3,
        backoff: "constant",
        initial: "1s",
        jitter: "none",
      },
    })),
  });
}

/** A failure of `category`; recoverable unless said otherwise. */
export function failureOf(category: FailureCategory, recoverable = true): Failure {
  return { category, recoverable, message: `test ${category} failure` };
}

/** Events that record a task's completion. */
export const COMPLETION_EVENTS = ["task_completed", "task_recovered"] as const;

/** How many times each task's completion was recorded, from the whole log. */
export function completionsPerTask(log: readonly TransitionRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const t of log) {
    if ((COMPLETION_EVENTS as readonly string[]).includes(t.event)) {
      counts.set(t.entityId, (counts.get(t.entityId) ?? 0) + 1);
    }
  }
  return counts;
}

/** Task statuses by key (the id as written) for one workstream. */
export async function statusesByKey(
  store: Store,
  workstreamId: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of await store.listTasks(workstreamId)) out[t.key] = t.status;
  return out;
}
