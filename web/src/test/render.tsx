import { render } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { createQueryClient } from "../api/queryClient";
import type { Role } from "../api/types";
import { App } from "../App";
import { signIn, signOut } from "../auth/session";
import { mockApi, type Routes } from "./api";

interface Options {
  role?: Role;
  /** Start signed out, on the sign-in page. */
  signedOut?: boolean;
}

/** Renders the whole app at `route` against mocked API routes (whoami included). */
export function renderApp(
  route: string,
  routes: Routes,
  { role = "engineer", signedOut }: Options = {},
) {
  if (signedOut) signOut();
  else signIn("test-token");
  const api = mockApi({ "GET /api/whoami": { user: "ana", role }, ...routes });
  const view = render(
    <MemoryRouter initialEntries={[route]}>
      <App client={createQueryClient()} />
    </MemoryRouter>,
  );
  return { ...view, ...api };
}
