import type { UpdateEntry } from "../../api/types";
import { UpdateRow } from "./UpdateRow";

export function UpdateHistory({ service, entries }: { service: string; entries: UpdateEntry[] }) {
  if (entries.length === 0) return <p className="muted">No update jobs yet.</p>;
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th>When</th>
            <th>Trigger</th>
            <th>Scenario</th>
            <th>Strategy</th>
            <th>Version</th>
            <th>Outcome</th>
            <th className="num">Duration</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((entry) => (
            <UpdateRow key={entry.job_id} service={service} entry={entry} />
          ))}
        </tbody>
      </table>
    </div>
  );
}
