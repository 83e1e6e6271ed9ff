"""The audit log of accounts: every login (and failed or refused one), logout, user change and token issue.

Does: append an entry (`record`, inside the caller's transaction) and read entries back (`entries`).

Does not: case actions (cloud.cases keeps those on the case's own timeline) or decide anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloud.db import Database

ACTIONS = (
    "login",
    "login_failed",
    "login_locked",
    "logout",
    "refresh_failed",
    "user_add",
    "user_revoke",
    "password_change",
    "password_reset",
    "token_issue",
)


@dataclass(frozen=True)
class Entry:
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    ip: str | None
    detail: dict[str, Any]


def record(
    db: Database,
    now: datetime,
    actor: str,
    action: str,
    target: str | None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    """Append one entry. `actor` is the user acting ("cli" for the command line, "-" for an unknown caller)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    db.execute(
        "INSERT INTO audit_log (at, actor, action, target, ip, detail_json) VALUES (?, ?, ?, ?, ?, ?)",
        [
            now.isoformat(),
            actor,
            action,
            target,
            ip,
            json.dumps(detail, ensure_ascii=False) if detail else None,
        ],
    )


def entries(
    db: Database, *, target: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[int, list[Entry]]:
    """Newest first; optionally only those about user `target`. Returns (total, page)."""
    where, params = ("WHERE target = ?", [target]) if target is not None else ("", [])
    total = int(db.execute(f"SELECT COUNT(*) FROM audit_log {where}", params).fetchone()[0])  # noqa: S608
    rows = db.execute(
        f"""SELECT id, at, actor, action, target, ip, detail_json FROM audit_log {where}
            ORDER BY id DESC LIMIT ? OFFSET ?""",  # noqa: S608 - constant fragments only
        [*params, limit, offset],
    ).fetchall()
    return total, [
        Entry(int(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else {}) for r in rows
    ]
