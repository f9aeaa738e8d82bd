import { describe, expect, it } from "vitest";
import { lineageOf } from "../test/fixtures";
import { layoutLineage, lineageOutcome } from "./lineage";

describe("layoutLineage", () => {
  it("lays the version tree out top-down with one edge per parent", () => {
    const { nodes, edges } = layoutLineage([
      lineageOf(1, null),
      lineageOf(2, 1),
      lineageOf(3, 1),
      lineageOf(4, 3),
    ]);
    expect(nodes.map((n) => n.id)).toEqual(["1", "2", "3", "4"]);
    expect(edges.map((e) => `${e.source}->${e.target}`)).toEqual(["1->2", "1->3", "3->4"]);

    const y = Object.fromEntries(nodes.map((n) => [n.id, n.position.y]));
    expect(y["1"]).toBeLessThan(y["2"]!);
    expect(y["2"]).toBe(y["3"]);
    expect(y["3"]).toBeLessThan(y["4"]!);
    const x = Object.fromEntries(nodes.map((n) => [n.id, n.position.x]));
    expect(x["2"]).not.toBe(x["3"]);
  });

  it("draws a version whose parent is missing as a root", () => {
    const { nodes, edges } = layoutLineage([lineageOf(5, 4), lineageOf(6, 5)]);
    expect(edges).toHaveLength(1);
    expect(nodes[0]!.position.y).toBeLessThan(nodes[1]!.position.y);
  });
});

describe("lineageOutcome", () => {
  it("names what happened to a version", () => {
    expect(lineageOutcome(lineageOf(1, null))).toBe("base");
    expect(lineageOutcome(lineageOf(2, 1, { failed_gates: ["accuracy", "bwt"] }))).toBe(
      "failed accuracy, bwt",
    );
    expect(lineageOutcome(lineageOf(2, 1, { validation_passed: true }))).toBe("validated");
    const deployed = lineageOf(2, 1, {
      validation_passed: true,
      deployments: [
        {
          id: "d",
          service: "digits",
          version: 2,
          previous_version: 1,
          action: "deploy",
          status: "succeeded",
          bytes_shipped: 10,
          detail: "",
          actor: null,
          created_at: "2025-11-22T10:00:00+00:00",
        },
      ],
    });
    expect(lineageOutcome(deployed)).toBe("deployed");
  });
});
