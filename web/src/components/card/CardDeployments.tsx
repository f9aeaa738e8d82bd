import type { ModelCard } from "../../api/types";
import { DeploymentsTable } from "../DeploymentsTable";

export function CardDeployments({ card }: { card: ModelCard }) {
  return (
    <section
      className="panel wide"
      data-testid="card-deployments"
      aria-labelledby="card-deployments-title"
    >
      <h2 id="card-deployments-title">Deployment events</h2>
      <DeploymentsTable deployments={card.deployments} />
    </section>
  );
}
