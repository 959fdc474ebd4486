import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/**
 * A sortable id: 10 characters of time (Crockford base32, lower case) and 8 of randomness, so ids
 * created later sort later and `mend status` lists them in creation order.
 */
export function newId(prefix: string, now: number): string {
  let time = "";
  let t = Math.max(0, Math.floor(now));
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(8);
  let rand = "";
  for (const b of bytes) rand += ALPHABET[b % 32];
  return `${prefix}_${time}${rand}`;
}

/** A task's id is its workstream's id and its key as written: `ws_…/search-1`. */
export function taskId(workstreamId: string, key: string): string {
  return `${workstreamId}/${key}`;
}

/** The `task_deps` rows of a task: (task id, dependency id) for each dependency key. */
export function dependencyRows(
  workstreamId: string,
  id: string,
  depKeys: readonly string[],
): [string, string][] {
  return depKeys.map((d) => [id, taskId(workstreamId, d)]);
}

/** Prefix of workstream ids; reserved, so no worker id can be mistaken for one. */
export const WORKSTREAM_ID_PREFIX = "ws_";

/**
 * The workstream an entity's transitions are filed under: a task's is the part of its id before
 * the `/`, a workstream's is itself, a worker's is none.
 */
export function workstreamOf(entityId: string): string | null {
  if (!entityId.startsWith(WORKSTREAM_ID_PREFIX)) return null;
  const slash = entityId.indexOf("/");
  return slash < 0 ? entityId : entityId.slice(0, slash);
}
