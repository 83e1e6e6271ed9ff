"""Notification channels (subscriptions): who gets which events, where.

A channel belongs to a unit (a grid node: it receives the events of everything under that node) or to one
user (``personal``: it receives what the user's node would). It names its kind and URL (cloud.notify.channels),
an optional secret (signing key or gateway token; never returned by the API), phone numbers for SMS, the event
kinds it wants (default: every case action but notes, and risk alerts) and the lowest risk severity.

Does: add, list (scoped), change (enable/disable, events) and delete channels; the audit list of what was sent.
Does not: send anything (cloud.notify.sender).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from cloud.auth import User, scoped_node
from cloud.db import Database, transaction
from cloud.errors import Invalid, NotFound
from cloud.notify import queue
from cloud.notify.channels import KINDS, check_url
from cloud.sqlfilter import subtree_sql

PHONE_RE = re.compile(r"^\+?\d{5,15}$")
_COLUMNS = (
    "c.id, c.name, c.kind, c.url, c.secret IS NOT NULL AS has_secret, c.phones_json, c.events_json, "
    "c.min_severity, c.enabled, c.created_at, c.created_by, g.code AS node_code, u.name AS user_name"
)


def _item(row: dict[str, Any]) -> dict[str, Any]:
    item = dict(row)
    item["phones"] = json.loads(item.pop("phones_json") or "[]")
    item["events"] = json.loads(item.pop("events_json") or "[]")
    item["has_secret"] = bool(item["has_secret"])
    item["enabled"] = bool(item["enabled"])
    return item


def _scope(user: User) -> tuple[str, list[Any]]:
    where, params = subtree_sql("c.node_id", user.node_path)
    return f"((({where}) AND c.node_id IS NOT NULL) OR c.user_id = ?)", [*params, user.id]


def _select(db: Database, where: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = db.execute(
        f"""SELECT {_COLUMNS} FROM notify_channels c LEFT JOIN grid_nodes g ON g.id = c.node_id
            LEFT JOIN users u ON u.id = c.user_id WHERE {where} ORDER BY c.id""",  # noqa: S608 - our SQL
        params,
    )
    cols = [c[0] for c in cur.description]
    return [_item(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]


def list_channels(db: Database, user: User) -> list[dict[str, Any]]:
    where, params = _scope(user)
    return _select(db, f"{where} AND c.deleted_at IS NULL", params)


def _check_events(events: list[str] | None) -> list[str]:
    if events is None:
        return list(queue.DEFAULT_EVENTS)
    unknown = sorted(set(events) - set(queue.EVENT_KINDS))
    if unknown or not events:
        raise Invalid(
            f"events must be a non-empty list of {', '.join(queue.EVENT_KINDS)}; unknown: {unknown}"
        )
    return sorted(set(events))


def add_channel(
    db: Database,
    user: User,
    now: datetime,
    *,
    name: str,
    kind: str,
    url: str,
    secret: str | None = None,
    phones: list[str] | None = None,
    events: list[str] | None = None,
    min_severity: str = "medium",
    node: str | None = None,
    personal: bool = False,
) -> dict[str, Any]:
    """Create a channel for grid node `node` (default: the user's own node) or, `personal`, for the user."""
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    if not name.strip():
        raise Invalid("a channel needs a name")
    check_url(url)
    phones = phones or []
    if kind == "sms" and not phones:
        raise Invalid("an sms channel needs at least one phone number")
    bad = [p for p in phones if not PHONE_RE.match(p)]
    if bad:
        raise Invalid(f"not phone numbers: {', '.join(bad)}")
    if min_severity not in ("medium", "high"):
        raise Invalid("min_severity must be medium or high")
    chosen = _check_events(events)
    node_id: int | None = None
    user_id: int | None = None
    if personal:
        user_id = user.id
    else:
        code = node or user.node_code
        if code is None:
            raise Invalid("an admin's unit channel needs a node (or make it personal)")
        node_id = scoped_node(db, user, code).id
    with transaction(db):
        cur = db.execute(
            """INSERT INTO notify_channels (name, kind, url, secret, phones_json, events_json, min_severity,
                   node_id, user_id, enabled, created_at, created_by)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id""",
            [
                name.strip(),
                kind,
                url,
                secret or None,
                json.dumps(phones),
                json.dumps(chosen),
                min_severity,
                node_id,
                user_id,
                now.isoformat(),
                user.name,
            ],
        )
        channel_id = int(cur.fetchone()[0])
    return _select(db, "c.id = ?", [channel_id])[0]


def _visible(db: Database, user: User, channel_id: int) -> dict[str, Any]:
    where, params = _scope(user)
    found = _select(db, f"c.id = ? AND c.deleted_at IS NULL AND {where}", [channel_id, *params])
    if not found:
        raise NotFound(f"channel {channel_id} not found in your scope")
    return found[0]


def update_channel(
    db: Database,
    user: User,
    channel_id: int,
    *,
    enabled: bool | None = None,
    events: list[str] | None = None,
) -> dict[str, Any]:
    _visible(db, user, channel_id)
    with transaction(db):
        if enabled is not None:
            db.execute("UPDATE notify_channels SET enabled = ? WHERE id = ?", [int(enabled), channel_id])
        if events is not None:
            db.execute(
                "UPDATE notify_channels SET events_json = ? WHERE id = ?",
                [json.dumps(_check_events(events)), channel_id],
            )
    return _visible(db, user, channel_id)


def delete_channel(db: Database, user: User, channel_id: int, now: datetime) -> None:
    """Delete a channel and its queued (unsent) notifications; the audit of what was sent stays."""
    _visible(db, user, channel_id)
    with transaction(db):
        db.execute("DELETE FROM notifications WHERE channel_id = ? AND status = 'pending'", [channel_id])
        db.execute(
            "UPDATE notify_channels SET enabled = 0, deleted_at = ? WHERE id = ?",
            [now.isoformat(), channel_id],
        )


def sent_log(
    db: Database, user: User, *, status: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    where, params = _scope(user)
    clauses = [f"({where})"]
    if status is not None:
        if status not in ("pending", "sent", "expired"):
            raise Invalid("status must be pending, sent or expired")
        clauses.append("n.status = ?")
        params.append(status)
    return queue.log_rows(db, " AND ".join(clauses), params, limit, offset)
