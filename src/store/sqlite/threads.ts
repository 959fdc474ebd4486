/**
 * Worker threads for the SQLite store's long jobs (a rebuild's two halves, a backup's copy), so
 * they never hold the main thread's event loop: a worker's heartbeats, handlers and monitor go on
 * beside them.
 */
import { dirname, extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { isMendError, MendError } from "../../errors.js";

/** A thread's failure as it crosses to the main thread: the parts of the typed error it was. */
export interface ThreadFailure {
  error: { code: MendError["code"]; message: string; context: Record<string, unknown> };
}

/** `err` as a thread reports it. */
export function threadFailure(err: unknown): ThreadFailure {
  const e = isMendError(err) ? err : new MendError("internal", String(err));
  return { error: { code: e.code, message: e.message, context: e.context } };
}

/** A thread's final message, or its failure as the typed error it was. */
export function unwrap<T extends object>(reply: T | ThreadFailure): T {
  if ("error" in reply) {
    throw new MendError(reply.error.code, reply.error.message, reply.error.context);
  }
  return reply;
}

/** A thread's message that reports progress; any other message is its last. */
type Progress<M> = Extract<M, { progress: unknown }>;

/** Options of {@link startThread}. */
export interface ThreadOptions<M> {
  /** Called with each message that carries `progress`. */
  onProgress?: (m: Progress<M>) => void;
  /** Size of the thread's young generation in MiB (V8's default when not given). */
  youngGenerationMb?: number;
}

/**
 * Starts the thread module `name` (beside this one) with `request`; `done` is its last message.
 * Built, the module is JavaScript; under the tests it is the TypeScript source, loaded through
 * tsx's loader in the thread.
 */
export function startThread<M>(name: string, request: object, options: ThreadOptions<M> = {}) {
  const self = fileURLToPath(import.meta.url);
  const script = pathToFileURL(join(dirname(self), `${name}${extname(self)}`)).href;
  const resourceLimits =
    options.youngGenerationMb === undefined
      ? {}
      : { maxYoungGenerationSizeMb: options.youngGenerationMb };
  const worker = script.endsWith(".ts")
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => tsx.register()).then(() => import(${JSON.stringify(script)}))`,
        { eval: true, workerData: request, resourceLimits },
      )
    : new Worker(new URL(script), { workerData: request, resourceLimits });
  const done = new Promise<Exclude<M, Progress<M>>>((resolve, reject) => {
    worker.on("message", (m: M) => {
      if (typeof m === "object" && m !== null && "progress" in m) {
        options.onProgress?.(m as Progress<M>);
      } else {
        resolve(m as Exclude<M, Progress<M>>);
      }
    });
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new MendError("internal", `${name} exited with ${code}`)));
  });
  return {
    done,
    cancel: async () => {
      done.catch(() => undefined);
      await worker.terminate();
    },
  };
}
