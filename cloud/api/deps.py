"""FastAPI dependencies as `Annotated` aliases.

    SettingsDep     the app's Settings (built by the app factory)
    ClockDep        the app's Clock (SystemClock, or a ManualClock in tests)
    DbDep           a sqlite-utils Database, one connection per request, closed afterwards
    OptionalUserDep the User of a valid bearer token, or None (for the few routes open to anyone)
    CurrentUserDep  the authenticated User (bearer token); 401 without a valid token
    AdminDep        a User whose role is admin; 403 otherwise

Does not: business logic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import sqlite_utils
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.auth import User, user_for_token
from cloud.clock import Clock
from cloud.db import connect
from cloud.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="token issued by `kuaijian cloud create-user`")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_db(settings: SettingsDep) -> Iterator[sqlite_utils.Database]:
    db = connect(settings.db_path)
    try:
        yield db
    finally:
        db.close()


DbDep = Annotated[sqlite_utils.Database, Depends(get_db)]


def get_optional_user(
    db: DbDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User | None:
    return None if credentials is None else user_for_token(db, credentials.credentials)


OptionalUserDep = Annotated[User | None, Depends(get_optional_user)]


def get_current_user(user: OptionalUserDep) -> User:
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUserDep = Annotated[User, Depends(get_current_user)]


def get_admin(user: CurrentUserDep) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    return user


AdminDep = Annotated[User, Depends(get_admin)]
