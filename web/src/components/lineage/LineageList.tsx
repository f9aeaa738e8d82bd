import type { LineageNode } from "../../api/types";
import { lineageOutcome } from "../../lib/lineage";
import { StatusBadge } from "../StatusBadge";
import { VersionLink } from "../VersionLink";

/** The graph's content as a list, for screen readers and narrow screens. */
export function LineageList({ service, lineage }: { service: string; lineage: LineageNode[] }) {
  return (
    <ol className="plain-list">
      {lineage.map((node) => (
        <li key={node.version} data-testid="lineage-item" data-version={node.version}>
          <VersionLink service={service} version={node.version} />{" "}
          <StatusBadge value={node.status} /> {node.scenario ?? "—"} · {lineageOutcome(node)}
          {node.parent_version !== null && (
            <span className="muted">
              {" "}
              · from <VersionLink service={service} version={node.parent_version} />
            </span>
          )}
        </li>
      ))}
    </ol>
  );
}
