import { useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { UnreachableError } from "../api/client";
import { api } from "../api/endpoints";
import { signIn } from "../auth/session";
import { ErrorMessage } from "../components/ErrorMessage";
import { UnreachableBanner } from "../components/UnreachableBanner";

/** Validates a token with /api/whoami before keeping it in sessionStorage. */
export function SignIn({ notice }: { notice: string | null }) {
  const client = useQueryClient();
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event?: FormEvent) {
    // The form never navigates, so the token cannot end up in the URL.
    event?.preventDefault();
    const candidate = token.trim();
    if (!candidate) return;
    setBusy(true);
    setError(null);
    try {
      const me = await api.whoami(candidate);
      client.setQueryData(["whoami", candidate], me);
      signIn(candidate);
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  }

  const shown = error ?? (notice ? new Error(notice) : null);
  return (
    <main className="sign-in">
      <UnreachableBanner onRetry={() => void submit()} />
      <form onSubmit={submit} className="panel">
        <h1>ModelCI-e</h1>
        <label htmlFor="token">API token</label>
        <input
          id="token"
          type="password"
          autoComplete="current-password"
          value={token}
          onChange={(event) => setToken(event.target.value)}
          data-testid="token-input"
          autoFocus
        />
        <button type="submit" disabled={busy} data-testid="sign-in">
          Sign in
        </button>
        {shown && !(shown instanceof UnreachableError) && <ErrorMessage error={shown} />}
      </form>
    </main>
  );
}
