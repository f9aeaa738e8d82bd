import { ApiError, INVALID_TOKEN, UnreachableError } from "../api/client";

/** The sentence shown to the user for a failed request. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return INVALID_TOKEN;
    if (error.status === 403) return `Your role cannot do this (403): ${error.message}`;
    return `${error.message} (${error.status})`;
  }
  if (error instanceof UnreachableError) return error.message;
  return error instanceof Error ? error.message : String(error);
}
