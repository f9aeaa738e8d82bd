import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { Role } from "../api/types";
import { apiError, type Routes } from "../test/api";
import { jobOf, overviewOf, timeline, traffic, updates, versions } from "../test/fixtures";
import { renderApp } from "../test/render";

const ACTIONS = [
  "action-update",
  "action-pause",
  "action-rollback",
  "action-approve",
  "action-reject",
];

function serviceRoutes(over: Routes = {}): Routes {
  return {
    "GET /api/overview": [overviewOf()],
    "GET /api/services/digits/timeline": timeline,
    "GET /api/services/digits/updates": updates,
    "GET /api/services/digits/traffic": traffic,
    "GET /api/services/digits/versions": versions,
    "GET /api/jobs": [jobOf()],
    "GET /api/services/digits/annotations": apiError(
      409,
      "service 'digits' has no annotation loop (annotator.kind is 'none')",
      "no_annotator",
    ),
    ...over,
  };
}

async function renderService(role: Role, over: Routes = {}) {
  const view = renderApp("/services/digits", serviceRoutes(over), { role });
  await screen.findAllByTestId("update-row");
  await screen.findAllByTestId("version-item");
  return view;
}

describe("Service page", () => {
  it("shows champion, chart, traffic split, update history and versions", async () => {
    const { requests } = await renderService("viewer");
    expect(screen.getByTestId("service-champion")).toHaveTextContent("champion v3");
    expect(screen.getByTestId("accuracy-chart")).toBeInTheDocument();
    expect(screen.getByTestId("traffic-split")).toHaveTextContent("champion v3: 90%");
    expect(screen.getByTestId("traffic-split")).toHaveTextContent("canary v4: 10%");
    const row = screen.getByTestId("update-row");
    expect(row).toHaveTextContent("drift");
    expect(row).toHaveTextContent("awaiting approval");
    expect(within(row).getByRole("link", { name: "v4" })).toHaveAttribute(
      "href",
      "/services/digits/versions/4",
    );
    expect(screen.queryByTestId("gate-row")).not.toBeInTheDocument();
    await userEvent.click(within(row).getByRole("button", { name: /Show gates/ }));
    expect(screen.getByTestId("gate-row")).toHaveTextContent("accuracy0.930.9pass");
    expect(screen.getAllByTestId("job-row")).toHaveLength(1);

    await userEvent.click(screen.getByRole("button", { name: "6 h" }));
    await waitFor(() =>
      expect(
        requests.some((r) => r.path.endsWith("/timeline") && r.search.get("minutes") === "360"),
      ).toBe(true),
    );
  });

  it.each<Role>(["viewer", "researcher"])("renders no actions for a %s", async (role) => {
    await renderService(role);
    for (const id of ACTIONS) expect(screen.queryByTestId(id)).not.toBeInTheDocument();
  });

  it("renders every action for an engineer", async () => {
    await renderService("engineer");
    for (const id of ACTIONS) expect(screen.getByTestId(id)).toBeInTheDocument();
    expect(screen.queryByTestId("action-resume")).not.toBeInTheDocument();
  });

  it("offers Resume instead of Pause for a paused service", async () => {
    await renderService("admin", {
      "GET /api/overview": [overviewOf({ status: "paused", state: "paused" })],
    });
    expect(screen.getByTestId("action-resume")).toBeInTheDocument();
    expect(screen.queryByTestId("action-pause")).not.toBeInTheDocument();
  });

  it("rolls back after confirmation and refetches the champion", async () => {
    let champion = 3;
    const { requests } = await renderService("engineer", {
      "GET /api/overview": () => [overviewOf({ champion_version: champion })],
      "POST /api/services/digits/rollback": () => {
        champion = 2;
        return { id: "d9", version: 2 };
      },
    });
    // Targets are the retired/rolled-back versions; the newest is preselected.
    expect(screen.getByTestId("action-rollback")).toHaveTextContent("Roll back to v2");
    await userEvent.click(screen.getByTestId("action-rollback"));
    const dialog = screen.getByRole("dialog");
    await userEvent.click(within(dialog).getByTestId("confirm-yes"));

    await waitFor(() =>
      expect(screen.getByTestId("service-champion")).toHaveTextContent("champion v2"),
    );
    const post = requests.find((r) => r.method === "POST");
    expect(post?.body).toEqual({ version: 2 });
  });

  it("shows a 409 from an action inline", async () => {
    await renderService("engineer", {
      "POST /api/services/digits/update": apiError(409, "a job is running", "job_conflict"),
    });
    await userEvent.click(screen.getByTestId("action-update"));
    expect(await screen.findByTestId("error-message")).toHaveTextContent("a job is running (409)");
  });

  it("shows the server's message for a 403", async () => {
    await renderService("engineer", {
      "PATCH /api/services/digits": apiError(403, "engineer role required", "forbidden"),
    });
    await userEvent.click(screen.getByTestId("action-pause"));
    expect(await screen.findByTestId("error-message")).toHaveTextContent(
      "Your role cannot do this (403): engineer role required",
    );
  });

  it("reports a manual update request with its job", async () => {
    const { requests } = await renderService("engineer", {
      "POST /api/services/digits/update": {
        status: "submitted",
        job_id: "j9",
        detail: "update job submitted",
      },
    });
    await userEvent.type(
      screen.getByRole("textbox", { name: "Reason for the update" }),
      "new labels",
    );
    await userEvent.click(screen.getByTestId("action-update"));
    expect(await screen.findByText("update job submitted")).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "job j9" })).toHaveAttribute("href", "/jobs/j9");
    expect(requests.find((r) => r.method === "POST")?.body).toEqual({ reason: "new labels" });
  });
  it("shows no annotation panel for a service without an annotator", async () => {
    await renderService("viewer");
    expect(screen.queryByTestId("annotation-panel")).not.toBeInTheDocument();
    expect(screen.queryByText("Annotation")).not.toBeInTheDocument();
    expect(screen.queryByTestId("error-message")).not.toBeInTheDocument();
  });

  it("shows the annotation loop: budget, tasks, labels back and refused annotations", async () => {
    await renderService("viewer", {
      "GET /api/services/digits/annotations": {
        backend: "label_studio",
        project: "7",
        selection: "least-confidence",
        budget: { per_hour: 200, per_day: 2000, available: 150 },
        pool: 812,
        outbox: 3,
        tasks: 50,
        sent: 53,
        completed: 41,
        labeled: 39,
        duplicates: 1,
        skipped: 0,
        rejected: 1,
        unknown: 0,
        last_push_at: new Date().toISOString(),
        last_pull_at: null,
        last_error: "Label Studio at http://ls:8080 is unreachable: ConnectionError",
        recent_rejections: [
          {
            task_id: "88",
            request_id: "req-9",
            label: "7",
            annotation_id: "120",
            reason: "label '7' is not one of the service's classes",
            at: "2026-12-06T10:00:00+00:00",
          },
        ],
      },
    });
    const panel = await screen.findByTestId("annotation-panel");
    expect(panel).toHaveTextContent("Label Studio (project 7) · selection least-confidence");
    expect(screen.getByTestId("annotation-budget")).toHaveTextContent(
      "150 left of 200 / h, 2,000 / day",
    );
    expect(screen.getByTestId("annotation-sent")).toHaveTextContent(
      "53 samples · 50 tasks · 3 waiting to be delivered",
    );
    expect(screen.getByTestId("annotation-labeled")).toHaveTextContent(
      "39 of 41 completed · 1 labeled before",
    );
    expect(screen.getByTestId("annotation-error")).toHaveTextContent("unreachable");
    const rejections = screen.getByTestId("annotation-rejections");
    expect(rejections).toHaveTextContent("Refused annotations (1)");
    expect(rejections).toHaveTextContent("req-9");
    expect(rejections).toHaveTextContent("not one of the service's classes");
  });
});
