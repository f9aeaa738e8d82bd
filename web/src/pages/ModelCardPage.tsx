import { Link, useParams } from "react-router";
import { useCard } from "../api/queries";
import { Approval } from "../components/actions/Approval";
import { Rollback } from "../components/actions/Rollback";
import { CardBenchmark } from "../components/card/CardBenchmark";
import { CardData } from "../components/card/CardData";
import { CardDeployments } from "../components/card/CardDeployments";
import { CardTask } from "../components/card/CardTask";
import { CardValidation } from "../components/card/CardValidation";
import { QueryError } from "../components/QueryError";
import { StatusBadge } from "../components/StatusBadge";
import { dateTime } from "../lib/format";

export function ModelCardPage() {
  const { name = "", version: raw = "" } = useParams();
  const version = Number(raw);
  const card = useCard(name, version);
  const servicePath = `/services/${encodeURIComponent(name)}`;

  return (
    <>
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/">Services</Link> / <Link to={servicePath}>{name}</Link> / v{raw}
      </nav>
      <h1>
        {name} v{raw} <span className="muted">model card</span>
      </h1>
      <QueryError error={card.error} />
      {card.isPending && !card.isError && <p className="muted">Loading the model card…</p>}
      {card.data && (
        <>
          <div className="row page-head">
            <StatusBadge value={card.data.status} testId="card-status" />
            {card.data.awaiting_approval && <StatusBadge value="awaiting_approval" />}
            <span className="muted">created {dateTime(card.data.created_at)}</span>
            {card.data.artifact_sha256 && (
              <span className="muted mono" title={card.data.artifact_sha256}>
                sha256 {card.data.artifact_sha256.slice(0, 12)}
              </span>
            )}
            <Link to={`${servicePath}/lineage`}>Lineage graph</Link>
          </div>
          <div className="row actions">
            {card.data.awaiting_approval && <Approval service={name} version={version} />}
            {(card.data.status === "retired" || card.data.status === "rolled_back") && (
              <Rollback service={name} versions={[version]} />
            )}
          </div>
          <div className="card-grid">
            <CardTask card={card.data} />
            <CardBenchmark card={card.data} />
            <CardData card={card.data} />
            <CardValidation card={card.data} />
            <CardDeployments card={card.data} />
          </div>
        </>
      )}
    </>
  );
}
