import { useSyncExternalStore } from "react";

// Whether the last request reached the CL server. Set by the API client so one banner can
// cover every page instead of each query rendering its own network error.
const listeners = new Set<() => void>();
let reachable = true;

export function setReachable(value: boolean): void {
  if (value === reachable) return;
  reachable = value;
  listeners.forEach((listener) => listener());
}

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useReachable(): boolean {
  return useSyncExternalStore(subscribe, () => reachable);
}
