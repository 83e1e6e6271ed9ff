"""Accounts over HTTP: log in / refresh / log out / change my password (/api/auth/…), user administration
by the level above (/api/users…), and the audit log (GET /api/audit, admin only).

Does not: any account rule (cloud.accounts) or token check (cloud.auth); errors are the domain's
(Unauthenticated → 401, Locked → 423, NotFound → 404 … via the app's one error table).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from cloud import accounts, audit
from cloud.api.deps import AdminDep, ClientIpDep, ClockDep, CurrentUserDep, DbDep, PolicyDep
from cloud.api.models import Page
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api", tags=["accounts"])

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "not logged in (body: detail, code)"}}


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class PasswordChangeIn(BaseModel):
    old_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class PasswordResetIn(BaseModel):
    new_password: str = Field(min_length=1, max_length=256)


class SessionOut(BaseModel):
    access_token: str
    access_expires_at: str
    expires_in: int = Field(
        description="seconds the access token is valid (renew before, by the client's clock)"
    )
    refresh_token: str
    refresh_expires_at: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    user: str
    role: str
    node: str | None


class AccountOut(BaseModel):
    name: str
    role: str
    node: str | None
    node_name: str | None
    display_name: str | None
    has_password: bool
    locked_until: str | None
    revoked_at: str | None
    created_at: str
    created_by: str | None


class AccountIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["county", "town", "village", "station"]
    node: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=100)


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    ip: str | None
    detail: dict[str, Any]


def _session_out(s: accounts.Session) -> SessionOut:
    return SessionOut(
        access_token=s.access_token,
        access_expires_at=s.access_expires_at.isoformat(),
        expires_in=int((s.access_expires_at - s.issued_at).total_seconds()),
        refresh_token=s.refresh_token,
        refresh_expires_at=s.refresh_expires_at.isoformat(),
        user=s.user,
        role=s.role,
        node=s.node,
    )


@router.post(
    "/auth/login",
    responses={401: {"description": "wrong user name or password"}, 423: {"description": "account locked"}},
)
def login(body: LoginIn, db: DbDep, clock: ClockDep, policy: PolicyDep, ip: ClientIpDep) -> SessionOut:
    """Log in with a password: a short-lived access token (bearer) and a refresh token."""
    return _session_out(accounts.login(db, body.username, body.password, clock.now(), policy, ip))


@router.post("/auth/refresh", responses=_AUTH_ERRORS)
def refresh(body: RefreshIn, db: DbDep, clock: ClockDep, policy: PolicyDep, ip: ClientIpDep) -> SessionOut:
    """A new access + refresh token pair for a valid refresh token (which stops working)."""
    return _session_out(accounts.refresh(db, body.refresh_token, clock.now(), policy, ip))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_AUTH_ERRORS)
def logout(db: DbDep, user: CurrentUserDep, clock: ClockDep, ip: ClientIpDep) -> Response:
    """Revoke the token this request came with (the whole login session)."""
    accounts.logout(db, user, clock.now(), ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, 422: {"description": "new password too short"}},
)
def change_password(
    body: PasswordChangeIn,
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    policy: PolicyDep,
    ip: ClientIpDep,
) -> Response:
    """Change my own password (needs the current one); my other sessions end."""
    accounts.change_password(db, user, body.old_password, body.new_password, clock.now(), policy, ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", responses=_AUTH_ERRORS)
def list_users(db: DbDep, user: CurrentUserDep) -> list[AccountOut]:
    """Me and the users I manage (those on nodes below mine)."""
    return [AccountOut(**asdict(a)) for a in accounts.list_users(db, user)]


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_AUTH_ERRORS,
        404: {"description": "node not below yours"},
        409: {"description": "name taken"},
    },
)
def add_user(
    body: AccountIn, db: DbDep, user: CurrentUserDep, clock: ClockDep, policy: PolicyDep, ip: ClientIpDep
) -> AccountOut:
    """Add a person with a password on a node below mine."""
    accounts.add_user(
        db, user, body.name, body.role, body.node, body.password, clock.now(), policy, body.display_name, ip
    )
    account = next(a for a in accounts.list_users(db, user) if a.name == body.name)
    return AccountOut(**asdict(account))


@router.post(
    "/users/{name}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, 404: {"description": "no such user below you"}},
)
def reset_password(
    name: str,
    body: PasswordResetIn,
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    policy: PolicyDep,
    ip: ClientIpDep,
) -> Response:
    """Set a new password for a user below me (unlocks the account, ends its sessions)."""
    accounts.reset_password(db, user, name, body.new_password, clock.now(), policy, ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/{name}/revoke",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, 404: {"description": "no such user below you"}},
)
def revoke_user(name: str, db: DbDep, user: CurrentUserDep, clock: ClockDep, ip: ClientIpDep) -> Response:
    """Disable a user below me: every token it holds stops working at once."""
    accounts.revoke_user(db, user, name, clock.now(), ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", responses={**_AUTH_ERRORS, 403: {"description": "admin only"}})
def audit_log(
    db: DbDep,
    _admin: AdminDep,
    page: PageDep,
    target: Annotated[str | None, Query(max_length=64, description="only entries about this user")] = None,
) -> Page[AuditOut]:
    total, found = audit.entries(db, target=target, limit=page.limit, offset=page.offset)
    items = [AuditOut(**asdict(e)) for e in found]
    return Page[AuditOut](total=total, limit=page.limit, offset=page.offset, items=items)
