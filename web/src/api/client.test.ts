import { describe, expect, it } from "vitest";
import { getSession, signIn } from "../auth/session";
import { errorText } from "../lib/errors";
import { apiError, json, mockApi } from "../test/api";
import { ApiError, INVALID_TOKEN, request, UnreachableError } from "./client";

describe("API client", () => {
  it("sends the session's bearer token and JSON bodies", async () => {
    signIn("abc");
    const { requests } = mockApi({ "POST /api/x": { ok: true } });
    await expect(request("/api/x", { method: "POST", body: { reason: "r" } })).resolves.toEqual({
      ok: true,
    });
    expect(requests[0]!.headers.get("Authorization")).toBe("Bearer abc");
    expect(requests[0]!.headers.get("Content-Type")).toBe("application/json");
    expect(requests[0]!.body).toEqual({ reason: "r" });
  });

  it("turns error bodies into ApiError with the server's message", async () => {
    mockApi({ "GET /api/x": apiError(409, "a job is running", "job_conflict") });
    const error = await request("/api/x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 409, code: "job_conflict", message: "a job is running" });
    expect(errorText(error)).toBe("a job is running (409)");
  });

  it("keeps the status text when the error body is not JSON", async () => {
    mockApi({ "GET /api/x": new Response("<html>", { status: 502, statusText: "Bad Gateway" }) });
    await expect(request("/api/x")).rejects.toMatchObject({ status: 502, message: "Bad Gateway" });
  });

  it("ends the session on a 401", async () => {
    signIn("abc");
    mockApi({ "GET /api/x": json(401, { error: { code: "unauthorized", message: "bad token" } }) });
    await expect(request("/api/x")).rejects.toBeInstanceOf(ApiError);
    expect(getSession()).toEqual({ token: null, notice: INVALID_TOKEN });
  });

  it("reports an unreachable server", async () => {
    mockApi({
      "GET /api/x": () => {
        throw new TypeError("Failed to fetch");
      },
    });
    const error = await request("/api/x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnreachableError);
    expect(errorText(error)).toBe("Cannot reach the CL server");
  });
});
