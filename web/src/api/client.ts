import { getSession, signOut } from "../auth/session";
import { setReachable } from "./connection";

export const INVALID_TOKEN = "Your token is not valid (401)";

/** An error response of the API: `{"error": {"code", "message", "details"?}}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** fetch itself failed: the server is down or the network is gone. */
export class UnreachableError extends Error {
  constructor(cause: unknown) {
    super("Cannot reach the CL server", { cause });
    this.name = "UnreachableError";
  }
}

export interface RequestOptions {
  method?: "GET" | "POST" | "PATCH";
  body?: unknown;
  /** Overrides the session's token (used to validate a token before storing it). */
  token?: string;
}

async function errorFrom(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = response.statusText || `HTTP ${response.status}`;
  let details: unknown;
  try {
    const body: unknown = await response.json();
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } })
      ?.error;
    if (error) {
      if (typeof error.code === "string") code = error.code;
      if (typeof error.message === "string") message = error.message;
      details = error.details;
    }
  } catch {
    // Not JSON (e.g. a proxy's HTML error page): keep the status text.
  }
  return new ApiError(response.status, code, message, details);
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const token = options.token ?? getSession().token;
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";

  let response: Response;
  try {
    response = await fetch(path, {
      method: options.method ?? "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
  } catch (cause) {
    setReachable(false);
    throw new UnreachableError(cause);
  }
  setReachable(true);

  if (!response.ok) {
    const error = await errorFrom(response);
    // A stored token that stops working (revoked, server reset) ends the session everywhere;
    // a token being tried on the sign-in form is not stored yet, so there is nothing to end.
    if (response.status === 401 && options.token === undefined) signOut(INVALID_TOKEN);
    throw error;
  }
  return (await response.json()) as T;
}

/** Builds `path?k=v` from the defined entries of `params`. */
export function withQuery(path: string, params: Record<string, string | number | undefined>) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(key, String(value));
  }
  const query = search.toString();
  return query ? `${path}?${query}` : path;
}
