import { UnreachableError } from "../api/client";
import { ErrorMessage } from "./ErrorMessage";

/** A failed query's message, unless the server is unreachable: the banner says that already. */
export function QueryError({ error }: { error: unknown }) {
  return error && !(error instanceof UnreachableError) ? <ErrorMessage error={error} /> : null;
}
