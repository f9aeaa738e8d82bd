import { Link, useNavigate } from "react-router";
import type { Job } from "../api/types";
import { DASH, dateTime, duration, relativeTime } from "../lib/format";
import { jobDuration } from "../lib/jobs";
import { StatusBadge } from "./StatusBadge";

export function JobsTable({ jobs }: { jobs: Job[] }) {
  const navigate = useNavigate();
  if (jobs.length === 0) return <p className="muted">No jobs.</p>;
  return (
    <div className="table-wrap">
      <table className="clickable">
        <thead>
          <tr>
            <th>Job</th>
            <th>Kind</th>
            <th>Service</th>
            <th>Status</th>
            <th>Created</th>
            <th className="num">Duration</th>
            <th>Trigger</th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((job) => {
            const path = `/jobs/${encodeURIComponent(job.id)}`;
            return (
              // The whole row opens the job; the link in it serves keyboards and middle-clicks.
              <tr
                key={job.id}
                data-testid="job-row"
                data-job={job.id}
                onClick={() => navigate(path)}
              >
                <td className="mono nowrap">
                  <Link to={path} onClick={(event) => event.stopPropagation()}>
                    {job.id}
                  </Link>
                </td>
                <td>{job.kind}</td>
                <td>{job.service}</td>
                <td>
                  <StatusBadge value={job.status} title={job.error ?? undefined} />
                  {job.cancel_requested && job.status === "running" && (
                    <span className="outcome-note">cancelling</span>
                  )}
                </td>
                <td className="nowrap" title={dateTime(job.created_at)}>
                  {relativeTime(job.created_at)}
                </td>
                <td className="num">{duration(jobDuration(job))}</td>
                <td>{typeof job.trigger?.kind === "string" ? job.trigger.kind : DASH}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
