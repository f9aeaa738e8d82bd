import { cleanup, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { cardOf } from "../test/fixtures";
import { renderApp } from "../test/render";

const CARD = "GET /api/services/digits/versions/4/card";

describe("Model card", () => {
  it("renders the five sections with formatted values", async () => {
    renderApp("/services/digits/versions/4", { [CARD]: cardOf() });

    const task = await screen.findByTestId("card-task");
    expect(within(task).getByRole("heading", { name: "CL task" })).toBeInTheDocument();
    expect(task).toHaveTextContent("class_incremental (new class 2 seen)");
    expect(task).toHaveTextContent("replay");
    expect(task).toHaveTextContent("cross_entropy");
    expect(within(task).getByRole("row", { name: "lr 0.001" })).toBeInTheDocument();
    expect(within(task).getByRole("link", { name: "v3" })).toHaveAttribute(
      "href",
      "/services/digits/versions/3",
    );
    expect(within(task).getByRole("link", { name: "j4 (log)" })).toHaveAttribute(
      "href",
      "/jobs/j4",
    );

    const benchmark = screen.getByTestId("card-benchmark");
    expect(within(benchmark).getByTestId("recent-accuracy")).toHaveTextContent(
      "91.2% vs champion 88.0%",
    );
    expect(benchmark).toHaveTextContent("BWT-3.0 pts");
    expect(benchmark).toHaveTextContent("FWT+1.5 pts");
    expect(benchmark).toHaveTextContent("Forgetting—");
    expect(benchmark).toHaveTextContent("Model size1.5 KiB");
    expect(benchmark).toHaveTextContent("Bytes deployed—");
    const classRows = within(benchmark).getAllByTestId("class-row");
    expect(classRows).toHaveLength(3);
    expect(classRows[2]).toHaveTextContent("285.0%—25");

    const data = screen.getByTestId("card-data");
    expect(data).toHaveTextContent("New samples100");
    expect(data).toHaveTextContent("Rehearsal samples300");
    expect(within(data).getAllByTestId("data-class-row")).toHaveLength(2);
    expect(within(data).getByTestId("data-query")).toHaveTextContent('"classes": [');

    const validation = screen.getByTestId("card-validation");
    expect(within(validation).getByTestId("validation-result")).toHaveTextContent("passed");
    const gates = within(validation).getAllByTestId("gate-row");
    expect(gates).toHaveLength(3);
    expect(gates[0]).toHaveTextContent("accuracy0.9120.88pass");
    expect(gates[2]).toHaveTextContent("latency—50failnot measured");

    const deployments = screen.getByTestId("card-deployments");
    expect(deployments).toHaveTextContent("canary");
    expect(deployments).toHaveTextContent("1.0 MiB");
    expect(deployments).toHaveTextContent("ana");
  });

  it("copies the data query to the clipboard", async () => {
    const user = userEvent.setup();
    const writeText = vi.fn().mockResolvedValue(undefined);
    // userEvent installs its own clipboard stub at setup(); replace it after.
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    const card = cardOf();
    renderApp("/services/digits/versions/4", { [CARD]: card });

    await user.click(await screen.findByTestId("copy-query"));
    expect(writeText).toHaveBeenCalledWith(JSON.stringify(card.data.query, null, 2));
    expect(await screen.findByText("Copied")).toBeInTheDocument();
  });

  it("lets a researcher verify the data query", async () => {
    const { requests } = renderApp(
      "/services/digits/versions/4",
      {
        [CARD]: cardOf(),
        "POST /api/services/digits/versions/4/data-query/verify": {
          version: 4,
          query: {},
          sample_count: 400,
          digest: "d1g3st",
          matches: true,
        },
      },
      { role: "researcher" },
    );
    await userEvent.click(await screen.findByTestId("verify-query"));
    expect(await screen.findByTestId("verify-result")).toHaveTextContent(
      "Matches: yes (400 samples",
    );
    expect(requests.some((r) => r.method === "POST" && r.path.endsWith("/verify"))).toBe(true);
  });

  it("shows dashes for a base version without validation or data query", async () => {
    renderApp("/services/digits/versions/4", {
      [CARD]: cardOf({
        validation: null,
        awaiting_approval: false,
        data: {
          new_total: 0,
          rehearsal_total: 0,
          per_class: [],
          query: null,
          sample_count: null,
          digest: null,
        },
      }),
    });
    expect(await screen.findByTestId("card-validation")).toHaveTextContent("not validated");
    expect(screen.getByTestId("card-data")).toHaveTextContent("Digest—");
    expect(screen.queryByTestId("copy-query")).not.toBeInTheDocument();
  });
});

describe("Model card actions", () => {
  const ACTIONS = ["action-approve", "action-reject", "action-rollback"];

  it("renders none for a viewer", async () => {
    renderApp("/services/digits/versions/4", { [CARD]: cardOf() }, { role: "viewer" });
    await screen.findByTestId("card-task");
    for (const id of ACTIONS) expect(screen.queryByTestId(id)).not.toBeInTheDocument();
    expect(screen.queryByTestId("verify-query")).not.toBeInTheDocument();
  });

  it("lets an engineer approve a candidate awaiting approval", async () => {
    const { requests } = renderApp("/services/digits/versions/4", {
      [CARD]: cardOf(),
      "POST /api/services/digits/versions/4/approve": { id: "j10" },
    });
    await userEvent.click(await screen.findByTestId("action-approve"));
    expect(await screen.findByRole("link", { name: "job" })).toHaveAttribute("href", "/jobs/j10");
    expect(screen.getByTestId("action-reject")).toBeInTheDocument();
    expect(screen.queryByTestId("action-rollback")).not.toBeInTheDocument();
    expect(requests.find((r) => r.method === "POST")?.body).toEqual({});
  });

  it("offers a roll back on a retired version, not on the champion", async () => {
    renderApp("/services/digits/versions/4", {
      [CARD]: cardOf({ status: "retired", awaiting_approval: false }),
    });
    expect(await screen.findByTestId("action-rollback")).toHaveTextContent("Roll back to v4");
    expect(screen.queryByTestId("action-approve")).not.toBeInTheDocument();
    cleanup();

    renderApp("/services/digits/versions/4", {
      [CARD]: cardOf({ status: "champion", awaiting_approval: false }),
    });
    await screen.findByTestId("card-task");
    for (const id of ACTIONS) expect(screen.queryByTestId(id)).not.toBeInTheDocument();
  });
});
