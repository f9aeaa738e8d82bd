import { Link, useParams } from "react-router";
import { useLineage } from "../api/queries";
import { LineageGraph } from "../components/lineage/LineageGraph";
import { LineageLegend } from "../components/lineage/LineageLegend";
import { LineageList } from "../components/lineage/LineageList";
import { QueryError } from "../components/QueryError";

export function LineagePage() {
  const { name = "" } = useParams();
  const lineage = useLineage(name);
  return (
    <>
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/">Services</Link> /{" "}
        <Link to={`/services/${encodeURIComponent(name)}`}>{name}</Link> / lineage
      </nav>
      <h1>
        {name} <span className="muted">lineage</span>
      </h1>
      <QueryError error={lineage.error} />
      {lineage.isPending && !lineage.isError && <p className="muted">Loading the lineage…</p>}
      {lineage.data?.length === 0 && <p className="muted">No versions yet.</p>}
      {lineage.data && lineage.data.length > 0 && (
        <>
          <section className="panel">
            <LineageLegend />
            <LineageGraph service={name} lineage={lineage.data} />
          </section>
          <section className="panel">
            <h2>Versions</h2>
            <LineageList service={name} lineage={lineage.data} />
          </section>
        </>
      )}
    </>
  );
}
