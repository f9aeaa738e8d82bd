import { api } from "../../api/endpoints";
import { useAction } from "../../api/queries";
import type { ServiceStatus } from "../../api/types";
import { useHasRole } from "../../auth/me";
import { ErrorMessage } from "../ErrorMessage";

export function PauseResume({ service, status }: { service: string; status: ServiceStatus }) {
  const allowed = useHasRole("engineer");
  const change = useAction((next: ServiceStatus) => api.setServiceStatus(service, next));
  if (!allowed) return null;
  return (
    <>
      {status === "paused" ? (
        <button
          type="button"
          disabled={change.isPending}
          onClick={() => change.mutate("active")}
          data-testid="action-resume"
        >
          Resume
        </button>
      ) : (
        <button
          type="button"
          disabled={change.isPending}
          onClick={() => change.mutate("paused")}
          data-testid="action-pause"
        >
          Pause
        </button>
      )}
      {change.isError && <ErrorMessage error={change.error} />}
    </>
  );
}
