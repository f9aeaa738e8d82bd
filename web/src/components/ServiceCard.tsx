import { Link } from "react-router";
import type { ServiceOverview } from "../api/types";
import { DASH, num, percent, relativeTime, versionLabel } from "../lib/format";
import { OutcomeBadge } from "./OutcomeBadge";
import { Sparkline } from "./Sparkline";
import { StatusBadge } from "./StatusBadge";

export function ServiceCard({ service }: { service: ServiceOverview }) {
  const update = service.last_update;
  return (
    <article className="panel service-card" data-testid="service-row" data-service={service.name}>
      <header className="service-card-head">
        <h2>
          <Link to={`/services/${encodeURIComponent(service.name)}`}>{service.name}</Link>
        </h2>
        <StatusBadge value={service.state} title={service.state_detail} testId="service-state" />
      </header>
      {service.description && <p className="muted">{service.description}</p>}
      <dl className="facts">
        <dt>Engine</dt>
        <dd>
          {service.engine_kind} · {service.model_name}
        </dd>
        <dt>Champion</dt>
        <dd data-testid="champion-version">{versionLabel(service.champion_version)}</dd>
        <dt>Accuracy</dt>
        <dd data-testid="accuracy">
          {percent(service.accuracy)}
          {service.accuracy !== null && (
            <span className="muted"> (n={num(service.accuracy_count)})</span>
          )}
        </dd>
        <dt>Drift</dt>
        <dd>
          <Sparkline points={service.drift} />
        </dd>
        <dt>Last update</dt>
        <dd>
          {update ? (
            <>
              <Link to={`/jobs/${encodeURIComponent(update.job_id)}`}>
                <OutcomeBadge status={update.status} outcome={update.outcome} />
              </Link>{" "}
              <span className="muted">{relativeTime(update.finished_at)}</span>
            </>
          ) : (
            <span className="muted">none yet</span>
          )}
        </dd>
        <dt>Classes ({service.classes.length})</dt>
        <dd className="chips">
          {service.classes.length === 0 && <span className="muted">{DASH}</span>}
          {service.classes.map((name) => (
            <span key={name} className="chip">
              {name}
            </span>
          ))}
        </dd>
      </dl>
      <footer className="service-card-foot">
        <span className="muted">{service.versions} versions</span>
        {service.annotator_url && (
          <a
            href={service.annotator_url}
            target="_blank"
            rel="noopener"
            data-testid="annotator-link"
          >
            Label Studio project ↗
          </a>
        )}
      </footer>
    </article>
  );
}
