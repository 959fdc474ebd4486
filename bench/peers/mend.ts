/**
 * Mend as a system under test, on either store: the embedded SQLite file (compared with the
 * Redis and embedded peers) and PostgreSQL (compared with the PostgreSQL peers). Its workers are
 * `mend worker` processes from the built CLI, as users run them.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, type Store, submitWorkstream } from "../../dist/index.js";
import { dropSchema, PG_URL } from "./postgres.js";
import type { Job, System, WorkerOptions } from "./system.js";
import { spawnWorker, workerEnv, type WorkerHandle } from "./worker-process.js";

const VERSION = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
/** Tasks per submitted workstream: Mend's unit of submission, like a peer's bulk insert. */
const CHUNK = 1_000;

/**
 * Tasks a worker claims beyond its concurrency: the counterpart of graphile-worker's local queue
 * of 500 (bench/peers/graphile-worker.ts), each system in its fastest durable configuration.
 */
const PREFETCH = 500;

/** Mend's lease settings: the CLI's defaults, and the fastest the bench has run reliably. */
const FLAGS = {
  default: [],
  aggressive: ["--heartbeat", "100ms", "--lease", "500ms", "--sweep", "100ms"],
};

/** Mend on the embedded store (`store: "sqlite"`) or on the local PostgreSQL. */
export function mend(storeKind: "sqlite" | "postgres"): System {
  let url = "";
  let remove: () => Promise<void> = async () => undefined;
  let store: Store | null = null;
  return {
    name: storeKind === "sqlite" ? "Mend (SQLite)" : "Mend (PostgreSQL)",
    version: `mend ${VERSION}`,
    backend:
      storeKind === "sqlite"
        ? `SQLite file, WAL, synchronous=FULL; workers with --prefetch ${PREFETCH}`
        : `PostgreSQL at ${new URL(PG_URL).host}, a fresh schema per run; workers with --prefetch ${PREFETCH}`,
    kind: storeKind === "sqlite" ? "embedded" : "postgres",
    recovery: {
      default: { description: "heartbeat 1 s, lease 5 s, sweep 1 s (the CLI's defaults)" },
      aggressive: { description: "heartbeat 100 ms, lease 500 ms, sweep 100 ms" },
    },
    async setup() {
      if (storeKind === "sqlite") {
        const dir = mkdtempSync(join(tmpdir(), "mend-peers-"));
        url = `sqlite:${join(dir, "mend.db")}`;
        remove = async () => rmSync(dir, { recursive: true, force: true });
      } else {
        const schema = `mend_peers_${randomBytes(5).toString("hex")}`;
        const u = new URL(PG_URL);
        u.searchParams.set("schema", schema);
        url = u.toString();
        remove = () => dropSchema(schema);
      }
      store = await openStore(url);
    },
    async teardown() {
      await store?.close();
      store = null;
      await remove();
    },
    async enqueue(jobs: Job[]) {
      for (let i = 0; i < jobs.length; i += CHUNK) {
        await submitWorkstream(store!, {
          name: "bench",
          tasks: jobs.slice(i, i + CHUNK).map((j) => ({
            id: j.id,
            handler: j.kind,
            input: { id: j.id },
          })),
        });
      }
    },
    async startWorker(o: WorkerOptions): Promise<WorkerHandle> {
      const handle = await spawnWorker(
        [
          "dist/cli/main.js",
          "--store",
          url,
          "worker",
          "--handlers",
          "bench/peers/mend-handlers.mjs",
          "--concurrency",
          String(o.concurrency),
          "--prefetch",
          String(PREFETCH),
          ...FLAGS[o.settings],
        ],
        workerEnv(o),
      );
      // Ready once registered: the handlers module loads before the worker registers.
      const pid = handle.child.pid;
      while (!(await store!.listWorkers()).some((w) => w.pid === pid && w.status !== "shutdown")) {
        await new Promise((r) => setTimeout(r, 10));
      }
      return handle;
    },
    async completed() {
      let n = 0;
      for (const counts of (await store!.countTasks()).values()) n += counts.completed ?? 0;
      return n;
    },
  };
}
