import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { JobSchedule } from "./JobSchedule";

describe("JobSchedule", () => {
  it("shows the slowdown budget, its cuts and the session's niceness of an slo-aware job", () => {
    render(
      <JobSchedule
        schedule={{
          policy: "slo-aware",
          state: "paced",
          steps: 113,
          training_s: 12.5,
          paced_s: 9.2,
          paused_s: 2.8,
          pauses: 113,
          max_slowdown: 2,
          budget_overrides: 112,
          slo_p95_ms: 6.077,
          limits: { threads: 1, nice: 10, autogroup_nice: 10 },
        }}
      />,
    );
    expect(screen.getByTestId("schedule-budget")).toHaveTextContent(
      "2x its training time 112 paces or pauses cut by it",
    );
    expect(screen.getByTestId("job-schedule")).toHaveTextContent(
      "threads 1 · nice 10 · session nice 10",
    );
  });

  it("has no budget row for a policy without one", () => {
    render(
      <JobSchedule
        schedule={{ policy: "immediate", state: "running", steps: 3, max_slowdown: null }}
      />,
    );
    expect(screen.getByTestId("schedule-policy")).toHaveTextContent("immediate");
    expect(screen.queryByTestId("schedule-budget")).toBeNull();
  });
});
