// The peer comparison's handlers for Mend's worker processes (`mend worker --handlers`), with the
// meaning bench/peers/system.ts gives them; events as bench/peers/worker-process.ts prints them.
const events = process.env.BENCH_EVENTS === "1";
const hold = process.env.BENCH_HOLD === "1";
const now = () => performance.timeOrigin + performance.now();
const emit = (e) => process.stdout.write(`${JSON.stringify({ ...e, pid: process.pid })}\n`);

// Loaded before the worker registers; the adapter waits for the registration itself.
setImmediate(() => emit({ ev: "ready" }));

export default {
  noop: async () => null,
  stamp: async ({ input }) => {
    if (events) emit({ ev: "start", id: input.id, t: now() });
    if (events) emit({ ev: "done", id: input.id, t: now() });
    return null;
  },
  hold: async ({ input, signal }) => {
    if (events) emit({ ev: "start", id: input.id, t: now() });
    if (hold) await new Promise((_, reject) => signal.addEventListener("abort", reject));
    if (events) emit({ ev: "done", id: input.id, t: now() });
    return null;
  },
};
