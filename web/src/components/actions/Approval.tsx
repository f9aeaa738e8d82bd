import { useState } from "react";
import { Link } from "react-router";
import { api } from "../../api/endpoints";
import { useAction } from "../../api/queries";
import { useHasRole } from "../../auth/me";
import { ErrorMessage } from "../ErrorMessage";

/** Engineers+ approve (promote) or reject a validated candidate that waits for a human. */
export function Approval({ service, version }: { service: string; version: number }) {
  const allowed = useHasRole("engineer");
  const [reason, setReason] = useState("");
  const approve = useAction((why: string) => api.approve(service, version, why));
  const reject = useAction((why: string) => api.reject(service, version, why));
  if (!allowed) return null;

  const busy = approve.isPending || reject.isPending;
  return (
    <span className="row">
      <input
        aria-label={`Reason for approving or rejecting v${version}`}
        placeholder="Reason (optional)"
        value={reason}
        maxLength={500}
        onChange={(event) => setReason(event.target.value)}
      />
      <button
        type="button"
        disabled={busy}
        onClick={() => approve.mutate(reason)}
        data-testid="action-approve"
      >
        Approve v{version}
      </button>
      <button
        type="button"
        className="danger"
        disabled={busy}
        onClick={() => reject.mutate(reason)}
        data-testid="action-reject"
      >
        Reject v{version}
      </button>
      {approve.isSuccess && (
        <span className="notice" role="status">
          Approved: promotion <Link to={`/jobs/${encodeURIComponent(approve.data.id)}`}>job</Link>{" "}
          queued
        </span>
      )}
      {reject.isSuccess && (
        <span className="notice" role="status">
          Rejected v{version}
        </span>
      )}
      {approve.isError && <ErrorMessage error={approve.error} />}
      {reject.isError && <ErrorMessage error={reject.error} />}
    </span>
  );
}
