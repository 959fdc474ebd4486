/** Hand-built records for tests of pure code that reads them (diagnosis, policy). */
import type { TaskRecord } from "../../src/model/records.js";
import { DEFAULT_RETRY } from "../../src/recovery/retry.js";

/**
 * A task as the store would hold it: workstream `workstreamId`, key `key`, pending with no
 * attempts and nothing else set, at time `at`; `fields` override any of it.
 */
export function taskRecord(
  workstreamId: string,
  key: string,
  at: number,
  fields: Partial<TaskRecord> = {},
): TaskRecord {
  return {
    id: `${workstreamId}/${key}`,
    workstreamId,
    key,
    handler: key,
    input: null,
    status: "pending",
    priority: 0,
    attempts: 0,
    retry: DEFAULT_RETRY,
    timeoutMs: 30_000,
    deadlineMs: null,
    critical: true,
    deps: [],
    runAt: at,
    leaseToken: null,
    leaseWorker: null,
    leaseExpiresAt: null,
    lastDelayMs: null,
    workerLostStreak: 0,
    output: null,
    lastError: null,
    idempotencyKey: `${workstreamId}/${key}`,
    breaker: null,
    revivals: 0,
    fallbacks: null,
    compensation: null,
    quality: null,
    qualityThreshold: null,
    escalation: null,
    requires: null,
    resources: null,
    held: null,
    progressAt: null,
    stallAfterMs: null,
    stalledAt: null,
    createdAt: at,
    updatedAt: at,
    ...fields,
  };
}
