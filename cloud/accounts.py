"""Accounts of people: passwords (argon2id), login sessions, lockout, password change and reset, revocation.

Does:
- `login(name, password)` → a `Session`: a short-lived access token (bearer, `access_token_minutes`) and a
  refresh token (`refresh_token_hours`); `refresh` rotates both (the old refresh token stops working);
  `logout` revokes the session. Only SHA-256 hashes of tokens are stored (table `tokens`).
- Lockout: `login_max_failures` consecutive wrong passwords lock the account for `login_lockout_minutes`;
  while locked even the right password is refused (`Locked`, code auth.locked). A success resets the count.
- Administration by the level above: a user manages accounts strictly below their own grid node (a town
  officer its villages' and stations' users; admins everyone) — add, reset a password, revoke. Revoking
  disables the user and all its tokens at once. Everyone may change their own password.
- Every login, failed or refused login, logout and user change is written to the audit log (cloud.audit),
  in the same transaction as the change it records.

Does not: resolve bearer tokens on requests or scope data (cloud.auth); HTTP (cloud.api.routes.auth).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cloud import audit
from cloud.auth import Role, User, hash_token, insert_user, issue_machine_token, new_token
from cloud.db import Database, transaction
from cloud.errors import Invalid, Locked, NotFound, Unauthenticated
from cloud.settings import Settings

_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)
# verified against when the user does not exist, so an unknown name costs the same time as a wrong password
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
CLI = "cli"


@dataclass(frozen=True)
class Policy:
    access_ttl: timedelta
    refresh_ttl: timedelta
    machine_ttl: timedelta
    max_failures: int
    lockout: timedelta
    min_password_length: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            access_ttl=timedelta(minutes=settings.access_token_minutes),
            refresh_ttl=timedelta(hours=settings.refresh_token_hours),
            machine_ttl=timedelta(days=settings.machine_token_days),
            max_failures=settings.login_max_failures,
            lockout=timedelta(minutes=settings.login_lockout_minutes),
            min_password_length=settings.password_min_length,
        )


@dataclass(frozen=True)
class Session:
    access_token: str
    issued_at: datetime
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: str
    role: Role
    node: str | None


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    node: str | None
    node_name: str | None
    display_name: str | None
    has_password: bool
    locked_until: str | None
    revoked_at: str | None
    created_at: str
    created_by: str | None


def hash_password(password: str, policy: Policy) -> str:
    if len(password) < policy.min_password_length:
        raise Invalid(
            f"a password needs at least {policy.min_password_length} characters", code="auth.password_short"
        )
    return _HASHER.hash(password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _new_session(db: Database, user_id: int, now: datetime, policy: Policy) -> tuple[str, str]:
    access, refresh = new_token(), new_token()
    db.execute(
        """INSERT INTO tokens (user_id, kind, access_hash, access_expires_at, refresh_hash, refresh_expires_at,
                               created_at) VALUES (?, 'session', ?, ?, ?, ?, ?)""",
        [
            user_id,
            hash_token(access),
            (now + policy.access_ttl).isoformat(),
            hash_token(refresh),
            (now + policy.refresh_ttl).isoformat(),
            now.isoformat(),
        ],
    )
    return access, refresh


def _session(db: Database, user_id: int, name: str, role: Role, now: datetime, policy: Policy) -> Session:
    access, refresh = _new_session(db, user_id, now, policy)
    node = db.execute(
        "SELECT g.code FROM users u LEFT JOIN grid_nodes g ON g.id = u.node_id WHERE u.id = ?", [user_id]
    ).fetchone()
    return Session(
        access,
        now,
        now + policy.access_ttl,
        refresh,
        now + policy.refresh_ttl,
        name,
        role,
        node[0] if node else None,
    )


def login(
    db: Database, name: str, password: str, now: datetime, policy: Policy, ip: str | None = None
) -> Session:
    """Check `name`'s password and open a session. Raises Unauthenticated (auth.bad_credentials — the same
    for an unknown name, a wrong password, a revoked user or one without a password) or Locked."""
    row = db.execute(
        "SELECT id, role, password_hash, failed_logins, locked_until, revoked_at FROM users WHERE name = ?",
        [name],
    ).fetchone()
    ok = _verify(row[2] if row else None, password)  # always one argon2 verification: no timing oracle
    refused: Unauthenticated | None = None
    # the failure counter and the audit entry are committed before the refusal is raised
    with transaction(db):
        if row is None or row[5] is not None or row[2] is None:
            audit.record(db, now, "-", "login_failed", name, ip, reason="unknown or disabled user")
            refused = Unauthenticated("wrong user name or password", code="auth.bad_credentials")
        elif row[4] is not None and datetime.fromisoformat(row[4]) > now:
            audit.record(db, now, "-", "login_locked", name, ip, locked_until=row[4])
            refused = Locked(f"account locked until {row[4]}")
        elif not ok:
            failures = int(row[3]) + 1
            locked_until = (now + policy.lockout).isoformat() if failures >= policy.max_failures else None
            db.execute(
                "UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?",
                [0 if locked_until else failures, locked_until, row[0]],
            )
            audit.record(db, now, "-", "login_failed", name, ip, failures=failures, locked_until=locked_until)
            refused = (
                Locked(f"account locked until {locked_until}")
                if locked_until
                else Unauthenticated("wrong user name or password", code="auth.bad_credentials")
            )
        else:
            if _HASHER.check_needs_rehash(row[2]):
                db.execute(
                    "UPDATE users SET password_hash = ? WHERE id = ?", [_HASHER.hash(password), row[0]]
                )
            db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", [row[0]])
            audit.record(db, now, name, "login", name, ip)
            return _session(db, int(row[0]), name, row[1], now, policy)
    raise refused


def refresh(
    db: Database, refresh_token: str, now: datetime, policy: Policy, ip: str | None = None
) -> Session:
    """Exchange a valid refresh token for a new session; the old one is revoked. Raises Unauthenticated."""
    refused: Unauthenticated
    with transaction(db):
        row = db.execute(
            """SELECT t.id, t.refresh_expires_at, t.revoked_at, u.id, u.name, u.role, u.revoked_at
               FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.refresh_hash = ? AND t.kind = 'session'""",
            [hash_token(refresh_token)],
        ).fetchone()
        if row is None:
            refused = Unauthenticated("invalid refresh token")
        elif row[2] is not None or row[6] is not None:
            # a revoked refresh token presented again: recorded (it may have been stolen)
            audit.record(db, now, "-", "refresh_failed", str(row[4]), ip, reason="revoked")
            refused = Unauthenticated("session revoked", code="auth.revoked")
        elif datetime.fromisoformat(row[1]) <= now:
            refused = Unauthenticated("session expired", code="auth.expired")
        else:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", [now.isoformat(), row[0]])
            return _session(db, int(row[3]), str(row[4]), row[5], now, policy)
    raise refused


def logout(db: Database, user: User, now: datetime, ip: str | None = None) -> None:
    """Revoke the token `user` authenticated with (a session's access and refresh tokens together)."""
    with transaction(db):
        db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [now.isoformat(), user.token_id],
        )
        audit.record(db, now, user.name, "logout", user.name, ip)


def _target(db: Database, actor: User | None, name: str) -> tuple[int, str]:
    """(id, node path) of user `name` if `actor` (None = the command line) may administer it; NotFound else."""
    row = db.execute(
        """SELECT u.id, COALESCE(g.path, '/'), u.role FROM users u LEFT JOIN grid_nodes g ON g.id = u.node_id
           WHERE u.name = ?""",
        [name],
    ).fetchone()
    if row is None or (actor is not None and (row[2] == "admin" and not actor.is_admin)):
        raise NotFound(f"no user {name!r} you manage", code="user.not_found")
    if actor is not None and not actor.manages(str(row[1])):
        raise NotFound(f"no user {name!r} you manage", code="user.not_found")
    return int(row[0]), str(row[1])


def add_user(
    db: Database,
    actor: User | None,
    name: str,
    role: str,
    node_code: str | None,
    password: str,
    now: datetime,
    policy: Policy,
    display_name: str | None = None,
    ip: str | None = None,
) -> None:
    """Add a person with a password. `actor` None = the command line (anything); otherwise the new user's
    node must be strictly below the actor's."""
    password_hash = hash_password(password, policy)
    with transaction(db):
        insert_user(
            db,
            name,
            role,
            node_code,
            now,
            created_by=actor.name if actor else CLI,
            display_name=display_name,
            password_hash=password_hash,
        )
        _target(db, actor, name)  # raises (and rolls back) when the node is not below the actor's
        audit.record(db, now, actor.name if actor else CLI, "user_add", name, ip, role=role, node=node_code)


def issue_token(db: Database, actor: User | None, name: str, now: datetime, policy: Policy) -> str:
    """A new machine token for an existing user (one the actor manages); returns it."""
    user_id, _ = _target(db, actor, name)
    with transaction(db):
        token = issue_machine_token(db, user_id, now, policy.machine_ttl)
        audit.record(db, now, actor.name if actor else CLI, "token_issue", name)
    return token


def change_password(
    db: Database,
    user: User,
    old: str,
    new: str,
    now: datetime,
    policy: Policy,
    ip: str | None = None,
) -> None:
    """The user changes their own password (the old one is required). Other sessions are revoked."""
    row = db.execute("SELECT password_hash FROM users WHERE id = ?", [user.id]).fetchone()
    if row is None or not _verify(row[0], old):
        raise Unauthenticated("the current password is wrong", code="auth.bad_credentials")
    new_hash = hash_password(new, policy)
    with transaction(db):
        db.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            [new_hash, now.isoformat(), user.id],
        )
        db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind = 'session' AND id != ? AND revoked_at IS NULL",
            [now.isoformat(), user.id, user.token_id],
        )
        audit.record(db, now, user.name, "password_change", user.name, ip)


def reset_password(
    db: Database,
    actor: User | None,
    name: str,
    new: str,
    now: datetime,
    policy: Policy,
    ip: str | None = None,
) -> None:
    """The level above (or the command line) sets a new password for `name`; unlocks it and revokes its
    sessions."""
    user_id, _ = _target(db, actor, name)
    new_hash = hash_password(new, policy)
    with transaction(db):
        db.execute(
            """UPDATE users SET password_hash = ?, password_changed_at = ?, failed_logins = 0, locked_until = NULL
               WHERE id = ?""",
            [new_hash, now.isoformat(), user_id],
        )
        db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind = 'session' AND revoked_at IS NULL",
            [now.isoformat(), user_id],
        )
        audit.record(db, now, actor.name if actor else CLI, "password_reset", name, ip)


def revoke_user(db: Database, actor: User | None, name: str, now: datetime, ip: str | None = None) -> None:
    """Disable `name`: no more logins, and every token it holds stops working at once."""
    user_id, _ = _target(db, actor, name)
    if actor is not None and actor.id == user_id:
        raise Invalid("you cannot revoke yourself", code="user.revoke_self")
    with transaction(db):
        db.execute(
            "UPDATE users SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", [now.isoformat(), user_id]
        )
        db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
            [now.isoformat(), user_id],
        )
        audit.record(db, now, actor.name if actor else CLI, "user_revoke", name, ip)


def list_users(db: Database, actor: User | None) -> list[Account]:
    """Users the actor manages, plus the actor (None = the command line: everyone), by node then name."""
    rows = db.execute(
        """SELECT u.id, u.name, u.role, g.code, g.name, u.display_name, u.password_hash IS NOT NULL,
                  u.locked_until, u.revoked_at, u.created_at, u.created_by, COALESCE(g.path, '/')
           FROM users u LEFT JOIN grid_nodes g ON g.id = u.node_id ORDER BY COALESCE(g.path, '/'), u.name"""
    ).fetchall()
    return [
        Account(r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9], r[10])
        for r in rows
        if actor is None
        or actor.id == r[0]
        or (actor.manages(str(r[11])) and (r[2] != "admin" or actor.is_admin))
    ]
