import type { ModelVersion } from "../../api/types";
import { bytes, relativeTime } from "../../lib/format";
import { StatusBadge } from "../StatusBadge";
import { VersionLink } from "../VersionLink";

/** Newest first; each links to its model card. */
export function VersionsList({ service, versions }: { service: string; versions: ModelVersion[] }) {
  if (versions.length === 0) return <p className="muted">No versions yet.</p>;
  return (
    <ul className="plain-list">
      {[...versions].reverse().map((v) => (
        <li key={v.version} data-testid="version-item">
          <VersionLink service={service} version={v.version} /> <StatusBadge value={v.status} />{" "}
          <span className="muted">
            {relativeTime(v.created_at)} · {bytes(v.artifact_bytes)}
          </span>
        </li>
      ))}
    </ul>
  );
}
