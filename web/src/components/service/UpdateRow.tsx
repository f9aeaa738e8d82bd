import { useState } from "react";
import { Link } from "react-router";
import type { UpdateEntry } from "../../api/types";
import { DASH, dateTime, duration, relativeTime } from "../../lib/format";
import { GatesTable } from "../GatesTable";
import { OutcomeBadge } from "../OutcomeBadge";
import { VersionLink } from "../VersionLink";

const COLUMNS = 7;

/** One update job; the row expands to the gates its challenger was validated with. */
export function UpdateRow({ service, entry }: { service: string; entry: UpdateEntry }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <tr
        data-testid="update-row"
        data-job={entry.job_id}
        className={open ? "expanded" : undefined}
      >
        <td className="nowrap">
          <button
            type="button"
            className="link-button"
            aria-expanded={open}
            aria-label={`${open ? "Hide" : "Show"} gates of job ${entry.job_id}`}
            onClick={() => setOpen(!open)}
          >
            {open ? "▾" : "▸"}
          </button>{" "}
          <span title={dateTime(entry.created_at)}>{relativeTime(entry.created_at)}</span>
        </td>
        <td title={entry.reason ?? undefined}>{entry.trigger_kind ?? entry.kind}</td>
        <td>{entry.scenario ?? DASH}</td>
        <td>{entry.strategy ?? DASH}</td>
        <td>
          <VersionLink service={service} version={entry.version} />
        </td>
        <td>
          <OutcomeBadge
            status={entry.status}
            outcome={entry.outcome}
            failedGates={entry.failed_gates}
            error={entry.error}
          />
        </td>
        <td className="num">{duration(entry.duration_s)}</td>
      </tr>
      {open && (
        <tr className="detail-row">
          <td colSpan={COLUMNS}>
            <p>
              Job <Link to={`/jobs/${encodeURIComponent(entry.job_id)}`}>{entry.job_id}</Link> (
              {entry.kind}){entry.reason && <> · reason: {entry.reason}</>}
            </p>
            {entry.error && <p className="error">{entry.error}</p>}
            <GatesTable gates={entry.gates} />
          </td>
        </tr>
      )}
    </>
  );
}
