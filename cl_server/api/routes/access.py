"""Who is calling, users and their API tokens."""

from __future__ import annotations

from flask import Blueprint

from cl_server.api.context import ctx
from cl_server.api.errors import ApiError, not_found
from cl_server.api.schemas import TokenCreated, TokenIn, TokenOut, UserIn, WhoAmI
from cl_server.api.spec import operation
from cl_server.auth import Principal, issue_token
from cl_server.store import Role, User, utcnow

bp = Blueprint("access", __name__)


@operation(bp, "/api/whoami", "GET", summary="The caller's user and role", role=Role.viewer,
           response=WhoAmI)
def whoami(principal: Principal) -> WhoAmI:
    return WhoAmI(user=principal.user, role=principal.role.name)


@operation(bp, "/api/users", "GET", summary="List users", role=Role.admin, response=list[User])
def list_users(principal: Principal) -> list[User]:
    return ctx().store.list_users()


@operation(bp, "/api/users", "POST", summary="Create a user", role=Role.admin, body=UserIn,
           response=User, status=201)
def create_user(principal: Principal, body: UserIn) -> User:
    return ctx().store.add_user(User(name=body.name, role=body.role))


@operation(bp, "/api/tokens", "GET", summary="List tokens (admins: all; others: their own)",
           role=Role.viewer, response=list[TokenOut])
def list_tokens(principal: Principal) -> list[TokenOut]:
    user = None if principal.role >= Role.admin else principal.user
    return [TokenOut.of(t) for t in ctx().store.list_tokens(user)]


@operation(bp, "/api/tokens", "POST", summary="Issue a token (shown once)", role=Role.viewer,
           body=TokenIn, response=TokenCreated, status=201,
           description="Anyone may issue a token for themselves; admins for any user.")
def create_token(principal: Principal, body: TokenIn) -> TokenCreated:
    user = body.user or principal.user
    if user != principal.user and principal.role < Role.admin:
        raise ApiError(403, "forbidden", "only admins issue tokens for other users")
    if ctx().store.get_user(user) is None:
        raise not_found(f"user '{user}'")
    record, clear = issue_token(ctx().store, user, body.label)
    return TokenCreated(token=clear, record=TokenOut.of(record))


@operation(bp, "/api/tokens/{token_id}", "DELETE", summary="Revoke a token", role=Role.viewer,
           response=TokenOut)
def revoke_token(principal: Principal, token_id: str) -> TokenOut:
    store = ctx().store
    token = store.get_token(token_id)
    if token is None or (token.user != principal.user and principal.role < Role.admin):
        raise not_found(f"token {token_id}")
    if token.id == principal.token_id:
        raise ApiError(409, "conflict", "a token cannot revoke itself; use another token")
    if token.revoked_at is not None:
        return TokenOut.of(token)
    revoked = store.update_token(token_id, revoked_at=utcnow())
    assert revoked is not None
    return TokenOut.of(revoked)
