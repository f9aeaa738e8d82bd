import { useSyncExternalStore } from "react";

// The API token lives in sessionStorage only (never in the URL), so it is gone when the tab
// closes. `notice` explains why the user was signed out (e.g. a 401).
const TOKEN_KEY = "modelci.token";

export interface Session {
  token: string | null;
  notice: string | null;
}

const listeners = new Set<() => void>();
let snapshot: Session | null = null;

function emit(next: Session): void {
  snapshot = next;
  listeners.forEach((listener) => listener());
}

export function getSession(): Session {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (snapshot === null || snapshot.token !== token) {
    snapshot = { token, notice: snapshot?.notice ?? null };
  }
  return snapshot;
}

export function signIn(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  emit({ token, notice: null });
}

export function signOut(notice: string | null = null): void {
  sessionStorage.removeItem(TOKEN_KEY);
  emit({ token: null, notice });
}

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useSession(): Session {
  return useSyncExternalStore(subscribe, getSession);
}
