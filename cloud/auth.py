"""Users, bearer tokens and node scoping.

Does: issue tokens (`create_user`; only the SHA-256 of a token is stored), resolve a token to a
`User`, and express a user's scope — the subtree of their grid node — as Python checks and SQL fragments.
Admins have no node and see everything.

Does not: HTTP (cloud.api.deps turns a missing/unknown token into 401), or decide what each role may do
beyond "inside my subtree" (routes add role checks such as admin-only dead letters).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import sqlite_utils

from cloud.db import transaction
from cloud.errors import Conflict, Invalid, NotFound
from cloud.sqlfilter import subtree_sql

Role = Literal["admin", "county", "town", "village", "station"]
ROLES: tuple[Role, ...] = get_args(Role)
TOKEN_PREFIX = "kjc_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class User:
    """An authenticated caller. `node_path` is "/" for admins (root of everything)."""

    id: int
    name: str
    role: Role
    node_id: int | None
    node_code: str | None
    node_path: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, path: str) -> bool:
        """True if a grid node with materialized `path` is inside this user's subtree."""
        return path.startswith(self.node_path)

    def scope_sql(self, node_column: str = "node_id") -> tuple[str, list[object]]:
        """SQL condition restricting `node_column` (a grid_nodes.id column) to this user's subtree."""
        if self.is_admin:
            return "1=1", []
        return subtree_sql(node_column, self.node_path)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: sqlite_utils.Database, name: str, role: str, node_code: str | None, now: datetime) -> str:
    """Create a user scoped to grid node `node_code` (None for admin) and return its bearer token.

    The role must match the node's level (a town officer sits on a town node). Raises Invalid,
    NotFound (unknown node) or Conflict (name taken).
    """
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    if not name.strip():
        raise Invalid("user name must not be empty")
    node_id: int | None = None
    if role == "admin":
        if node_code is not None:
            raise Invalid("an admin is not scoped to a node")
    else:
        if node_code is None:
            raise Invalid(f"a {role} user needs --node")
        row = db.execute("SELECT id, level FROM grid_nodes WHERE code = ?", [node_code]).fetchone()
        if row is None:
            raise NotFound(f"no grid node with code {node_code!r}")
        if row[1] != role:
            raise Invalid(f"node {node_code} is a {row[1]}, not a {role}")
        node_id = int(row[0])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(db):
        if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
            raise Conflict(f"user {name!r} exists")
        db.execute(
            "INSERT INTO users (name, role, node_id, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            [name, role, node_id, hash_token(token), now.isoformat()],
        )
    return token


def user_for_token(db: sqlite_utils.Database, token: str) -> User | None:
    """The user holding `token`, or None."""
    row = db.execute(
        """SELECT u.id, u.name, u.role, u.node_id, g.code, g.path
           FROM users u LEFT JOIN grid_nodes g ON g.id = u.node_id WHERE u.token_hash = ?""",
        [hash_token(token)],
    ).fetchone()
    if row is None:
        return None
    role: Role = row[2]
    if role != "admin" and row[5] is None:
        return None  # scoped user whose node vanished: no access rather than everything
    return User(
        id=int(row[0]),
        name=str(row[1]),
        role=role,
        node_id=row[3],
        node_code=row[4],
        node_path="/" if role == "admin" else str(row[5]),
    )


def require_in_scope(user: User, path: str | None, what: str) -> None:
    """Raise NotFound (not 'forbidden', so existence is not leaked) if `path` is outside the scope."""
    if path is None or not user.sees(path):
        raise NotFound(f"{what} not found in your scope")
