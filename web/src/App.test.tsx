import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { HashRouter } from "react-router";
import { describe, expect, it } from "vitest";
import { createQueryClient } from "./api/queryClient";
import { App } from "./App";
import { apiError, mockApi } from "./test/api";
import { renderApp } from "./test/render";

const TOKEN = "s3cret-token";

describe("Sign-in", () => {
  it("validates the token with whoami and keeps it out of the URL", async () => {
    const { requests } = mockApi({
      "GET /api/whoami": { user: "ana", role: "researcher" },
      "GET /api/overview": [],
    });
    render(
      <HashRouter>
        <App client={createQueryClient()} />
      </HashRouter>,
    );
    const before = window.location.href;

    await userEvent.type(screen.getByTestId("token-input"), TOKEN);
    expect(screen.getByTestId("token-input")).toHaveAttribute("type", "password");
    await userEvent.click(screen.getByTestId("sign-in"));

    expect(await screen.findByTestId("whoami")).toHaveTextContent("ana (researcher)");
    expect(sessionStorage.getItem("modelci.token")).toBe(TOKEN);
    expect(window.location.href).toBe(before);
    expect(window.location.href).not.toContain(TOKEN);
    expect(requests[0]!.headers.get("Authorization")).toBe(`Bearer ${TOKEN}`);
    expect(requests.every((r) => !r.search.toString().includes(TOKEN))).toBe(true);
    // Every later call carries the token too.
    expect(await screen.findByTestId("empty-services")).toBeInTheDocument();
    expect(requests.at(-1)!.headers.get("Authorization")).toBe(`Bearer ${TOKEN}`);
  });

  it("refuses a token the server does not know", async () => {
    renderApp(
      "/",
      { "GET /api/whoami": apiError(401, "unknown token", "unauthorized") },
      { signedOut: true },
    );
    await userEvent.type(screen.getByTestId("token-input"), "wrong");
    await userEvent.click(screen.getByTestId("sign-in"));
    expect(await screen.findByTestId("error-message")).toHaveTextContent(
      "Your token is not valid (401)",
    );
    expect(sessionStorage.getItem("modelci.token")).toBeNull();
  });

  it("returns to the sign-in page when a call answers 401", async () => {
    renderApp("/", { "GET /api/overview": apiError(401, "token revoked", "unauthorized") });
    expect(await screen.findByTestId("token-input")).toBeInTheDocument();
    expect(screen.getByTestId("error-message")).toHaveTextContent("Your token is not valid (401)");
    expect(sessionStorage.getItem("modelci.token")).toBeNull();
  });

  it("signs out", async () => {
    renderApp("/", { "GET /api/overview": [] });
    await userEvent.click(await screen.findByTestId("sign-out"));
    expect(screen.getByTestId("token-input")).toBeInTheDocument();
    expect(screen.queryByTestId("error-message")).not.toBeInTheDocument();
    expect(sessionStorage.getItem("modelci.token")).toBeNull();
  });
});
