import { Link } from "react-router";
import type { ModelCard } from "../../api/types";
import { DASH, keyValues } from "../../lib/format";
import { KeyValueTable } from "../KeyValueTable";
import { VersionLink } from "../VersionLink";

export function CardTask({ card }: { card: ModelCard }) {
  const { task } = card;
  return (
    <section className="panel" data-testid="card-task" aria-labelledby="card-task-title">
      <h2 id="card-task-title">CL task</h2>
      <dl className="facts">
        <dt>Scenario</dt>
        <dd>
          {task.scenario ?? DASH}
          {task.scenario_reason && <span className="muted"> ({task.scenario_reason})</span>}
        </dd>
        <dt>Strategy</dt>
        <dd>{task.strategy ?? DASH}</dd>
        <dt>Loss</dt>
        <dd>{task.loss ?? DASH}</dd>
        <dt>Trigger</dt>
        <dd>{keyValues(task.trigger)}</dd>
        <dt>Parent version</dt>
        <dd>
          <VersionLink service={card.service} version={card.parent_version} />
        </dd>
        <dt>Base version</dt>
        <dd>
          <VersionLink service={card.service} version={card.base_version} />
        </dd>
        <dt>Job</dt>
        <dd>
          {card.job_id ? (
            <Link to={`/jobs/${encodeURIComponent(card.job_id)}`}>{card.job_id} (log)</Link>
          ) : (
            DASH
          )}
        </dd>
      </dl>
      <h3>Hyperparameters</h3>
      <KeyValueTable values={task.hyperparameters} empty="No hyperparameters recorded." />
    </section>
  );
}
