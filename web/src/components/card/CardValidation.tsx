import type { ModelCard } from "../../api/types";
import { GatesTable } from "../GatesTable";
import { StatusBadge } from "../StatusBadge";
import { VersionLink } from "../VersionLink";

export function CardValidation({ card }: { card: ModelCard }) {
  const { validation } = card;
  return (
    <section
      className="panel"
      data-testid="card-validation"
      aria-labelledby="card-validation-title"
    >
      <h2 id="card-validation-title">Validation</h2>
      {validation ? (
        <>
          <p>
            <StatusBadge value={validation.passed ? "passed" : "failed"} testId="validation-result">
              {validation.passed ? "passed" : "failed"}
            </StatusBadge>{" "}
            against champion{" "}
            <VersionLink service={card.service} version={validation.champion_version} />
          </p>
          <GatesTable gates={validation.gates} />
        </>
      ) : (
        <p className="muted">This version was not validated (a base version or a skipped job).</p>
      )}
    </section>
  );
}
