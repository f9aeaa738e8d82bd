import { vi } from "vitest";

export interface MockRequest {
  method: string;
  path: string;
  search: URLSearchParams;
  headers: Headers;
  body: unknown;
}

/** A JSON body (answered with 200), a Response, or a handler returning either (or throwing). */
type Handler = (request: MockRequest) => unknown;
export type Routes = Record<string, Handler | object>;

export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

export function apiError(status: number, message: string, code = "error"): Response {
  return json(status, { error: { code, message } });
}

/**
 * Replaces fetch with a router keyed by "METHOD /path" (query strings are not part of the key;
 * handlers see them in `search`). Unknown routes answer 404. Returns every request made.
 */
export function mockApi(routes: Routes) {
  const requests: MockRequest[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), "http://localhost");
    const request: MockRequest = {
      method: init?.method ?? "GET",
      path: url.pathname,
      search: url.searchParams,
      headers: new Headers(init?.headers),
      body: typeof init?.body === "string" ? JSON.parse(init.body) : undefined,
    };
    requests.push(request);
    const route = routes[`${request.method} ${request.path}`];
    if (route === undefined) return apiError(404, `no mock for ${request.method} ${request.path}`);
    const reply: unknown = typeof route === "function" ? await route(request) : route;
    // A Response given once in `routes` may be answered many times: hand out copies.
    return reply instanceof Response ? reply.clone() : json(200, reply);
  });
  vi.stubGlobal("fetch", fetchMock);
  return { fetchMock, requests };
}
