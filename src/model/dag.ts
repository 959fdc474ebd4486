/**
 * Pure graph helpers for workstream DAGs. An edge goes from a task to a task it depends on.
 * Everything here is iterative: a 100,000-task chain must not overflow the call stack.
 */
import { MendError } from "../errors.js";

/** The dependencies of a node. Edges to nodes outside the graph's node list are ignored. */
export type Edges = (node: string) => readonly string[];

/** One DFS stack frame: a node and how far through its edges the search has got. */
interface Frame {
  node: string;
  deps: readonly string[];
  next: number;
}

/** Longest cycle shown in full; a longer one shows its two ends. */
const MAX_SHOWN_CYCLE = 21;

/** `a → b → c → a`, the way cycles are shown to people. */
export function formatCycle(cycle: readonly string[]): string {
  if (cycle.length <= MAX_SHOWN_CYCLE) return cycle.join(" → ");
  const hidden = cycle.length - 20;
  return [...cycle.slice(0, 10), `… ${hidden} more …`, ...cycle.slice(-10)].join(" → ");
}

/**
 * Finds one cycle, as the list of its nodes with the first repeated at the end (`["a", "b", "a"]`
 * means a depends on b and b on a), or `null` when the graph is acyclic. The cycle starts at its
 * member that comes first in `nodes`, so the answer does not depend on where the search entered it.
 */
export function findCycle(nodes: readonly string[], edges: Edges): string[] | null {
  const known = new Set(nodes);
  const done = new Set<string>();
  /** Position of each node on the current DFS path. */
  const onPath = new Map<string, number>();
  for (const root of nodes) {
    if (done.has(root)) continue;
    const path: Frame[] = [{ node: root, deps: edges(root), next: 0 }];
    onPath.set(root, 0);
    while (path.length > 0) {
      const frame = path[path.length - 1]!;
      if (frame.next < frame.deps.length) {
        const dep = frame.deps[frame.next++]!;
        if (!known.has(dep) || done.has(dep)) continue;
        const at = onPath.get(dep);
        if (at !== undefined) {
          return rotate(
            path.slice(at).map((f) => f.node),
            nodes,
          );
        }
        onPath.set(dep, path.length);
        path.push({ node: dep, deps: edges(dep), next: 0 });
      } else {
        path.pop();
        onPath.delete(frame.node);
        done.add(frame.node);
      }
    }
  }
  return null;
}

/** Rotates a cycle's members to start at the one listed first in `nodes`, and closes it. */
function rotate(members: string[], nodes: readonly string[]): string[] {
  const inCycle = new Set(members);
  const first = nodes.find((n) => inCycle.has(n))!;
  const k = members.indexOf(first);
  const rotated = [...members.slice(k), ...members.slice(0, k)];
  rotated.push(first);
  return rotated;
}

/**
 * Finds one concrete cycle in every strongly connected group of nodes, so each tangle is
 * reported once however many cycles run through it. Ordered by where each cycle's first node
 * appears in `nodes`. Empty when the graph is acyclic.
 */
export function findCycles(nodes: readonly string[], edges: Edges): string[][] {
  const cycles: string[][] = [];
  for (const group of stronglyConnected(nodes, edges)) {
    const members = new Set(group);
    const inGroup = nodes.filter((n) => members.has(n));
    const cycle = findCycle(inGroup, (n) => edges(n).filter((d) => members.has(d)));
    if (cycle) cycles.push(cycle);
  }
  const position = new Map(nodes.map((n, i) => [n, i]));
  return cycles.sort((a, b) => position.get(a[0]!)! - position.get(b[0]!)!);
}

/** Tarjan's algorithm, iteratively. Returns only groups that can hold a cycle. */
function stronglyConnected(nodes: readonly string[], edges: Edges): string[][] {
  const known = new Set(nodes);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: string[][] = [];
  let counter = 0;
  const visit = (node: string, work: Frame[]): void => {
    index.set(node, counter);
    low.set(node, counter);
    counter++;
    stack.push(node);
    onStack.add(node);
    work.push({ node, deps: edges(node), next: 0 });
  };
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: Frame[] = [];
    visit(root, work);
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      if (frame.next < frame.deps.length) {
        const dep = frame.deps[frame.next++]!;
        if (!known.has(dep)) continue;
        if (!index.has(dep)) visit(dep, work);
        else if (onStack.has(dep)) {
          low.set(frame.node, Math.min(low.get(frame.node)!, index.get(dep)!));
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.node, Math.min(low.get(parent.node)!, low.get(frame.node)!));
      if (low.get(frame.node) !== index.get(frame.node)) continue;
      const group: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        group.push(member);
      } while (member !== frame.node);
      if (group.length > 1 || frame.deps.includes(frame.node)) groups.push(group);
    }
  }
  return groups;
}

/** The reverse of `edges`: for each node, the nodes that depend on it (in `nodes` order). */
export function dependentsOf(nodes: readonly string[], edges: Edges): Map<string, string[]> {
  const dependents = new Map<string, string[]>(nodes.map((n) => [n, []]));
  for (const node of nodes) {
    for (const dep of new Set(edges(node))) dependents.get(dep)?.push(node);
  }
  return dependents;
}

/**
 * Orders nodes so every node comes after all of its dependencies; among nodes that are ready at
 * the same time, the order of `nodes` is kept. Throws `invalid_definition` naming a cycle.
 */
export function topologicalOrder(nodes: readonly string[], edges: Edges): string[] {
  const known = new Set(nodes);
  const waitingOn = new Map<string, number>();
  for (const node of nodes) {
    waitingOn.set(node, [...new Set(edges(node))].filter((d) => known.has(d)).length);
  }
  const dependents = dependentsOf(nodes, edges);
  const order = nodes.filter((n) => waitingOn.get(n) === 0);
  for (let i = 0; i < order.length; i++) {
    for (const next of dependents.get(order[i]!)!) {
      const left = waitingOn.get(next)! - 1;
      waitingOn.set(next, left);
      if (left === 0) order.push(next);
    }
  }
  if (order.length < nodes.length) {
    const cycle = findCycle(nodes, edges)!;
    throw new MendError("invalid_definition", `cycle: ${formatCycle(cycle)}`, { cycle });
  }
  return order;
}

/**
 * Every node that transitively depends on `start` (not `start` itself), given the reverse
 * edges, e.g. from {@link dependentsOf}. This is what a failure of `start` can block.
 */
export function downstreamOf(
  start: string,
  dependents: ReadonlyMap<string, readonly string[]>,
): Set<string> {
  const seen = new Set<string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    for (const next of dependents.get(queue[i]!) ?? []) {
      if (next === start || seen.has(next)) continue;
      seen.add(next);
      queue.push(next);
    }
  }
  return seen;
}
