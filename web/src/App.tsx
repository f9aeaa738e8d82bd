import { QueryClientProvider, type QueryClient } from "@tanstack/react-query";
import { SessionGate } from "./auth/SessionGate";

export function App({ client }: { client: QueryClient }) {
  return (
    <QueryClientProvider client={client}>
      <SessionGate />
    </QueryClientProvider>
  );
}
