import { Link, useParams } from "react-router";
import { useJob } from "../api/queries";
import { CancelJob } from "../components/actions/CancelJob";
import { JobLog } from "../components/jobs/JobLog";
import { JobSchedule } from "../components/jobs/JobSchedule";
import { QueryError } from "../components/QueryError";
import { StatusBadge } from "../components/StatusBadge";
import { DASH, dateTime, duration, keyValues } from "../lib/format";
import { isFinished, jobDuration, queueLabels } from "../lib/jobs";

export function JobPage() {
  const { id = "" } = useParams();
  const job = useJob(id);
  const data = job.data;
  const labels = queueLabels(data?.queue);
  return (
    <>
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/jobs">Jobs</Link> / {id}
      </nav>
      <h1>
        Job <span className="mono">{id}</span>
      </h1>
      <QueryError error={job.error} />
      {job.isPending && !job.isError && <p className="muted">Loading the job…</p>}
      {data && (
        <section className="panel">
          <div className="row page-head">
            <StatusBadge value={data.status} testId="job-status" />
            <CancelJob job={data} />
          </div>
          <dl className="facts">
            <dt>Kind</dt>
            <dd>{data.kind}</dd>
            <dt>Service</dt>
            <dd>
              <Link to={`/services/${encodeURIComponent(data.service)}`}>{data.service}</Link>
            </dd>
            <dt>Trigger</dt>
            <dd>{keyValues(data.trigger)}</dd>
            <dt>Worker</dt>
            <dd>{data.worker ?? DASH}</dd>
            <dt>Queue</dt>
            <dd data-testid="job-queue">
              {data.queue ? <span className="mono">{data.queue}</span> : DASH}
              {labels.length > 0 && (
                <>
                  {" "}
                  <span className="muted">needs workers labelled {labels.join(", ")}</span>
                </>
              )}
            </dd>
            <dt>Created</dt>
            <dd>{dateTime(data.created_at)}</dd>
            <dt>Started</dt>
            <dd>{dateTime(data.started_at)}</dd>
            <dt>Finished</dt>
            <dd>{dateTime(data.finished_at)}</dd>
            <dt>Duration</dt>
            <dd>{duration(jobDuration(data))}</dd>
            {data.error && (
              <>
                <dt>Error</dt>
                <dd className="error">{data.error}</dd>
              </>
            )}
          </dl>
          <h3>Parameters</h3>
          <pre className="code">{JSON.stringify(data.params, null, 2)}</pre>
          {data.result && (
            <>
              <h3>Result</h3>
              <pre className="code">{JSON.stringify(data.result, null, 2)}</pre>
            </>
          )}
        </section>
      )}
      {data && <JobSchedule schedule={data.schedule} />}
      {data && (
        <section className="panel">
          <h2>Log</h2>
          <JobLog jobId={id} finished={isFinished(data.status)} />
        </section>
      )}
    </>
  );
}
