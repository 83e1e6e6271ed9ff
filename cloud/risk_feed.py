"""What users see of the risk early warning (风险预警): the scoped alert feed, where to test next, the map.

Does:
- `list_alerts` (alerts on nodes in the user's subtree, newest first; by kind, severity, since,
  unacknowledged) and `acknowledge` (签收; NotFound outside the user's scope).
- `priorities`: analyte × product × place cells ranked by their estimated positive rate over a planning
  window, for next period's sampling tasks.
- `map_points`: the stations in the user's scope with a point (their own, else the nearest ancestor's), online
  state, backlog and open alerts on them or their village/town, plus the outline (convex hull).

Does not: scan results or store alerts (cloud.risk), send notifications (cloud.notify), create tasks
(cloud.tasks), or know about HTTP.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.auth import User
from cloud.db import Database, transaction
from cloud.errors import Invalid, NotFound
from cloud.risk import KINDS, SEVERITIES, _ancestor, _nodes
from cloud.riskstats import priority
from cloud.sqlfilter import subtree_sql

# ---------------------------------------------------------------- reading the feed


def _alert_item(row: dict[str, Any]) -> dict[str, Any]:
    item = dict(row)
    item["detail"] = json.loads(item.pop("detail_json") or "{}")
    return item


def list_alerts(
    db: Database,
    user: User,
    *,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    unacknowledged: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Alerts on nodes in the user's subtree, newest first: (total, page)."""
    where, params = subtree_sql("a.node_id", user.node_path)
    clauses = [where]
    if kind is not None:
        if kind not in KINDS:
            raise Invalid(f"kind must be one of {', '.join(KINDS)}")
        clauses.append("a.kind = ?")
        params.append(kind)
    if severity is not None:
        if severity not in SEVERITIES:
            raise Invalid(f"severity must be one of {', '.join(SEVERITIES)}")
        clauses.append("a.severity = ?")
        params.append(severity)
    if since is not None:
        clauses.append("a.created_at >= ?")
        params.append((since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC).isoformat())
    if unacknowledged:
        clauses.append("a.acknowledged_at IS NULL")
    sql_where = " AND ".join(clauses)
    total = int(db.execute(f"SELECT COUNT(*) FROM risk_alerts a WHERE {sql_where}", params).fetchone()[0])  # noqa: S608
    return total, _select(db, sql_where, params, limit, offset)


def _select(
    db: Database, where: str, params: list[Any], limit: int = 1, offset: int = 0
) -> list[dict[str, Any]]:
    cur = db.execute(
        f"""SELECT a.*, g.code AS node_code, g.name AS node_name, g.level AS node_level, p.name AS producer_name
            FROM risk_alerts a JOIN grid_nodes g ON g.id = a.node_id
            LEFT JOIN producers p ON p.id = a.producer_id
            WHERE {where} ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?""",  # noqa: S608 - our SQL
        [*params, limit, offset],
    )
    cols = [c[0] for c in cur.description]
    return [_alert_item(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]


def acknowledge(db: Database, user: User, alert_id: int, now: datetime) -> dict[str, Any]:
    """Mark an alert in the user's scope as seen (签收). Raises NotFound outside the scope."""
    with transaction(db):
        row = db.execute(
            "SELECT g.path FROM risk_alerts a JOIN grid_nodes g ON g.id = a.node_id WHERE a.id = ?",
            [alert_id],
        ).fetchone()
        if row is None or not user.sees(str(row[0])):
            raise NotFound(f"alert {alert_id} not found in your scope")
        db.execute(
            """UPDATE risk_alerts SET acknowledged_at = COALESCE(acknowledged_at, ?),
               acknowledged_by = COALESCE(acknowledged_by, ?) WHERE id = ?""",
            [now.isoformat(), user.name, alert_id],
        )
    return _select(db, "a.id = ?", [alert_id])[0]


@dataclass(frozen=True)
class Priority:
    analyte: str
    product: str
    place_code: str
    place_name: str
    tests: int
    positives: int
    rate: float | None
    estimate: float
    alerts: int


def priorities(
    db: Database,
    user: User,
    now: datetime,
    *,
    days: int = 90,
    place_level: str = "town",
    prior_tests: float = 20.0,
    limit: int = 20,
) -> list[Priority]:
    """Analyte × product × place cells in the user's scope ranked by estimated positive rate (then open
    alerts, then tests): where to test next period. The estimate shrinks each cell towards its analyte's
    rate over the same window, so one positive in two tests does not outrank a steady 10 % over 300 tests."""
    if days <= 0 or days > 3660:
        raise Invalid("days must be between 1 and 3660")
    since = (now - timedelta(days=days)).astimezone(UTC).isoformat()
    where, params = subtree_sql("node_id", user.node_path)
    rows = db.execute(
        f"""SELECT analyte, product, node_id, SUM(CASE WHEN verdict = 'positive' THEN 1 ELSE 0 END), COUNT(*) FROM results
            WHERE verdict != 'invalid' AND measured_at >= ? AND {where}
            GROUP BY analyte, product, node_id""",  # noqa: S608 - scope SQL is ours
        [since, *params],
    ).fetchall()
    nodes = _nodes(db)
    cells: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    ref: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for analyte, product, node_id, pos, n in rows:
        place = _ancestor(nodes, int(node_id), place_level) or nodes.get(int(node_id))
        if place is None:
            continue
        cell = cells[(str(analyte), str(product), place.row_id)]
        cell[0] += int(pos)
        cell[1] += int(n)
        ref[str(analyte)][0] += int(pos)
        ref[str(analyte)][1] += int(n)
    open_alerts: dict[tuple[str, str, int], int] = defaultdict(int)
    for analyte, product, node_id in db.execute(
        "SELECT analyte, product, node_id FROM risk_alerts WHERE kind = 'positivity_rise' AND created_at >= ?",
        [since],
    ).fetchall():
        open_alerts[(str(analyte), str(product), int(node_id))] += 1
    out = []
    for (analyte, product, place_id), (pos, n) in cells.items():
        rx, rn = ref[analyte]
        place = nodes[place_id]
        out.append(
            Priority(
                analyte=analyte,
                product=product,
                place_code=str(place.code),
                place_name=place.name,
                tests=n,
                positives=pos,
                rate=pos / n if n else None,
                estimate=priority(pos, n, rx / rn if rn else 0.0, prior_tests),
                alerts=open_alerts.get((analyte, product, place_id), 0),
            )
        )
    out.sort(key=lambda p: (-p.estimate, -p.alerts, -p.tests, p.analyte, p.product, p.place_code))
    return out[:limit]


# ---------------------------------------------------------------- the map


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull (monotone chain), counter-clockwise; fewer than 3 distinct points are returned as they are."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def map_points(db: Database, user: User, now: datetime, days: int = 30) -> dict[str, Any]:
    """Stations in the user's scope with a point (their own, else the nearest ancestor's), online state,
    backlog, and open alerts (last `days`) on them or their village/town; plus the outline (convex hull)."""
    nodes = _nodes(db)
    coords = {
        int(r[0]): (float(r[1]), float(r[2]))
        for r in db.execute("SELECT id, lat, lon FROM grid_nodes WHERE lat IS NOT NULL AND lon IS NOT NULL")
    }
    where, params = subtree_sql("s.node_id", user.node_path)
    stations = db.execute(
        f"""SELECT s.id, s.node_id, s.online, s.backlog, s.status_at, s.last_seen FROM stations s
            WHERE {where} ORDER BY s.id""",  # noqa: S608 - scope SQL is ours
        params,
    ).fetchall()
    since = (now - timedelta(days=days)).astimezone(UTC).isoformat()
    alerts: dict[int, dict[str, int]] = defaultdict(lambda: {"high": 0, "medium": 0})
    for node_id, severity, n in db.execute(
        """SELECT node_id, severity, COUNT(*) FROM risk_alerts WHERE created_at >= ? AND acknowledged_at IS NULL
           GROUP BY node_id, severity""",
        [since],
    ).fetchall():
        alerts[int(node_id)][str(severity)] += int(n)
    out = []
    for sid, node_id, online, backlog, status_at, last_seen in stations:
        node = nodes.get(int(node_id))
        if node is None:
            continue
        chain = [int(p) for p in node.path.strip("/").split("/") if p]
        point = next((coords[i] for i in reversed(chain) if i in coords), None)
        high = sum(alerts[i]["high"] for i in chain if i in alerts)
        medium = sum(alerts[i]["medium"] for i in chain if i in alerts)
        out.append(
            {
                "station": sid,
                "name": node.name,
                "lat": None if point is None else point[0],
                "lon": None if point is None else point[1],
                "own_point": int(node_id) in coords,
                "online": bool(online),
                "backlog": backlog,
                "status_at": status_at,
                "last_seen": last_seen,
                "alerts_high": high,
                "alerts_medium": medium,
                "risk": "high" if high else ("medium" if medium else "none"),
            }
        )
    hull = _hull([(s["lat"], s["lon"]) for s in out if s["lat"] is not None])
    return {"stations": out, "outline": [list(p) for p in hull], "days": days}
