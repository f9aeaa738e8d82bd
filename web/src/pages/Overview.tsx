import { useOverview } from "../api/queries";
import { QueryError } from "../components/QueryError";
import { ServiceCard } from "../components/ServiceCard";

export function Overview() {
  const overview = useOverview();
  return (
    <>
      <h1>Services</h1>
      <QueryError error={overview.error} />
      {overview.isPending && !overview.isError && <p className="muted">Loading services…</p>}
      {overview.data?.length === 0 && (
        <div className="panel empty" data-testid="empty-services">
          <p>No services yet</p>
          <p className="muted">
            Start one with <code>modelci-e start CONFIG.yaml</code> or <code>./run demo</code>
          </p>
        </div>
      )}
      {overview.data && overview.data.length > 0 && (
        <div className="grid">
          {overview.data.map((service) => (
            <ServiceCard key={service.name} service={service} />
          ))}
        </div>
      )}
    </>
  );
}
