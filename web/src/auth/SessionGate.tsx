import { useQueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import { SignIn } from "../pages/SignIn";
import { useSession } from "./session";
import { SignedIn } from "./SignedIn";

/** The sign-in page until a token is stored, then the app. */
export function SessionGate() {
  const { token, notice } = useSession();
  const client = useQueryClient();
  // Nothing one user fetched may be shown to the next one signing in on this tab.
  useEffect(() => {
    if (!token) client.clear();
  }, [token, client]);
  return token ? <SignedIn token={token} /> : <SignIn notice={notice} />;
}
