/**
 * Capabilities: what a worker can do (`mend worker --capabilities gpu,repo-write`) and what a task
 * requires (`requires: [gpu]`). A worker claims a task only when it has every capability the task
 * requires; a task that requires none is claimed by any worker with its handler.
 */
import { MendError } from "../errors.js";

/** What a capability name may look like: as task ids, so it reads the same in commands and logs. */
export const CAPABILITY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Longest capability name. */
export const MAX_CAPABILITY_LENGTH = 64;

/** Why `name` is not a valid capability name, or null when it is. */
export function capabilityProblem(name: unknown): string | null {
  if (typeof name !== "string") return `expected a capability name, got ${typeof name}`;
  if (name.length > MAX_CAPABILITY_LENGTH) {
    return `capability "${name.slice(0, 20)}…" is ${name.length} characters long; the limit is ${MAX_CAPABILITY_LENGTH}`;
  }
  if (!CAPABILITY_PATTERN.test(name)) {
    return `capability ${JSON.stringify(name)} must start with a letter or digit and contain only letters, digits, ".", "_" and "-"`;
  }
  return null;
}

/**
 * A list of capabilities in its stored form: sorted, without repeats; null for an empty list.
 * Names are assumed valid (see {@link capabilityProblem}).
 */
export function normalizeCapabilities(names: readonly string[]): string[] | null {
  const set = [...new Set(names)].sort();
  return set.length === 0 ? null : set;
}

/**
 * Checks a worker's capabilities and returns them sorted, without repeats.
 *
 * @throws MendError `invalid_argument` naming every invalid name.
 */
export function checkCapabilities(names: readonly string[]): string[] {
  const problems = names.map(capabilityProblem).filter((p): p is string => p !== null);
  if (problems.length > 0) {
    throw new MendError("invalid_argument", `invalid capabilities: ${problems.join("; ")}`, {
      capabilities: names,
    });
  }
  return normalizeCapabilities(names) ?? [];
}

/** Parses `--capabilities a,b,c` (commas, optional spaces; empty entries are refused). */
export function parseCapabilityList(text: string): string[] {
  return checkCapabilities(text.split(",").map((s) => s.trim()));
}

/** True when a worker with `capabilities` may claim a task that `requires` these (null: none). */
export function satisfiesRequirements(
  capabilities: readonly string[],
  requires: readonly string[] | null,
): boolean {
  return requires === null || requires.every((r) => capabilities.includes(r));
}
