import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api } from "../../api/endpoints";
import { useAction } from "../../api/queries";
import { useHasRole } from "../../auth/me";
import { ErrorMessage } from "../ErrorMessage";

/** Engineers+ request a CL update; the server answers 202 with what it did about it. */
export function TriggerUpdate({ service }: { service: string }) {
  const allowed = useHasRole("engineer");
  const [reason, setReason] = useState("");
  const update = useAction((why: string) => api.requestUpdate(service, why));
  if (!allowed) return null;

  function submit(event: FormEvent) {
    event.preventDefault();
    update.mutate(reason, { onSuccess: () => setReason("") });
  }

  return (
    <form className="row" onSubmit={submit}>
      <input
        aria-label="Reason for the update"
        placeholder="Reason (optional)"
        value={reason}
        maxLength={500}
        onChange={(event) => setReason(event.target.value)}
      />
      <button type="submit" disabled={update.isPending} data-testid="action-update">
        Trigger update
      </button>
      {update.data && (
        <span className="notice" role="status">
          {update.data.detail}
          {update.data.job_id && (
            <>
              {" "}
              <Link to={`/jobs/${encodeURIComponent(update.data.job_id)}`}>
                job {update.data.job_id}
              </Link>
            </>
          )}
        </span>
      )}
      {update.isError && <ErrorMessage error={update.error} />}
    </form>
  );
}
