import { createContext, useContext } from "react";
import type { Role, Whoami } from "../api/types";

const RANK: Record<Role, number> = { viewer: 1, researcher: 2, engineer: 3, admin: 4 };

export const MeContext = createContext<Whoami | null>(null);

export function useMe(): Whoami {
  const me = useContext(MeContext);
  if (!me) throw new Error("useMe() outside a signed-in session");
  return me;
}

/** Whether the signed-in user's role is at least `min` (viewer < researcher < engineer < admin). */
export function useHasRole(min: Role): boolean {
  return RANK[useMe().role] >= RANK[min];
}
