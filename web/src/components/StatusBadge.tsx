import type { ReactNode } from "react";

type Tone = "green" | "orange" | "blue" | "purple" | "grey" | "red";

// One colour vocabulary for service states, version statuses, job statuses and update outcomes.
const TONES: Record<string, Tone> = {
  healthy: "green",
  drifting: "orange",
  updating: "blue",
  validating: "purple",
  paused: "grey",
  active: "green",
  champion: "green",
  candidate: "purple",
  rejected: "red",
  rolled_back: "orange",
  retired: "grey",
  queued: "grey",
  running: "blue",
  succeeded: "green",
  failed: "red",
  cancelled: "grey",
  deployed: "green",
  validated: "purple",
  skipped: "grey",
  awaiting_approval: "purple",
  passed: "green",
  // Scheduling states of a job (queued, running and paused as above).
  waiting: "grey",
  paced: "orange",
};

interface Props {
  value: string;
  title?: string;
  testId?: string;
  children?: ReactNode;
}

export function StatusBadge({ value, title, testId, children }: Props) {
  const tone = TONES[value] ?? "grey";
  return (
    <span className={`badge badge-${tone}`} title={title} data-testid={testId} data-value={value}>
      {children ?? value.replaceAll("_", " ")}
    </span>
  );
}
