import { useState } from "react";
import { api } from "../../api/endpoints";
import { useAction } from "../../api/queries";
import { useHasRole } from "../../auth/me";
import { ConfirmDialog } from "../ConfirmDialog";
import { ErrorMessage } from "../ErrorMessage";

interface Props {
  service: string;
  /** Versions that can be rolled back to (not the champion; retired or rolled back). */
  versions: number[];
}

/** Engineers+ roll the service back to an earlier version, after confirming. */
export function Rollback({ service, versions }: Props) {
  const allowed = useHasRole("engineer");
  const [picked, setPicked] = useState<number | null>(null);
  const [confirming, setConfirming] = useState(false);
  const rollback = useAction((version: number) => api.rollback(service, version));
  if (!allowed || versions.length === 0) return null;

  const target =
    picked !== null && versions.includes(picked) ? picked : versions[versions.length - 1]!;
  return (
    <span className="row">
      {versions.length > 1 && (
        <select
          aria-label="Version to roll back to"
          value={target}
          onChange={(event) => setPicked(Number(event.target.value))}
          data-testid="rollback-version"
        >
          {versions.map((version) => (
            <option key={version} value={version}>
              v{version}
            </option>
          ))}
        </select>
      )}
      <button
        type="button"
        disabled={rollback.isPending}
        onClick={() => setConfirming(true)}
        data-testid="action-rollback"
      >
        Roll back to v{target}
      </button>
      {rollback.isSuccess && (
        <span className="notice" role="status">
          Rolled back: v{rollback.data.version} is serving
        </span>
      )}
      {rollback.isError && <ErrorMessage error={rollback.error} />}
      {confirming && (
        <ConfirmDialog
          title={`Roll back ${service}?`}
          confirmLabel="Confirm rollback"
          onCancel={() => setConfirming(false)}
          onConfirm={() => {
            setConfirming(false);
            rollback.mutate(target);
          }}
        >
          <p>
            v{target} will replace the current champion on the serving engine. Traffic switches at
            once.
          </p>
        </ConfirmDialog>
      )}
    </span>
  );
}
