import { Link } from "react-router";
import { DASH } from "../lib/format";

/** "v3" linking to that version's model card; a dash when there is no version. */
export function VersionLink({ service, version }: { service: string; version: number | null }) {
  if (version == null) return <>{DASH}</>;
  return (
    <Link to={`/services/${encodeURIComponent(service)}/versions/${version}`}>v{version}</Link>
  );
}
