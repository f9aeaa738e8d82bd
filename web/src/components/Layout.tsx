import { useQueryClient } from "@tanstack/react-query";
import { Suspense } from "react";
import { Link, NavLink, Outlet } from "react-router";
import { signOut } from "../auth/session";
import { useMe } from "../auth/me";
import { UnreachableBanner } from "./UnreachableBanner";

export function Layout() {
  const me = useMe();
  const client = useQueryClient();
  return (
    <>
      <header className="topbar">
        <Link to="/" className="brand">
          ModelCI-e
        </Link>
        <nav>
          <NavLink to="/" end>
            Services
          </NavLink>
          <NavLink to="/jobs">Jobs</NavLink>
        </nav>
        <span className="whoami" data-testid="whoami">
          {me.user} ({me.role})
        </span>
        <button
          type="button"
          className="link-button"
          data-testid="sign-out"
          onClick={() => signOut()}
        >
          Sign out
        </button>
      </header>
      <UnreachableBanner onRetry={() => void client.refetchQueries({ type: "active" })} />
      <main>
        <Suspense fallback={<p className="muted">Loading…</p>}>
          <Outlet />
        </Suspense>
      </main>
    </>
  );
}
