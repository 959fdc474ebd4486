/** Capabilities: names, worker lists, and tasks' `requires` in definitions and handlers. */
import { describe, expect, it } from "vitest";
import { submitWorkstream } from "../src/engine/submit.js";
import { MendError } from "../src/errors.js";
import { parseCapabilityList, satisfiesRequirements } from "../src/model/capabilities.js";
import { normalizeHandlerRecovery, validateDefinition } from "../src/model/definition.js";
import { defineTask } from "../src/model/handler.js";
import { expectError } from "./helpers/expect.js";
import { setupStore } from "./helpers/recovery.js";

const work = { run: () => null };

describe("capabilities", () => {
  it("parses a worker's list: trimmed, sorted, without repeats; refuses bad names, naming each", () => {
    expect(parseCapabilityList("net, gpu,net")).toEqual(["gpu", "net"]);
    let err: unknown;
    try {
      parseCapabilityList("gpu,,a b");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MendError);
    expect((err as MendError).message).toBe(
      'invalid capabilities: capability "" must start with a letter or digit and contain only letters, digits, ".", "_" and "-"; capability "a b" must start with a letter or digit and contain only letters, digits, ".", "_" and "-"',
    );
    expect(satisfiesRequirements(["gpu"], null)).toBe(true);
    expect(satisfiesRequirements(["gpu"], ["gpu", "net"])).toBe(false);
  });

  it("a definition's requires comes from the task, else its defaults; [] means none", () => {
    const spec = validateDefinition({
      name: "caps",
      defaults: { requires: ["net"] },
      tasks: [
        { id: "a", handler: "work" },
        { id: "b", handler: "work", requires: ["gpu", "net", "gpu"] },
        { id: "c", handler: "work", requires: [] },
      ],
    });
    expect(spec.tasks.map((t) => t.requires)).toEqual([["net"], ["gpu", "net"], null]);
    expect(
      validateDefinition({ name: "x", tasks: [{ id: "a", handler: "w" }] }).tasks[0]!.requires,
    ).toBeNull();
  });

  it("refuses requirements that are not a list of capability names, with their paths", () => {
    let err: unknown;
    try {
      validateDefinition({
        name: "bad",
        tasks: [
          { id: "a", handler: "w", requires: "gpu" },
          { id: "b", handler: "w", requires: ["ok", "", 3] },
        ],
      });
    } catch (e) {
      err = e;
    }
    expect((err as MendError).code).toBe("invalid_definition");
    expect((err as MendError).context.problems).toEqual([
      {
        path: "tasks[0].requires",
        message: 'expected a list of capabilities, got "gpu" (write requires: [gpu])',
      },
      {
        path: "tasks[1].requires[1]",
        message:
          'capability "" must start with a letter or digit and contain only letters, digits, ".", "_" and "-"',
      },
      { path: "tasks[1].requires[2]", message: "expected a string, got 3" },
    ]);
  });

  it("a handler's requires applies to its tasks whose definition sets none", async () => {
    expect(normalizeHandlerRecovery("gpu", { requires: ["gpu", "gpu"] })).toEqual({
      requires: ["gpu"],
    });
    await expectError(
      Promise.resolve().then(() => normalizeHandlerRecovery("bad", { requires: ["a b"] })),
      "invalid_argument",
    );
    const { store } = setupStore();
    const handlers = { render: defineTask({ ...work, requires: ["gpu"] }), work };
    const { taskIds } = await submitWorkstream(
      store,
      {
        name: "h",
        tasks: [
          { id: "a", handler: "render" },
          { id: "b", handler: "render", requires: ["big-gpu"] },
          { id: "c", handler: "work" },
        ],
      },
      { handlers },
    );
    const stored = await Promise.all(taskIds.map((id) => store.getTask(id)));
    expect(stored.map((t) => t!.requires)).toEqual([["gpu"], ["big-gpu"], null]);
  });
});
