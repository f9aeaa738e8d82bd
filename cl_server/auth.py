"""API tokens and roles: issue, verify (by SHA-256, never stored in clear) and bootstrap an admin.

Roles are ordered, each including the rights of those below: viewer < researcher < engineer <
admin. A token carries no role of its own; it acts with its user's current role.

Example:
    >>> token = generate_token()
    >>> token.startswith("mci_") and len(token) > 40, len(hash_token(token))
    (True, 64)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cl_server.store import ApiToken, DuplicateRecord, Role, Store, User, utcnow

ADMIN_USER = "admin"
# Refreshing last_used_at on every request would double the store writes of a busy client.
_TOUCH_EVERY = timedelta(minutes=1)


class AuthError(Exception):
    """Missing, unknown, revoked or insufficient credentials; ``status`` is 401 or 403."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, their role, and the token they used."""

    user: str
    role: Role
    token_id: str


def generate_token() -> str:
    """A new random bearer token (256 bits)."""
    return "mci_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, user: str, label: str = "", token: str | None = None
                ) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the record and the clear token (shown once)."""
    clear = token or generate_token()
    record = store.add_token(ApiToken(user=user, token_sha256=hash_token(clear), label=label))
    return record, clear


def ensure_admin(store: Store, bootstrap_token: str | None = None) -> str | None:
    """Make sure an admin can sign in; return a newly generated admin token, else None.

    With ``bootstrap_token`` (from the config) that token is installed if missing. Without it, a
    token is generated only when no admin user has a usable token.
    """
    if store.get_user(ADMIN_USER) is None:
        try:
            store.add_user(User(name=ADMIN_USER, role="admin"))
        except DuplicateRecord:
            pass
    if bootstrap_token is not None:
        if store.find_token(hash_token(bootstrap_token)) is None:
            issue_token(store, ADMIN_USER, "bootstrap (config)", bootstrap_token)
        return None
    admins = {u.name for u in store.list_users() if u.role == "admin" and not u.disabled}
    if any(t.revoked_at is None for name in admins for t in store.list_tokens(name)):
        return None
    _, clear = issue_token(store, ADMIN_USER, "first start")
    return clear


def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer <token>`` header to a :class:`Principal`."""
    if not authorization:
        raise AuthError(401, "missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed Authorization header (expected 'Bearer <token>')")
    record = store.find_token(hash_token(token.strip()))
    if record is None or record.revoked_at is not None:
        raise AuthError(401, "unknown or revoked token")
    user = store.get_user(record.user)
    if user is None or user.disabled:
        raise AuthError(401, f"user '{record.user}' is disabled or no longer exists")
    now = utcnow()
    if record.last_used_at is None or now - record.last_used_at > _TOUCH_EVERY:
        store.update_token(record.id, last_used_at=now)
    return Principal(user=user.name, role=Role[user.role], token_id=record.id)


def require(principal: Principal, role: Role) -> None:
    """Raise 403 unless ``principal`` has at least ``role``."""
    if principal.role < role:
        raise AuthError(403, f"this action needs the '{role.name}' role; user "
                             f"'{principal.user}' has '{principal.role.name}'")
