/**
 * A workstream's DAG with each task's state, as text for a terminal (`ascii`), or as source for
 * Mermaid or Graphviz (`dot`). Edges run from a dependency to the task that waits for it, the way
 * work flows.
 */
import { topologicalOrder } from "../model/dag.js";
import type { TaskStatus, WorkstreamStatus } from "../model/states.js";

/** A task as the DAG shows it. */
export interface DagTask {
  /** The id as written in the definition. */
  key: string;
  status: TaskStatus;
  /** Keys of the tasks it depends on. */
  deps: readonly string[];
}

/** A workstream as the DAG shows it. */
export interface DagWorkstream {
  id: string;
  name: string;
  status: WorkstreamStatus;
  /** In definition order. */
  tasks: readonly DagTask[];
}

export const DAG_FORMATS = ["ascii", "mermaid", "dot"] as const;
export type DagFormat = (typeof DAG_FORMATS)[number];

/** Fill colours by state, shared by the Mermaid and Graphviz renderings. */
const COLOURS: Record<TaskStatus, string> = {
  pending: "#f1f3f5",
  queued: "#e7f5ff",
  running: "#fff3bf",
  completed: "#d3f9d8",
  failed: "#ffc9c9",
  cancelled: "#dee2e6",
  skipped: "#e5dbff",
};

/** Renders the DAG in `format`. */
export function renderDag(ws: DagWorkstream, format: DagFormat): string {
  switch (format) {
    case "ascii":
      return renderAscii(ws);
    case "mermaid":
      return renderMermaid(ws);
    case "dot":
      return renderDot(ws);
  }
}

/**
 * One line per task in topological order, indented by depth (the longest chain of dependencies
 * above it), with its state and what it depends on.
 */
function renderAscii(ws: DagWorkstream): string {
  const ordered = inOrder(ws);
  const depth = new Map<string, number>();
  for (const t of ordered) {
    depth.set(t.key, Math.max(-1, ...t.deps.map((d) => depth.get(d) ?? -1)) + 1);
  }
  const label = (t: DagTask) => `${"  ".repeat(depth.get(t.key)!)}${t.key}`;
  const width = Math.max(...ordered.map((t) => label(t).length));
  const statusWidth = Math.max(...ordered.map((t) => t.status.length));
  const lines = ordered.map((t) => {
    const line = `${label(t).padEnd(width)}  ${t.status.padEnd(statusWidth)}`;
    return t.deps.length ? `${line}  ← ${t.deps.join(", ")}` : line.trimEnd();
  });
  return [`${ws.name}  ${ws.id}  ${ws.status}`, ...lines].join("\n");
}

/** `graph TD` with one class per state. */
function renderMermaid(ws: DagWorkstream): string {
  const ordered = inOrder(ws);
  const node = new Map(ordered.map((t, i) => [t.key, `t${i}`]));
  const lines = ["graph TD"];
  for (const t of ordered) {
    lines.push(`  ${node.get(t.key)}["${mermaidText(t.key)}<br/>${t.status}"]:::${t.status}`);
  }
  for (const t of ordered) {
    for (const d of t.deps) lines.push(`  ${node.get(d)} --> ${node.get(t.key)}`);
  }
  for (const status of usedStatuses(ordered)) {
    lines.push(`  classDef ${status} fill:${COLOURS[status]},stroke:#495057,color:#212529`);
  }
  return lines.join("\n");
}

/** A Graphviz digraph, each task filled by its state. */
function renderDot(ws: DagWorkstream): string {
  const ordered = inOrder(ws);
  const lines = [
    `digraph ${dotText(ws.name)} {`,
    `  label=${dotText(`${ws.name} ${ws.id} (${ws.status})`)};`,
    '  node [shape=box, style="rounded,filled"];',
  ];
  for (const t of ordered) {
    lines.push(
      `  ${dotText(t.key)} [label=${dotText(`${t.key}\n${t.status}`)}, fillcolor="${COLOURS[t.status]}"];`,
    );
  }
  for (const t of ordered) {
    for (const d of t.deps) lines.push(`  ${dotText(d)} -> ${dotText(t.key)};`);
  }
  lines.push("}");
  return lines.join("\n");
}

/** The tasks with every task after its dependencies; definition order otherwise. */
function inOrder(ws: DagWorkstream): DagTask[] {
  const byKey = new Map(ws.tasks.map((t) => [t.key, t]));
  return topologicalOrder(
    ws.tasks.map((t) => t.key),
    (k) => byKey.get(k)!.deps,
  ).map((k) => byKey.get(k)!);
}

function usedStatuses(tasks: readonly DagTask[]): TaskStatus[] {
  return [...new Set(tasks.map((t) => t.status))];
}

/** Text inside a quoted Mermaid label. */
function mermaidText(s: string): string {
  return s.replace(/"/g, "#quot;").replace(/</g, "#lt;").replace(/>/g, "#gt;");
}

/** A quoted DOT string. */
function dotText(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}
