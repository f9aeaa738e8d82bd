import { Background, Controls, ReactFlow, type NodeMouseHandler } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useMemo } from "react";
import { useNavigate } from "react-router";
import type { LineageNode } from "../../api/types";
import { layoutLineage, type VersionFlowNode } from "../../lib/lineage";
import { VersionNode } from "./VersionNode";

// Outside the component: xyflow re-mounts every node when nodeTypes changes identity.
const NODE_TYPES = { version: VersionNode };

export function LineageGraph({ service, lineage }: { service: string; lineage: LineageNode[] }) {
  const navigate = useNavigate();
  const { nodes, edges } = useMemo(() => layoutLineage(lineage), [lineage]);
  const open: NodeMouseHandler<VersionFlowNode> = (_, node) =>
    navigate(`/services/${encodeURIComponent(service)}/versions/${node.data.node.version}`);
  return (
    <div className="lineage-graph">
      <ReactFlow<VersionFlowNode>
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        onNodeClick={open}
        nodesDraggable={false}
        nodesConnectable={false}
        fitView
        fitViewOptions={{ maxZoom: 1 }}
        minZoom={0.2}
      >
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
