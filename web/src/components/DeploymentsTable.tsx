import type { Deployment } from "../api/types";
import { bytes, dateTime, versionLabel, DASH } from "../lib/format";
import { StatusBadge } from "./StatusBadge";

export function DeploymentsTable({ deployments }: { deployments: Deployment[] }) {
  if (deployments.length === 0) return <p className="muted">No deployment events.</p>;
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th>Time</th>
            <th>Action</th>
            <th>Version</th>
            <th>Previous</th>
            <th>Status</th>
            <th className="num">Bytes</th>
            <th>Actor</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>
          {deployments.map((event) => (
            <tr key={event.id} data-testid="deployment-row">
              <td className="nowrap">{dateTime(event.created_at)}</td>
              <td>{event.action}</td>
              <td>{versionLabel(event.version)}</td>
              <td>{versionLabel(event.previous_version)}</td>
              <td>
                <StatusBadge value={event.status} />
              </td>
              <td className="num">{bytes(event.bytes_shipped)}</td>
              <td>{event.actor ?? DASH}</td>
              <td>{event.detail || DASH}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
