import { fireEvent, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { cardOf, lineageOf } from "../test/fixtures";
import { renderApp } from "../test/render";

const LINEAGE = [
  lineageOf(1, null, { status: "retired" }),
  lineageOf(2, 1, { status: "rolled_back", validation_passed: true }),
  lineageOf(3, 2, { status: "champion", validation_passed: true }),
  lineageOf(4, 3, { status: "rejected", validation_passed: false, failed_gates: ["accuracy"] }),
];

describe("Lineage graph", () => {
  it("renders one node per version, styled by status, plus an accessible list", async () => {
    renderApp("/services/digits/lineage", { "GET /api/services/digits/lineage": LINEAGE });

    const nodes = await screen.findAllByTestId("lineage-node");
    expect(nodes.map((n) => n.dataset.version)).toEqual(["1", "2", "3", "4"]);
    expect(nodes[2]).toHaveClass("lineage-champion");
    expect(nodes[3]).toHaveClass("lineage-rejected");
    expect(nodes[3]).toHaveTextContent("v4domain_incrementalfailed accuracy");
    expect(screen.getAllByTestId("lineage-item")).toHaveLength(4);
    expect(screen.getByRole("list", { name: "Legend" })).toHaveTextContent("rolled back");
  });

  it("opens a version's model card when its node is clicked", async () => {
    renderApp("/services/digits/lineage", {
      "GET /api/services/digits/lineage": LINEAGE,
      "GET /api/services/digits/versions/3/card": cardOf({ version: 3, status: "champion" }),
    });
    const nodes = await screen.findAllByTestId("lineage-node");
    // A bare click: user-event's mousedown has no `view`, which d3-drag (inside xyflow) needs.
    fireEvent.click(nodes[2]!);
    await waitFor(() => expect(screen.getByTestId("card-task")).toBeInTheDocument());
  });
});
