import { screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { JsonObject } from "../api/types";
import { jobOf } from "../test/fixtures";
import { renderApp } from "../test/render";

// The governor's account of a slo-aware job mid-run, as the server stores it on the job.
const SLO_AWARE: JsonObject = {
  policy: "slo-aware",
  state: "paced",
  steps: 412,
  waited_s: 0.0,
  paced_s: 3.21,
  paused_s: 1.4,
  training_s: 5.02,
  pauses: 2,
  changes: 9,
  baseline_p95_ms: 8.1,
  slo_p95_ms: 9.72,
  duty: 0.35,
  level_p95_ms: 9.4,
  readings: 40,
  breaches: 6,
  limits: { threads: 1, nice: 10 },
  signals: {
    p95_ms: 9.1,
    requests: 96,
    p50_ms: 4.2,
    p99_ms: 12.0,
    cpu_percent: 71.0,
    memory_percent: 40.2,
    gpu_percent: null,
    queue_depth: 0,
  },
};

const jobRoutes = (job: ReturnType<typeof jobOf>) => ({
  [`GET /api/jobs/${job.id}`]: job,
  [`GET /api/jobs/${job.id}/logs`]: [],
});

describe("Job page", () => {
  it("shows the scheduling policy's account and the queue's worker labels", async () => {
    renderApp("/jobs/j4", jobRoutes(jobOf({ queue: "modelci@eu+gpu", schedule: SLO_AWARE })));
    const section = await screen.findByTestId("job-schedule");
    expect(within(section).getByRole("heading", { name: "Scheduling" })).toBeInTheDocument();
    expect(within(section).getByTestId("schedule-policy")).toHaveTextContent("slo-aware");
    expect(within(section).getByTestId("schedule-state")).toHaveTextContent("paced");
    expect(within(section).getByText("412")).toBeInTheDocument();
    expect(within(section).getByTestId("schedule-time")).toHaveTextContent(
      "training 5.0 s · paced 3.2 s · paused 1.4 s · waited 0.0 s",
    );
    expect(within(section).getByTestId("schedule-pauses")).toHaveTextContent(/^2\b/);
    expect(within(section).getByTestId("schedule-pauses")).toHaveTextContent("9 state changes");
    expect(within(section).getByTestId("schedule-slo")).toHaveTextContent("9.72 ms");
    expect(within(section).getByTestId("schedule-slo")).toHaveTextContent(
      "level above it in 6 of 40 readings",
    );
    expect(within(section).getByTestId("schedule-level")).toHaveTextContent("9.4 ms");
    expect(within(section).getByTestId("schedule-baseline")).toHaveTextContent("8.1 ms");
    expect(within(section).getByTestId("schedule-duty")).toHaveTextContent("35.0%");
    expect(within(section).getByTestId("schedule-limits")).toHaveTextContent(
      "threads 1 · nice 10",
    );
    const signals = within(section).getByTestId("schedule-signals");
    expect(signals).toHaveTextContent("p95 9.1 ms over 96 requests · CPU 71% · queue depth 0");
    expect(signals).not.toHaveTextContent("GPU");
    // slo-aware has no off-peak windows.
    expect(within(section).queryByTestId("schedule-windows")).not.toBeInTheDocument();

    const queue = screen.getByTestId("job-queue");
    expect(queue).toHaveTextContent("modelci@eu+gpu");
    expect(within(queue).getByText("needs workers labelled eu, gpu")).toHaveClass("muted");
  });

  it("shows off-peak windows and dashes for what the governor has not reported", async () => {
    renderApp(
      "/jobs/j5",
      jobRoutes(
        jobOf({
          id: "j5",
          queue: "modelci",
          schedule: {
            policy: "off-peak",
            state: "waiting",
            steps: 0,
            waited_s: 12.34,
            paced_s: null,
            pauses: 0,
            windows: ["22:00-06:00", "12:00-13:00"],
            signals: null,
          },
        }),
      ),
    );
    const section = await screen.findByTestId("job-schedule");
    expect(within(section).getByTestId("schedule-state")).toHaveTextContent("waiting");
    expect(within(section).getByTestId("schedule-time")).toHaveTextContent(
      "training — · paced — · paused — · waited 12.3 s",
    );
    expect(within(section).getByTestId("schedule-windows")).toHaveTextContent(
      "22:00-06:00, 12:00-13:00",
    );
    expect(within(section).getByTestId("schedule-signals")).toHaveTextContent("—");
    expect(within(section).queryByTestId("schedule-slo")).not.toBeInTheDocument();
    expect(within(section).queryByTestId("schedule-duty")).not.toBeInTheDocument();
    expect(within(section).queryByTestId("schedule-limits")).not.toBeInTheDocument();
    // A queue without labels: any worker takes it, no note.
    expect(screen.getByTestId("job-queue")).toHaveTextContent(/^modelci$/);
  });

  it("has no scheduling section for a job without a schedule", async () => {
    renderApp("/jobs/j4", jobRoutes(jobOf({ queue: null, schedule: null })));
    await screen.findByTestId("job-status");
    expect(screen.queryByTestId("job-schedule")).not.toBeInTheDocument();
    expect(screen.getByTestId("job-queue")).toHaveTextContent("—");
  });

  it("reads records from before scheduling (no queue or schedule fields)", async () => {
    renderApp("/jobs/j4", jobRoutes(jobOf()));
    await screen.findByTestId("job-status");
    expect(screen.queryByTestId("job-schedule")).not.toBeInTheDocument();
    expect(screen.getByTestId("job-queue")).toHaveTextContent("—");
  });
});
