import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { apiError } from "../test/api";
import { overviewOf } from "../test/fixtures";
import { renderApp } from "../test/render";

describe("Services overview", () => {
  it("lists every service with its state, champion, accuracy and drift", async () => {
    renderApp("/", {
      "GET /api/overview": [
        overviewOf(),
        overviewOf({
          name: "reviews",
          engine_kind: "tfserving",
          state: "drifting",
          state_detail: "ks alarm on embeddings",
          champion_version: null,
          accuracy: null,
          annotator_url: null,
          last_update: null,
        }),
      ],
    });

    const rows = await screen.findAllByTestId("service-row");
    expect(rows.map((row) => row.dataset.service)).toEqual(["digits", "reviews"]);

    const digits = within(rows[0]!);
    expect(digits.getByTestId("service-state")).toHaveTextContent("healthy");
    expect(digits.getByTestId("service-state")).toHaveAttribute(
      "title",
      "accuracy 92.5% over the last 200 labels",
    );
    expect(digits.getByTestId("champion-version")).toHaveTextContent("v3");
    expect(digits.getByTestId("accuracy")).toHaveTextContent("92.5% (n=200)");
    expect(digits.getByText("Classes (3)").nextElementSibling).toHaveTextContent("012");
    expect(digits.getByTestId("sparkline").querySelectorAll("circle")).toHaveLength(1);
    const link = digits.getByTestId("annotator-link");
    expect(link).toHaveAttribute("href", "http://label.example/projects/7");
    expect(link).toHaveAttribute("target", "_blank");
    expect(link).toHaveAttribute("rel", "noopener");
    expect(digits.getByText("deployed")).toBeInTheDocument();

    const reviews = within(rows[1]!);
    expect(reviews.getByTestId("service-state")).toHaveTextContent("drifting");
    expect(reviews.getByTestId("champion-version")).toHaveTextContent("—");
    expect(reviews.getByTestId("accuracy")).toHaveTextContent("—");
    expect(reviews.queryByTestId("annotator-link")).not.toBeInTheDocument();
  });

  it("shows the empty state with a hint", async () => {
    renderApp("/", { "GET /api/overview": [] });
    const empty = await screen.findByTestId("empty-services");
    expect(empty).toHaveTextContent("No services yet");
    expect(empty).toHaveTextContent("modelci-e start CONFIG.yaml");
    expect(empty).toHaveTextContent("./run demo");
  });

  it("shows a banner while the server is unreachable and recovers on retry", async () => {
    let down = true;
    renderApp("/", {
      "GET /api/overview": () => {
        if (down) throw new TypeError("Failed to fetch");
        return [overviewOf()];
      },
    });
    const banner = await screen.findByTestId("unreachable");
    expect(banner).toHaveTextContent("Cannot reach the CL server");
    expect(screen.queryByTestId("error-message")).not.toBeInTheDocument();

    down = false;
    await userEvent.click(within(banner).getByRole("button", { name: "Retry" }));
    expect(await screen.findByTestId("service-row")).toBeInTheDocument();
    expect(screen.queryByTestId("unreachable")).not.toBeInTheDocument();
  });

  it("shows an API error message from the error body", async () => {
    renderApp("/", { "GET /api/overview": apiError(500, "store is down", "store_error") });
    // A 5xx is retried once (after a second) before the error shows.
    expect(await screen.findByTestId("error-message", {}, { timeout: 3000 })).toHaveTextContent(
      "store is down (500)",
    );
  });
});
