import { useReachable } from "../api/connection";

/** Shown while the last request could not reach the server; polling pages recover by themselves. */
export function UnreachableBanner({ onRetry }: { onRetry: () => void }) {
  if (useReachable()) return null;
  return (
    <div className="banner" role="alert" data-testid="unreachable">
      <span>Cannot reach the CL server. Is it running?</span>
      <button type="button" onClick={onRetry}>
        Retry
      </button>
    </div>
  );
}
