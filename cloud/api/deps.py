"""FastAPI dependencies as `Annotated` aliases.

    SettingsDep     the app's Settings (built by the app factory)
    ClockDep        the app's Clock (SystemClock, or a ManualClock in tests)
    DbDep           a cloud.db.Database (SQLite or PostgreSQL), one connection per request, closed afterwards
    OptionalUserDep the User of a valid bearer token, or None (for the few routes open to anyone)
    CurrentUserDep  the authenticated User (bearer token); raises Unauthenticated (→ 401, with a code saying
                    whether the token is unknown, expired or revoked) without a valid one
    AdminDep        a User whose role is admin; 403 otherwise
    PolicyDep       the account policy (token lifetimes, lockout) from the settings
    ClientIpDep     the caller's address, for the audit log

Does not: business logic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.accounts import Policy
from cloud.auth import User, user_for_token
from cloud.clock import Clock
from cloud.db import Database, connect
from cloud.errors import Unauthenticated
from cloud.settings import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description="access token from POST /api/auth/login, or a machine token (`kuaijian cloud create-user`)",
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_db(settings: SettingsDep) -> Iterator[Database]:
    db = connect(settings.database)
    try:
        yield db
    finally:
        db.close()


DbDep = Annotated[Database, Depends(get_db)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_optional_user(db: DbDep, clock: ClockDep, credentials: Credentials) -> User | None:
    if credentials is None:
        return None
    try:
        return user_for_token(db, credentials.credentials, clock.now())
    except Unauthenticated:
        return None


OptionalUserDep = Annotated[User | None, Depends(get_optional_user)]


def get_current_user(db: DbDep, clock: ClockDep, credentials: Credentials) -> User:
    if credentials is None:
        raise Unauthenticated("missing bearer token", code="auth.missing")
    return user_for_token(db, credentials.credentials, clock.now())


CurrentUserDep = Annotated[User, Depends(get_current_user)]


def get_admin(user: CurrentUserDep) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    return user


AdminDep = Annotated[User, Depends(get_admin)]


def get_policy(settings: SettingsDep) -> Policy:
    return Policy.from_settings(settings)


PolicyDep = Annotated[Policy, Depends(get_policy)]


def get_client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientIpDep = Annotated[str | None, Depends(get_client_ip)]
