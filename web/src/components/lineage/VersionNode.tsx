import { Handle, Position, type NodeProps } from "@xyflow/react";
import type { VersionFlowNode } from "../../lib/lineage";

export function VersionNode({ data }: NodeProps<VersionFlowNode>) {
  const { node, outcome } = data;
  return (
    <div
      className={`lineage-node lineage-${node.status}`}
      data-testid="lineage-node"
      data-version={node.version}
      title={`v${node.version}: ${node.status.replace("_", " ")} (click for the model card)`}
    >
      <Handle type="target" position={Position.Top} isConnectable={false} />
      <strong>v{node.version}</strong>
      <span>{node.scenario ?? "—"}</span>
      <span className="muted">{outcome}</span>
      <Handle type="source" position={Position.Bottom} isConnectable={false} />
    </div>
  );
}
