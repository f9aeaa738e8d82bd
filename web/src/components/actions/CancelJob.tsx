import { api } from "../../api/endpoints";
import { useAction } from "../../api/queries";
import type { Job } from "../../api/types";
import { useHasRole } from "../../auth/me";
import { ErrorMessage } from "../ErrorMessage";

/** Engineers+ ask a queued or running job to stop; the worker honours it at its next check. */
export function CancelJob({ job }: { job: Job }) {
  const allowed = useHasRole("engineer");
  const cancel = useAction(() => api.cancelJob(job.id));
  if (!allowed || (job.status !== "queued" && job.status !== "running")) return null;
  if (job.cancel_requested) return <span className="muted">Cancel requested…</span>;
  return (
    <>
      <button
        type="button"
        className="danger"
        disabled={cancel.isPending}
        onClick={() => cancel.mutate()}
        data-testid="action-cancel"
      >
        Cancel
      </button>
      {cancel.isError && <ErrorMessage error={cancel.error} />}
    </>
  );
}
