import "@testing-library/jest-dom/vitest";
import { cleanup, configure } from "@testing-library/react";
import { afterEach, vi } from "vitest";
import { setReachable } from "../api/connection";
import { signOut } from "../auth/session";

// The suite shares two cores with the rest of the project's tests: allow slow renders.
configure({ asyncUtilTimeout: 5000 });

// jsdom lacks the layout APIs that xyflow and recharts measure with; they only need to exist.
class ResizeObserverStub {
  observe() {}
  unobserve() {}
  disconnect() {}
}
globalThis.ResizeObserver ??= ResizeObserverStub;

class DOMMatrixReadOnlyStub {
  m22: number;
  constructor(transform?: string) {
    const scale = transform?.match(/scale\(([\d.]+)\)/)?.[1];
    this.m22 = scale ? Number(scale) : 1;
  }
}
globalThis.DOMMatrixReadOnly ??= DOMMatrixReadOnlyStub as unknown as typeof DOMMatrixReadOnly;

afterEach(() => {
  cleanup();
  // Module-level stores outlive a test: start each one signed out with the server reachable.
  signOut();
  setReachable(true);
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});
