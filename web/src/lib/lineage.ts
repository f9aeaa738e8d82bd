import { Graph, layout } from "@dagrejs/dagre";
import type { Edge, Node } from "@xyflow/react";
import type { LineageNode } from "../api/types";

export const NODE_WIDTH = 170;
export const NODE_HEIGHT = 70;

// A type alias, not an interface: xyflow requires node data assignable to Record<string, unknown>.
export type VersionNodeData = { node: LineageNode; outcome: string };
export type VersionFlowNode = Node<VersionNodeData, "version">;

const DEPLOY_WORDS: Record<string, string> = {
  deploy: "deployed",
  rollback: "rolled back to",
  canary: "canary",
  shadow: "shadow",
};

/** A one-line summary of what happened to a version, from its validation and deployments. */
export function lineageOutcome(node: LineageNode): string {
  if (node.failed_gates.length > 0) return `failed ${node.failed_gates.join(", ")}`;
  const last = node.deployments[node.deployments.length - 1];
  if (last)
    return last.status === "succeeded"
      ? (DEPLOY_WORDS[last.action] ?? last.action)
      : `${last.action} failed`;
  if (node.validation_passed === true) return "validated";
  if (node.validation_passed === false) return "validation failed";
  return node.parent_version === null ? "base" : "not validated";
}

/**
 * Positions the version tree top-down with dagre. An edge runs parent -> version; a version
 * whose parent is absent from the list is drawn as a root.
 */
export function layoutLineage(lineage: LineageNode[]): { nodes: VersionFlowNode[]; edges: Edge[] } {
  const known = new Set(lineage.map((n) => n.version));
  const graph = new Graph();
  graph.setGraph({ rankdir: "TB", nodesep: 30, ranksep: 50 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of lineage) {
    graph.setNode(String(node.version), { width: NODE_WIDTH, height: NODE_HEIGHT });
  }
  const edges: Edge[] = [];
  for (const node of lineage) {
    if (node.parent_version === null || !known.has(node.parent_version)) continue;
    graph.setEdge(String(node.parent_version), String(node.version));
    edges.push({
      id: `${node.parent_version}-${node.version}`,
      source: String(node.parent_version),
      target: String(node.version),
    });
  }
  layout(graph);

  const nodes = lineage.map((node): VersionFlowNode => {
    const { x, y } = graph.node(String(node.version));
    return {
      id: String(node.version),
      type: "version",
      // dagre gives centres; xyflow wants top-left corners.
      position: { x: x - NODE_WIDTH / 2, y: y - NODE_HEIGHT / 2 },
      data: { node, outcome: lineageOutcome(node) },
    };
  });
  return { nodes, edges };
}
