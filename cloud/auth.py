"""Who is calling: bearer tokens → `User`, and a user's scope (the subtree of their grid node).

Does: resolve a bearer token (a login session's access token or a machine token; only its SHA-256 is
stored) to a `User` — raising `Unauthenticated` with a code saying why not (`auth.invalid_token`,
`auth.expired`, `auth.revoked`) the moment a token expires or is revoked; create machine users with an
expiring token (`create_user`); express a user's scope as Python checks (`User.sees`) and resolve the grid
node a request names inside it (`scoped_node`, `resolve_scope`); the SQL condition of a scope is
`cloud.sqlfilter.subtree_sql(column, user.node_path)`. Admins have no node and see everything; so does the
console operator of a CLI command (`operator`).

Does not: passwords, logins, sessions or user administration (cloud.accounts); HTTP (cloud.api.deps maps
`Unauthenticated` to 401); decide what each role may do beyond "inside my subtree" (routes add role checks).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from cloud import audit
from cloud.db import Database, transaction
from cloud.errors import Conflict, Invalid, NotFound, Unauthenticated
from cloud.grid import WHOLE_GRID, Node, node_by_code

Role = Literal["admin", "county", "town", "village", "station"]
ROLES: tuple[Role, ...] = get_args(Role)
TOKEN_PREFIX = "kjc_"  # noqa: S105 - a prefix, not a secret
MACHINE_TOKEN_TTL = timedelta(days=365)


@dataclass(frozen=True)
class User:
    """An authenticated caller. `node_path` is "/" for admins (root of everything)."""

    id: int
    name: str
    role: Role
    node_id: int | None
    node_code: str | None
    node_path: str
    token_id: int = 0  # the token this request came with (logout revokes it); 0 = not from a token

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, path: str) -> bool:
        """True if a grid node with materialized `path` is inside this user's subtree."""
        return path.startswith(self.node_path)

    def manages(self, path: str) -> bool:
        """True if this user administers accounts on node `path`: strictly below their own node (the level
        above resets a password, never a peer); admins manage everyone."""
        return self.is_admin or (path.startswith(self.node_path) and path != self.node_path)


def operator(name: str) -> User:
    """The caller of an operator command at the console (`kuaijian cloud …`): the whole grid in scope, like an
    admin, with no token; what it does is audited under ``cli:<name>``."""
    return User(id=0, name=f"cli:{name}", role="admin", node_id=None, node_code=None, node_path="/")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def node_for_role(db: Database, role: str, node_code: str | None) -> int | None:
    """The grid_nodes.id a `role` user on `node_code` sits on (None for admin). Raises Invalid / NotFound."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", code="user.bad_role")
    if role == "admin":
        if node_code is not None:
            raise Invalid("an admin is not scoped to a node", code="user.bad_role")
        return None
    if node_code is None:
        raise Invalid(f"a {role} user needs --node", code="user.needs_node")
    row = db.execute("SELECT id, level FROM grid_nodes WHERE code = ?", [node_code]).fetchone()
    if row is None:
        raise NotFound(f"no grid node with code {node_code!r}", code="grid.unknown_node")
    if row[1] != role:
        raise Invalid(f"node {node_code} is a {row[1]}, not a {role}", code="user.role_mismatch")
    return int(row[0])


def insert_user(
    db: Database,
    name: str,
    role: str,
    node_code: str | None,
    now: datetime,
    *,
    created_by: str,
    display_name: str | None = None,
    password_hash: str | None = None,
) -> int:
    """Insert a user row (inside the caller's transaction or its own); returns its id. Raises Invalid,
    NotFound (unknown node) or Conflict (name taken)."""
    if not name.strip() or len(name) > 64 or any(c.isspace() for c in name):
        raise Invalid("a user name is 1-64 characters without spaces", code="user.bad_name")
    node_id = node_for_role(db, role, node_code)
    with transaction(db):
        if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
            raise Conflict(f"user {name!r} exists", code="user.exists")
        cur = db.execute(
            """INSERT INTO users (name, role, node_id, display_name, password_hash, password_changed_at,
                                  created_at, created_by)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [
                name,
                role,
                node_id,
                display_name,
                password_hash,
                now.isoformat() if password_hash else None,
                now.isoformat(),
                created_by,
            ],
        )
        return int(cur.fetchone()[0])


def issue_machine_token(db: Database, user_id: int, now: datetime, ttl: timedelta = MACHINE_TOKEN_TTL) -> str:
    """A new machine token for user `user_id`, valid for `ttl`; returns the token (only its hash is kept)."""
    token = new_token()
    with transaction(db):
        db.execute(
            """INSERT INTO tokens (user_id, kind, access_hash, access_expires_at, created_at)
               VALUES (?, 'machine', ?, ?, ?)""",
            [user_id, hash_token(token), (now + ttl).isoformat(), now.isoformat()],
        )
    return token


def create_user(
    db: Database,
    name: str,
    role: str,
    node_code: str | None,
    now: datetime,
    ttl: timedelta = MACHINE_TOKEN_TTL,
    created_by: str = "cli",
) -> str:
    """Create a user for a system (no password) scoped to grid node `node_code` (None for admin) and
    return its machine token, valid for `ttl`.

    The role must match the node's level (a town officer sits on a town node). Raises Invalid,
    NotFound (unknown node) or Conflict (name taken)."""
    with transaction(db):
        user_id = insert_user(db, name, role, node_code, now, created_by=created_by)
        token = issue_machine_token(db, user_id, now, ttl)
        audit.record(db, now, created_by, "user_add", name, role=role, node=node_code, machine_token=True)
    return token


def user_for_token(db: Database, token: str, now: datetime) -> User:
    """The user holding bearer `token` at `now`. Raises Unauthenticated (code auth.invalid_token, auth.expired
    or auth.revoked) — checked on every request, so expiry and revocation take effect at once."""
    row = db.execute(
        """SELECT u.id, u.name, u.role, u.node_id, g.code, g.path, t.id, t.access_expires_at, t.revoked_at,
                  u.revoked_at
           FROM tokens t JOIN users u ON u.id = t.user_id LEFT JOIN grid_nodes g ON g.id = u.node_id
           WHERE t.access_hash = ?""",
        [hash_token(token)],
    ).fetchone()
    if row is None:
        raise Unauthenticated("invalid token")
    if row[8] is not None or row[9] is not None:
        raise Unauthenticated("token revoked", code="auth.revoked")
    if row[7] is not None and datetime.fromisoformat(row[7]) <= now:
        raise Unauthenticated("token expired", code="auth.expired")
    role: Role = row[2]
    if role != "admin" and row[5] is None:
        # scoped user whose node vanished: no access rather than everything
        raise Unauthenticated("the user's grid node is gone", code="auth.revoked")
    return User(
        id=int(row[0]),
        name=str(row[1]),
        role=role,
        node_id=row[3],
        node_code=row[4],
        node_path="/" if role == "admin" else str(row[5]),
        token_id=int(row[6]),
    )


def scoped_node(db: Database, user: User, code: str) -> Node:
    """The grid node `code` if it lies in the user's subtree. Raises NotFound otherwise, for unknown codes too
    (existence is not leaked)."""
    node = node_by_code(db, code)
    if node is None or not user.sees(node.path):
        raise NotFound(f"节点 {code} 不在您的辖区 (grid node {code!r} not found in your scope)")
    return node


def resolve_scope(db: Database, user: User, code: str | None) -> Node:
    """The node a request is about: `code` inside the user's subtree (`scoped_node`) or, when no code is given
    (None or an empty query parameter), the user's own node — the whole grid for an admin."""
    if code:
        return scoped_node(db, user, code)
    if user.is_admin:
        return WHOLE_GRID
    if user.node_code is None:
        raise NotFound("您的网格节点已不存在 (your grid node no longer exists)")
    return scoped_node(db, user, user.node_code)
