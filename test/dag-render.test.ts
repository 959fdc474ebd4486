import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import { type DagWorkstream, renderDag } from "../src/state/dag-render.js";

/** Listed out of order on purpose: renderings put every task after its dependencies. */
const RESEARCH: DagWorkstream = {
  id: "ws_1",
  name: "research",
  status: "active",
  tasks: [
    { key: "write", status: "pending", deps: ["search-1", "search-2"] },
    { key: "plan", status: "completed", deps: [] },
    { key: "search-1", status: "running", deps: ["plan"] },
    { key: "search-2", status: "failed", deps: ["plan"] },
    { key: "notes", status: "queued", deps: [] },
  ],
};

describe("renderDag", () => {
  it("ascii: one line per task in topological order, indented by depth, with state and deps", () => {
    expect(renderDag(RESEARCH, "ascii")).toBe(
      [
        "research  ws_1  active",
        "plan        completed",
        "notes       queued",
        "  search-1  running    ← plan",
        "  search-2  failed     ← plan",
        "    write   pending    ← search-1, search-2",
      ].join("\n"),
    );
  });

  it("mermaid: graph TD, dependency → dependent, one class per state used", () => {
    expect(renderDag(RESEARCH, "mermaid")).toBe(
      [
        "graph TD",
        '  t0["plan<br/>completed"]:::completed',
        '  t1["notes<br/>queued"]:::queued',
        '  t2["search-1<br/>running"]:::running',
        '  t3["search-2<br/>failed"]:::failed',
        '  t4["write<br/>pending"]:::pending',
        "  t0 --> t2",
        "  t0 --> t3",
        "  t2 --> t4",
        "  t3 --> t4",
        "  classDef completed fill:#d3f9d8,stroke:#495057,color:#212529",
        "  classDef queued fill:#e7f5ff,stroke:#495057,color:#212529",
        "  classDef running fill:#fff3bf,stroke:#495057,color:#212529",
        "  classDef failed fill:#ffc9c9,stroke:#495057,color:#212529",
        "  classDef pending fill:#f1f3f5,stroke:#495057,color:#212529",
      ].join("\n"),
    );
  });

  it("dot: a digraph with each task filled by its state", () => {
    expect(renderDag(RESEARCH, "dot")).toBe(
      [
        'digraph "research" {',
        '  label="research ws_1 (active)";',
        '  node [shape=box, style="rounded,filled"];',
        '  "plan" [label="plan\\ncompleted", fillcolor="#d3f9d8"];',
        '  "notes" [label="notes\\nqueued", fillcolor="#e7f5ff"];',
        '  "search-1" [label="search-1\\nrunning", fillcolor="#fff3bf"];',
        '  "search-2" [label="search-2\\nfailed", fillcolor="#ffc9c9"];',
        '  "write" [label="write\\npending", fillcolor="#f1f3f5"];',
        '  "plan" -> "search-1";',
        '  "plan" -> "search-2";',
        '  "search-1" -> "write";',
        '  "search-2" -> "write";',
        "}",
      ].join("\n"),
    );
  });

  it("quotes what the target languages would otherwise read as syntax", () => {
    const odd: DagWorkstream = {
      id: "ws_2",
      name: 'say "hi"',
      status: "completed",
      tasks: [{ key: 'a"b', status: "skipped", deps: [] }],
    };
    expect(renderDag(odd, "dot")).toContain('"a\\"b" [label="a\\"b\\nskipped"');
    expect(renderDag(odd, "dot").split("\n")[0]).toBe('digraph "say \\"hi\\"" {');
    expect(renderDag(odd, "mermaid")).toContain('t0["a#quot;b<br/>skipped"]:::skipped');
  });

  it("a chain 2,000 deep renders without overflowing the stack", () => {
    const tasks = Array.from({ length: 2000 }, (_, i) => ({
      key: `t${i}`,
      status: "pending" as const,
      deps: i === 0 ? [] : [`t${i - 1}`],
    }));
    const ascii = renderDag({ id: "ws_3", name: "chain", status: "active", tasks }, "ascii");
    expect(ascii.split("\n")).toHaveLength(2001);
    expect(ascii.split("\n").at(-1)).toMatch(/^ {3998}t1999 +pending +← t1998$/);
  });

  it("refuses a cycle, naming it", () => {
    const cyclic: DagWorkstream = {
      id: "ws_4",
      name: "loop",
      status: "active",
      tasks: [
        { key: "a", status: "pending", deps: ["b"] },
        { key: "b", status: "pending", deps: ["a"] },
      ],
    };
    expect(() => renderDag(cyclic, "ascii")).toThrow(MendError);
    expect(() => renderDag(cyclic, "ascii")).toThrow(/a → b → a/);
  });
});
