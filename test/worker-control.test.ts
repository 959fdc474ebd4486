/** A Worker's capabilities and how it answers an operator's request, in-process on a fake clock. */
import { describe, expect, it } from "vitest";
import { FakeClock } from "../src/engine/clock.js";
import { Worker } from "../src/engine/Worker.js";
import { validateDefinition } from "../src/model/definition.js";
import type { WorkerControl } from "../src/model/records.js";
import { tempStore } from "./helpers/tmp.js";
import { waitFor } from "./helpers/wait.js";

const erin = { actor: "erin", reason: "drain", command: "mend worker shutdown" };

describe("Worker and operator requests", () => {
  it("claims only what its capabilities allow, and stops gracefully when a shutdown is requested", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const { workstreamId } = await store.submit(
      validateDefinition({
        name: "caps",
        tasks: [
          { id: "gpu", handler: "work", requires: ["gpu"] },
          { id: "tpu", handler: "work", requires: ["tpu"] },
        ],
      }),
    );
    let finish!: () => void;
    const worker = new Worker({
      store,
      clock,
      id: "w-gpu",
      heartbeatMs: 100,
      capabilities: ["gpu", "gpu"],
      handlers: { work: () => new Promise<string>((resolve) => (finish = () => resolve("ok"))) },
    });
    expect(worker.capabilities).toEqual(["gpu"]);
    await worker.start();
    await waitFor(() => finish !== undefined, 5_000, "the gpu task to start");
    expect(await store.getWorker("w-gpu")).toMatchObject({
      capabilities: ["gpu"],
      supervised: false,
    });
    await store.requestWorkerShutdown("w-gpu", { reassign: false }, erin);
    await clock.advanceAsync(150, 50);
    await waitFor(() => worker.requested !== null, 5_000, "the worker to hear the request");
    expect(worker.requested).toMatchObject({ action: "shutdown", actor: "erin", reason: "drain" });
    // It finishes its running task, claims nothing more, and stops.
    finish();
    await worker.done;
    const tasks = Object.fromEntries(
      (await store.listTasks(workstreamId)).map((t) => [t.key, t.status]),
    );
    expect(tasks).toEqual({ gpu: "completed", tpu: "queued" });
    expect((await store.getWorker("w-gpu"))!.status).toBe("shutdown");
  });

  it("hands a request to onControl when given one, once", async () => {
    const clock = new FakeClock();
    const { store } = tempStore(clock);
    const heard: WorkerControl[] = [];
    const worker = new Worker({
      store,
      clock,
      id: "w-sup",
      heartbeatMs: 100,
      supervised: true,
      handlers: { work: () => "ok" },
      onControl: (c) => heard.push(c),
    });
    await worker.start();
    await store.requestWorkerRestart("w-sup", erin);
    await clock.advanceAsync(350, 50);
    await waitFor(() => heard.length > 0, 5_000, "the request");
    expect(heard.map((c) => c.action)).toEqual(["restart"]);
    expect(worker.requested?.action).toBe("restart");
    await worker.stop(0);
  });
});
