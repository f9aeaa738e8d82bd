import { Link, useParams, useSearchParams } from "react-router";
import { ApiError } from "../api/client";
import {
  useAnnotations,
  useJobs,
  useOverview,
  useTimeline,
  useTraffic,
  useUpdates,
  useVersions,
} from "../api/queries";
import type { ModelVersion, UpdateEntry } from "../api/types";
import { Approval } from "../components/actions/Approval";
import { PauseResume } from "../components/actions/PauseResume";
import { Rollback } from "../components/actions/Rollback";
import { TriggerUpdate } from "../components/actions/TriggerUpdate";
import { JobsTable } from "../components/JobsTable";
import { QueryError } from "../components/QueryError";
import { AccuracyChart } from "../components/service/AccuracyChart";
import { AnnotationPanel } from "../components/service/AnnotationPanel";
import { RANGES, RangeSelector } from "../components/service/RangeSelector";
import { TrafficSplit } from "../components/service/TrafficSplit";
import { UpdateHistory } from "../components/service/UpdateHistory";
import { VersionsList } from "../components/service/VersionsList";
import { StatusBadge } from "../components/StatusBadge";
import { VersionLink } from "../components/VersionLink";

const DEFAULT_MINUTES = 60;

/** Candidates whose update job stopped at "awaiting_approval" and that are still undecided. */
function awaitingApproval(updates: UpdateEntry[], versions: ModelVersion[]): number[] {
  const candidates = new Set(
    versions.filter((v) => v.status === "candidate").map((v) => v.version),
  );
  const waiting = updates
    .filter(
      (u) => u.outcome === "awaiting_approval" && u.version !== null && candidates.has(u.version),
    )
    .map((u) => u.version as number);
  return [...new Set(waiting)];
}

function rollbackTargets(versions: ModelVersion[], champion: number | null): number[] {
  return versions
    .filter((v) => (v.status === "retired" || v.status === "rolled_back") && v.version !== champion)
    .map((v) => v.version);
}

export function ServicePage() {
  const { name = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const asked = Number(search.get("minutes"));
  const minutes = RANGES.some((r) => r.minutes === asked) ? asked : DEFAULT_MINUTES;

  const overview = useOverview();
  const timeline = useTimeline(name, minutes);
  const updates = useUpdates(name);
  const traffic = useTraffic(name);
  const versions = useVersions(name);
  const jobs = useJobs({ service: name, limit: 10 });
  const annotations = useAnnotations(name);
  // 409: the service has no annotator, so no panel (any other error is shown).
  const noAnnotator = annotations.error instanceof ApiError && annotations.error.status === 409;

  const service = overview.data?.find((s) => s.name === name);
  const path = `/services/${encodeURIComponent(name)}`;

  return (
    <>
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/">Services</Link> / {name}
      </nav>
      <h1>{name}</h1>
      <QueryError error={overview.error} />
      {overview.data && !service && (
        <p className="error" data-testid="error-message">
          There is no service named “{name}”.
        </p>
      )}
      {service && (
        <section className="panel">
          <div className="row page-head">
            <StatusBadge
              value={service.state}
              title={service.state_detail}
              testId="service-state"
            />
            <span data-testid="service-champion">
              champion <VersionLink service={name} version={service.champion_version} />
            </span>
            <span className="muted">
              {service.engine_kind} · {service.model_name}
            </span>
            <span className="muted">{service.state_detail}</span>
          </div>
          <div className="row actions">
            <TriggerUpdate service={name} />
            <PauseResume service={name} status={service.status} />
            {versions.data && (
              <Rollback
                service={name}
                versions={rollbackTargets(versions.data, service.champion_version)}
              />
            )}
          </div>
          {updates.data &&
            versions.data &&
            awaitingApproval(updates.data, versions.data).map((version) => (
              <div key={version} className="row actions">
                <span>
                  <VersionLink service={name} version={version} /> passed validation and awaits
                  approval.
                </span>
                <Approval service={name} version={version} />
              </div>
            ))}
        </section>
      )}

      <section className="panel">
        <div className="row spread">
          <h2>Accuracy and drift</h2>
          <RangeSelector
            value={minutes}
            onChange={(m) => setSearch({ minutes: String(m) }, { replace: true })}
          />
        </div>
        <QueryError error={timeline.error} />
        {timeline.data && <AccuracyChart timeline={timeline.data} minutes={minutes} />}
      </section>

      <div className="grid two">
        <section className="panel">
          <h2>Traffic split</h2>
          <QueryError error={traffic.error} />
          {traffic.data && <TrafficSplit traffic={traffic.data} />}
        </section>
        <section className="panel">
          <div className="row spread">
            <h2>Versions</h2>
            <Link to={`${path}/lineage`}>Lineage graph</Link>
          </div>
          <QueryError error={versions.error} />
          {versions.data && <VersionsList service={name} versions={versions.data} />}
        </section>
      </div>

      {(annotations.data || (annotations.error && !noAnnotator)) && (
        <section className="panel">
          <h2>Annotation</h2>
          <QueryError error={noAnnotator ? null : annotations.error} />
          {annotations.data && <AnnotationPanel status={annotations.data} />}
        </section>
      )}

      <section className="panel">
        <h2>Update history</h2>
        <QueryError error={updates.error} />
        {updates.data && <UpdateHistory service={name} entries={updates.data} />}
      </section>

      <section className="panel">
        <div className="row spread">
          <h2>Recent jobs</h2>
          <Link to={`/jobs?service=${encodeURIComponent(name)}`}>All jobs of {name}</Link>
        </div>
        <QueryError error={jobs.error} />
        {jobs.data && <JobsTable jobs={jobs.data} />}
      </section>
    </>
  );
}
