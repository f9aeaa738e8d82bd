import { QueryClient } from "@tanstack/react-query";
import { ApiError } from "./client";

export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        // Client errors (401/403/404/409) will not change on retry and an unreachable server
        // has its own banner with a retry button; a 5xx may be a blip, so try it once more.
        retry: (failures, error) =>
          error instanceof ApiError && error.status >= 500 && failures < 1,
        staleTime: 1000,
      },
    },
  });
}
