import { useSearchParams } from "react-router";
import { useJobs, useServices } from "../api/queries";
import type { JobStatus } from "../api/types";
import { JobsTable } from "../components/JobsTable";
import { QueryError } from "../components/QueryError";

const STATUSES: JobStatus[] = ["queued", "running", "succeeded", "failed", "cancelled"];

export function JobsPage() {
  // Filters live in the URL (#/jobs?service=x&status=y) so a filtered view can be shared.
  const [search, setSearch] = useSearchParams();
  const service = search.get("service") ?? "";
  const status = search.get("status") ?? "";
  const jobs = useJobs({ service: service || undefined, status: status || undefined, limit: 100 });
  const services = useServices();

  function setFilter(key: "service" | "status", value: string) {
    const next = new URLSearchParams(search);
    if (value) next.set(key, value);
    else next.delete(key);
    setSearch(next, { replace: true });
  }

  return (
    <>
      <h1>Jobs</h1>
      <div className="row filters">
        <label>
          Service{" "}
          <select
            value={service}
            onChange={(event) => setFilter("service", event.target.value)}
            data-testid="filter-service"
          >
            <option value="">all</option>
            {services.data?.map((s) => (
              <option key={s.name} value={s.name}>
                {s.name}
              </option>
            ))}
            {service && !services.data?.some((s) => s.name === service) && (
              <option value={service}>{service}</option>
            )}
          </select>
        </label>
        <label>
          Status{" "}
          <select
            value={status}
            onChange={(event) => setFilter("status", event.target.value)}
            data-testid="filter-status"
          >
            <option value="">all</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
      </div>
      <QueryError error={jobs.error} />
      {jobs.isPending && !jobs.isError && <p className="muted">Loading jobs…</p>}
      {jobs.data && (
        <section className="panel">
          <JobsTable jobs={jobs.data} />
        </section>
      )}
    </>
  );
}
