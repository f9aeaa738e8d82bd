import type { Traffic } from "../../api/types";
import { percent } from "../../lib/format";

export function TrafficSplit({ traffic }: { traffic: Traffic }) {
  const { champion, canary, shadow } = traffic;
  return (
    <div data-testid="traffic-split">
      {champion || canary ? (
        <div className="split-bar" role="img" aria-label="Traffic split">
          {champion && (
            <span className="split-champion" style={{ width: `${champion.share * 100}%` }} />
          )}
          {canary && <span className="split-canary" style={{ width: `${canary.share * 100}%` }} />}
        </div>
      ) : (
        <p className="muted">Nothing is serving yet.</p>
      )}
      <ul className="split-legend">
        {champion && (
          <li>
            <span className="key key-champion" /> champion v{champion.version}:{" "}
            {percent(champion.share, 0)}
          </li>
        )}
        {canary && (
          <li>
            <span className="key key-canary" /> canary v{canary.version}: {percent(canary.share, 0)}
          </li>
        )}
        {shadow && (
          <li>
            <span className="key key-shadow" /> shadow v{shadow.version}: gets a copy of requests,
            answers nobody
          </li>
        )}
      </ul>
    </div>
  );
}
