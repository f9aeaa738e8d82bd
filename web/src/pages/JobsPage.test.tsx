import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { jobOf } from "../test/fixtures";
import { renderApp } from "../test/render";

describe("Jobs", () => {
  it("lists jobs, filters by status and opens a job", async () => {
    const { requests } = renderApp("/jobs", {
      "GET /api/jobs": [
        jobOf(),
        jobOf({ id: "j3", status: "succeeded", finished_at: "2025-11-22T10:01:05+00:00" }),
      ],
      "GET /api/services": [{ name: "digits" }],
      "GET /api/jobs/j3": jobOf({ id: "j3", status: "succeeded" }),
      "GET /api/jobs/j3/logs": [],
    });
    const rows = await screen.findAllByTestId("job-row");
    expect(rows).toHaveLength(2);
    expect(rows[1]).toHaveTextContent("succeeded");
    expect(rows[1]).toHaveTextContent("1 min 5 s");

    await userEvent.selectOptions(screen.getByTestId("filter-status"), "failed");
    await waitFor(() =>
      expect(
        requests.some((r) => r.path === "/api/jobs" && r.search.get("status") === "failed"),
      ).toBe(true),
    );

    const filtered = await screen.findAllByTestId("job-row");
    await userEvent.click(within(filtered[1]!).getByText("cl_update"));
    expect(await screen.findByTestId("job-status")).toHaveTextContent("succeeded");
    expect(screen.getByTestId("job-log")).toBeInTheDocument();
  });

  it("shows Cancel to engineers while the job runs", async () => {
    const routes = {
      "GET /api/jobs/j4": jobOf(),
      "GET /api/jobs/j4/logs": [],
      "POST /api/jobs/j4/cancel": jobOf({ cancel_requested: true }),
    };
    const { requests } = renderApp("/jobs/j4", routes);
    await userEvent.click(await screen.findByTestId("action-cancel"));
    await waitFor(() =>
      expect(requests.some((r) => r.method === "POST" && r.path === "/api/jobs/j4/cancel")).toBe(
        true,
      ),
    );
  });

  it("hides Cancel from researchers", async () => {
    renderApp(
      "/jobs/j4",
      { "GET /api/jobs/j4": jobOf(), "GET /api/jobs/j4/logs": [] },
      { role: "researcher" },
    );
    await screen.findByTestId("job-status");
    expect(screen.queryByTestId("action-cancel")).not.toBeInTheDocument();
  });
});
