import { useQuery } from "@tanstack/react-query";
import { api } from "../api/endpoints";
import { AppRoutes } from "../AppRoutes";
import { QueryError } from "../components/QueryError";
import { UnreachableBanner } from "../components/UnreachableBanner";
import { MeContext } from "./me";

/** Resolves who the stored token belongs to (its role decides which actions render). */
export function SignedIn({ token }: { token: string }) {
  const whoami = useQuery({
    queryKey: ["whoami", token],
    queryFn: () => api.whoami(),
    staleTime: Infinity,
  });
  if (whoami.data) {
    return (
      <MeContext.Provider value={whoami.data}>
        <AppRoutes />
      </MeContext.Provider>
    );
  }
  return (
    <main>
      <UnreachableBanner onRetry={() => void whoami.refetch()} />
      {whoami.isPending && <p className="muted">Signing in…</p>}
      <QueryError error={whoami.error} />
    </main>
  );
}
