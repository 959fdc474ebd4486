// Handlers for examples/hello/workstream.yaml: the default export maps handler names to functions.
let flaky = 0;
export default {
  greet: async ({ input }) => ({ message: `hello ${input.name}` }),
  flaky: async ({ attempt }) => {
    flaky++;
    if (attempt < 2) {
      const err = new Error("service unavailable");
      err.status = 503;
      throw err;
    }
    return { attempt, calls: flaky };
  },
  summarize: async ({ input }) => ({ done: true, input }),
};
