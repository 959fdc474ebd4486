/**
 * BullMQ in the peer comparison: one queue on Redis, jobs added with `addBulk`, workers run as
 * `bench/peers/bullmq-worker.ts` processes (built to plain JavaScript, ./build-workers.ts).
 * Completed jobs stay in BullMQ's completed set (no `removeOnComplete`), which is what
 * {@link System.completed} counts.
 */
import { createRequire } from "node:module";
import { Queue, type WorkerOptions as BullWorkerOptions } from "bullmq";
import { workerScript } from "./build-workers.js";
import type { Job, Settings, System } from "./system.js";
import { spawnWorker, workerEnv, type WorkerHandle } from "./worker-process.js";

/** The queue every run uses; the worker entry takes jobs from it. */
export const QUEUE = "bench";
/**
 * Where `other` jobs go: a queue no worker runs (a BullMQ worker takes every job of its queue,
 * whatever its name), under the same prefix, so that cleanup removes it too.
 */
const OTHER_QUEUE = "bench-other";

/** Key prefix of everything BullMQ writes for the benchmark, so that cleanup can find it all. */
export const PREFIX = "bench-bullmq";

/** Where Redis is unless `BENCH_REDIS_URL` says otherwise. */
export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** Jobs per `addBulk` call: one Redis pipeline each, long enough to amortise the round trips. */
const CHUNK = 1000;

/**
 * The worker options behind each {@link Settings}. `default` passes nothing, so the worker runs
 * with whatever the installed BullMQ defaults to. Either way a killed worker's job is requeued by
 * the first stalled check that finds its lock lapsed and that had already seen it active at the
 * check before: one to two `stalledInterval`s after the kill.
 */
export const WORKER_SETTINGS: Record<
  Settings,
  Pick<BullWorkerOptions, "lockDuration" | "stalledInterval">
> = {
  default: {},
  // 1 s is as low as is sensible: the lock is renewed every lockDuration / 2 = 500 ms, so any
  // longer event-loop pause in a healthy worker would already have its jobs taken away.
  aggressive: { lockDuration: 1000, stalledInterval: 1000 },
};

/** BullMQ on the Redis at `BENCH_REDIS_URL` (default 127.0.0.1:6379). */
export function bullmq(): System {
  const url = process.env.BENCH_REDIS_URL ?? DEFAULT_REDIS_URL;
  const { host } = new URL(url);
  const { version } = createRequire(import.meta.url)("bullmq/package.json") as { version: string };
  let queue: Queue | undefined;
  let other: Queue | undefined;
  // Known once setup() connected: Redis reports it in INFO, which BullMQ reads on connecting.
  let redisVersion: string | undefined;

  const open = async (): Promise<Queue> => {
    if (!queue) {
      queue = new Queue(QUEUE, { connection: { url }, prefix: PREFIX });
      await queue.waitUntilReady();
      redisVersion = queue.backend.redisVersion;
    }
    return queue;
  };

  /** Deletes every key under the prefix, whatever queue or leftover it belongs to. */
  const clear = async (): Promise<void> => {
    const client = await (await open()).backend.client;
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, { MATCH: `${PREFIX}:*`, COUNT: 1000 });
      if (keys.length > 0) await client.del(...keys);
      cursor = next;
    } while (cursor !== "0");
  };

  return {
    name: "BullMQ",
    version: `bullmq ${version}`,
    get backend() {
      return `Redis${redisVersion ? ` ${redisVersion}` : ""} at ${host}`;
    },
    kind: "redis",
    recovery: {
      default: {
        description:
          "BullMQ defaults: lockDuration 30 s, lockRenewTime 15 s, stalledInterval 30 s, maxStalledCount 1",
      },
      aggressive: {
        description:
          "lockDuration 1 s, lockRenewTime 0.5 s, stalledInterval 1 s, maxStalledCount 1 (default)",
      },
    },
    async setup() {
      await clear();
    },
    async teardown() {
      if (!queue) return;
      await clear();
      await queue.close();
      await other?.close();
      queue = undefined;
      other = undefined;
    },
    async enqueue(jobs: Job[]) {
      const q = await open();
      const byQueue = new Map<Queue, Job[]>();
      for (const j of jobs) {
        if (j.kind === "other")
          other ??= new Queue(OTHER_QUEUE, { connection: { url }, prefix: PREFIX });
        const to = j.kind === "other" ? other! : q;
        if (!byQueue.has(to)) byQueue.set(to, []);
        byQueue.get(to)!.push(j);
      }
      for (const [to, js] of byQueue) {
        for (let i = 0; i < js.length; i += CHUNK) {
          await to.addBulk(
            js.slice(i, i + CHUNK).map((j) => ({
              name: j.kind,
              data: { id: j.id },
              opts: { jobId: j.id },
            })),
          );
        }
      }
    },
    startWorker(o): Promise<WorkerHandle> {
      return spawnWorker([workerScript("bullmq-worker")], {
        ...workerEnv(o),
        BENCH_REDIS_URL: url,
        BENCH_PREFIX: PREFIX,
      });
    },
    async completed() {
      return (await open()).getCompletedCount();
    },
  };
}
