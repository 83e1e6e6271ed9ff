"""The durable notification queue and its fan-out from the audit tables.

Does: `fan_out` reads case actions and risk alerts newer than its cursors (``notify_cursor``), finds the
channels that subscribe to each (a channel of unit U receives the events of cases whose current or origin
node lies under U, and of risk alerts on nodes under U; a user's channel uses the user's node; events older
than the channel are not sent to it), and inserts one ``notifications`` row per (channel, event) — the
cursor moves in the same transaction, so an event is queued once even if the process dies. `claim_due`
leases due rows to one sender (several `cloud serve` processes never send the same row at once);
`settle` records an attempt: sent, or failed with the next attempt time (exponential backoff, at most
`MAX_BACKOFF_S`), or expired after `MAX_AGE`.

Does not: HTTP (cloud.notify.sender), or message formats (cloud.notify.channels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cloud.db import Database, transaction
from cloud.notify.channels import Channel, Event
from kuaijian_schema.labels import zh

ACTION_NAMES = {
    "report": "申报",
    "assign": "交办",
    "remind": "催办",
    "feedback": "反馈",
    "escalate": "逐级上报",
    "close": "办结",
    "note": "备注",
}
LEVEL_NAMES = {"county": "区县", "town": "乡镇", "village": "村", "station": "服务站"}
EVENT_KINDS = (*ACTION_NAMES, "risk")
DEFAULT_EVENTS = ("report", "assign", "remind", "feedback", "escalate", "close", "risk")
RISK_KIND_NAMES = {
    "positivity_rise": "阳性率上升",
    "producer_repeat": "生产主体多次阳性",
    "station_invalid": "服务站无效检测率上升",
}
SEVERITY_NAMES = {"high": "高", "medium": "中"}
STATUS_NAMES = {"open": "待交办", "assigned": "已交办", "feedback": "已反馈", "closed": "已办结"}
BATCH = 1000
MAX_BACKOFF_S = 3600.0
FIRST_BACKOFF_S = 10.0
MAX_AGE = timedelta(days=7)
LEASE = timedelta(seconds=60)


_EventRow = tuple[int, str, Event, tuple[str, ...], str | None]
"""(source id, time, event, grid paths it concerns, risk severity or None)"""


@dataclass(frozen=True)
class _Sub:
    channel_id: int
    path: str
    events: frozenset[str]
    min_severity: str
    created_at: str


def _subscriptions(db: Database) -> list[_Sub]:
    rows = db.execute(
        """SELECT c.id, COALESCE(g.path, ug.path, CASE WHEN u.role = 'admin' THEN '/' END), c.events_json,
                  c.min_severity, c.created_at
           FROM notify_channels c
           LEFT JOIN grid_nodes g ON g.id = c.node_id
           LEFT JOIN users u ON u.id = c.user_id
           LEFT JOIN grid_nodes ug ON ug.id = u.node_id
           WHERE c.enabled = 1"""
    ).fetchall()
    subs = []
    for cid, path, events, severity, created in rows:
        if path is None:
            continue  # owner gone: nothing to send
        subs.append(_Sub(int(cid), str(path), frozenset(json.loads(events)), str(severity), str(created)))
    return subs


def _cursor(db: Database, name: str) -> int:
    row = db.execute("SELECT last_id FROM notify_cursor WHERE name = ?", [name]).fetchone()
    return 0 if row is None else int(row[0])


def _set_cursor(db: Database, name: str, last_id: int) -> None:
    db.execute(
        "INSERT INTO notify_cursor (name, last_id) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
        [name, last_id],
    )


def _zone(tz: ZoneInfo) -> str:
    return "北京时间" if str(tz) in ("Asia/Shanghai", "Asia/Chongqing", "PRC") else str(tz)


def _local(text: str | None, tz: ZoneInfo) -> str:
    if not text:
        return "—"
    return datetime.fromisoformat(text).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _case_events(db: Database, after: int, tz: ZoneInfo) -> list[_EventRow]:
    rows = db.execute(
        """SELECT a.id, a.at, a.actor, a.action, a.note, c.id, c.station, c.product, c.analyte, c.level,
                  c.deadline, c.assignee, c.status, g.path, o.path, o.name, s.name
           FROM case_actions a JOIN cases c ON c.id = a.case_id
           JOIN grid_nodes g ON g.id = c.node_id
           JOIN grid_nodes o ON o.id = c.origin_node_id
           LEFT JOIN stations st ON st.id = c.station
           LEFT JOIN grid_nodes s ON s.id = st.node_id
           WHERE a.id > ? ORDER BY a.id LIMIT ?""",
        [after, BATCH],
    ).fetchall()
    out: list[_EventRow] = []
    for (aid, at, actor, action, note, cid, station, product, analyte, level, deadline, assignee, status,
         path, origin_path, origin_name, station_name) in rows:  # fmt: skip
        verb = ACTION_NAMES.get(action, action)
        lines = [
            f"服务站：{station_name or origin_name}（{station}）",
            f"产品 / 项目：{product} · {zh(analyte)}",
            f"当前层级：{LEVEL_NAMES.get(level, level)} · 状态：{STATUS_NAMES.get(status, status)} · 期限：{_local(deadline, tz)}（{_zone(tz)}）",
            f"操作人：{actor}" + (f" · 承办人：{assignee}" if assignee else ""),
        ]
        if note:
            lines.append(f"说明：{note}")
        event = Event(
            key=f"case-action:{aid}",
            kind=str(action),
            title=f"【快检】案件 #{cid} {verb}",
            text="\n".join(lines),
            data={
                "case_id": cid,
                "action": action,
                "station": station,
                "product": product,
                "analyte": analyte,
                "level": level,
                "deadline": deadline,
                "at": at,
            },
        )
        out.append((int(aid), str(at), event, (str(path), str(origin_path)), None))
    return out


def _risk_events(db: Database, after: int, tz: ZoneInfo) -> list[_EventRow]:
    rows = db.execute(
        """SELECT a.id, a.created_at, a.kind, a.severity, a.period, a.analyte, a.product, a.station,
                  a.observed, a.tests, a.expected_rate, a.p_value, g.path, g.name, p.name
           FROM risk_alerts a JOIN grid_nodes g ON g.id = a.node_id
           LEFT JOIN producers p ON p.id = a.producer_id
           WHERE a.id > ? ORDER BY a.id LIMIT ?""",
        [after, BATCH],
    ).fetchall()
    out: list[_EventRow] = []
    for (rid, created, kind, severity, period, analyte, product, station, observed, tests, rate, p_value,
         path, place, producer) in rows:  # fmt: skip
        if kind == "positivity_rise":
            what = f"{place}：{product} · {zh(analyte)}，{period} 阳性 {observed}/{tests}（基线约 {float(rate) * 100:.1f}%）"
        elif kind == "producer_repeat":
            what = f"{producer}（{place}）近期 {observed} 个批次阳性"
        else:
            what = (
                f"{place}（{station}）{period} 无效检测 {observed}/{tests}（基线约 {float(rate) * 100:.1f}%）"
            )
        event = Event(
            key=f"risk:{rid}",
            kind="risk",
            title=f"【快检】风险预警（{SEVERITY_NAMES.get(severity, severity)}）：{RISK_KIND_NAMES.get(kind, kind)}",
            text=what + f"\n时间：{_local(created, tz)}（{_zone(tz)}）",
            data={
                "alert_id": rid,
                "kind": kind,
                "severity": severity,
                "period": period,
                "analyte": analyte,
                "product": product,
                "observed": observed,
                "tests": tests,
                "p_value": p_value,
            },
        )
        out.append((int(rid), str(created), event, (str(path),), str(severity)))
    return out


def fan_out(db: Database, now: datetime, tz: ZoneInfo) -> int:
    """Queue new events for their channels; returns the number of notification rows created."""
    created = 0
    with transaction(db):
        subs = _subscriptions(db)
        for name, reader in (("case_actions", _case_events), ("risk_alerts", _risk_events)):
            while True:
                events = reader(db, _cursor(db, name), tz)
                if not events:
                    break
                for _id, at, event, paths, severity in events:
                    for sub in subs:
                        if event.kind not in sub.events or at < sub.created_at:
                            continue
                        if severity is not None and sub.min_severity == "high" and severity != "high":
                            continue
                        if not any(p.startswith(sub.path) for p in paths):
                            continue
                        cur = db.execute(
                            """INSERT INTO notifications (channel_id, event_key, kind, title, body, data_json,
                                   status, attempts, next_attempt_at, created_at)
                               VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT DO NOTHING""",
                            [
                                sub.channel_id,
                                event.key,
                                event.kind,
                                event.title,
                                event.text,
                                json.dumps(event.data, ensure_ascii=False),
                                now.isoformat(),
                                now.isoformat(),
                            ],
                        )
                        created += cur.rowcount
                _set_cursor(db, name, events[-1][0])
    return created


@dataclass(frozen=True)
class Due:
    id: int
    attempts: int
    created_at: datetime
    channel: Channel
    event: Event


def claim_due(db: Database, now: datetime, limit: int = 100) -> list[Due]:
    """Lease up to `limit` due rows (pending, next attempt reached, no live lease) to this sender."""
    out: list[Due] = []
    with transaction(db):
        rows = db.execute(
            """SELECT n.id, n.attempts, n.created_at, n.event_key, n.kind, n.title, n.body, n.data_json,
                      c.id, c.kind, c.url, c.secret, c.phones_json
               FROM notifications n JOIN notify_channels c ON c.id = n.channel_id
               WHERE n.status = 'pending' AND n.next_attempt_at <= ?
                 AND (n.lease_until IS NULL OR n.lease_until < ?)
               ORDER BY n.next_attempt_at, n.id LIMIT ?""",
            [now.isoformat(), now.isoformat(), limit],
        ).fetchall()
        for nid, attempts, created, key, kind, title, body, data, cid, ckind, url, secret, phones in rows:
            db.execute(
                "UPDATE notifications SET lease_until = ? WHERE id = ?", [(now + LEASE).isoformat(), nid]
            )
            out.append(
                Due(
                    id=int(nid),
                    attempts=int(attempts),
                    created_at=datetime.fromisoformat(created),
                    channel=Channel(int(cid), ckind, str(url), secret, tuple(json.loads(phones or "[]"))),
                    event=Event(str(key), str(kind), str(title), str(body), json.loads(data or "{}")),
                )
            )
    return out


def backoff(attempts: int) -> timedelta:
    """Delay before attempt number `attempts + 1`: 10 s, 20 s, 40 s … capped at one hour."""
    return timedelta(seconds=min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, attempts - 1)))


def settle(db: Database, due: Due, now: datetime, ok: bool, status: int | None, error: str | None) -> str:
    """Record one attempt; returns the row's new status (sent | pending | expired)."""
    attempts = due.attempts + 1
    if ok:
        new = "sent"
    elif now - due.created_at >= MAX_AGE:
        new = "expired"
    else:
        new = "pending"
    with transaction(db):
        db.execute(
            """UPDATE notifications SET status = ?, attempts = ?, last_status = ?, last_error = ?,
                   last_attempt_at = ?, sent_at = ?, next_attempt_at = ?, lease_until = NULL WHERE id = ?""",
            [
                new,
                attempts,
                status,
                error,
                now.isoformat(),
                now.isoformat() if ok else None,
                (now + backoff(attempts)).isoformat(),
                due.id,
            ],
        )
    return new


def log_rows(
    db: Database, where: str, params: list[Any], limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """The audit of notifications (joined with their channel), newest first."""
    total = int(
        db.execute(
            f"SELECT COUNT(*) FROM notifications n JOIN notify_channels c ON c.id = n.channel_id WHERE {where}",  # noqa: S608
            params,
        ).fetchone()[0]
    )
    cur = db.execute(
        f"""SELECT n.id, n.channel_id, c.name AS channel_name, c.kind AS channel_kind, n.event_key, n.kind,
                   n.title, n.body, n.status, n.attempts, n.last_status, n.last_error, n.created_at,
                   n.last_attempt_at, n.sent_at
            FROM notifications n JOIN notify_channels c ON c.id = n.channel_id
            WHERE {where} ORDER BY n.id DESC LIMIT ? OFFSET ?""",  # noqa: S608 - our SQL
        [*params, limit, offset],
    )
    cols = [c[0] for c in cur.description]
    return total, [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
