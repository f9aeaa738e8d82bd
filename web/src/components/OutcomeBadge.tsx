import type { JobStatus } from "../api/types";
import { StatusBadge } from "./StatusBadge";

interface Props {
  status: JobStatus;
  outcome: string | null;
  failedGates?: string[];
  error?: string | null;
}

/** What an update job came to: its outcome once it has one, else its job status. */
export function OutcomeBadge({ status, outcome, failedGates = [], error }: Props) {
  if (status === "failed") {
    return (
      <span className="outcome">
        <StatusBadge value="failed" />
        {error && (
          <span className="outcome-note" title={error}>
            {error}
          </span>
        )}
      </span>
    );
  }
  // While a job is pending or was cancelled its status says it all; once done, its outcome.
  const value =
    status === "queued" || status === "running" || status === "cancelled"
      ? status
      : (outcome ?? status);
  return (
    <span className="outcome">
      <StatusBadge value={value} />
      {value === "rejected" && failedGates.length > 0 && (
        <span className="outcome-note" title={failedGates.join(", ")}>
          {failedGates.join(", ")}
        </span>
      )}
    </span>
  );
}
