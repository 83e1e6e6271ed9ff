"""Risk early warning (风险预警): scan stored results for rising risk and keep a scoped alert feed.

Does:
- `scan(db, now, params)`: for the current and the previous local ISO week, three kinds of alert —
  ``positivity_rise`` per analyte × product × place (a node at `params.place_level`, town by default) by the
  binomial rise rule of `cloud.riskstats` against the cell's own trailing baseline (shrunk towards the analyte's
  county-wide rate); ``producer_repeat`` when one producer (生产主体) has positive samples in `producer_min`
  or more different batches within `producer_window_days`; ``station_invalid`` when a station's share of
  invalid tests rises against its own baseline (same rule). Alerts are stored once per key (the cell and the
  week; the producer and its count of positive batches); a later scan updates the figures of an existing
  alert and never duplicates it.
- `list_alerts` (scoped to the user's subtree), `acknowledge`, and `priorities`: analyte × product × place
  cells ranked by their estimated positive rate over a planning window, for next period's sampling tasks.

Time: weeks are local calendar weeks (Monday 00:00 in the grid's time zone); results are bucketed by the hour
of their stored UTC ``measured_at`` (whole-hour zone offsets such as +08:00 map hours exactly).

Does not: send notifications (cloud.notify reads new alerts from the table), or create tasks (cloud.tasks).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from cloud.auth import User
from cloud.db import Database, transaction
from cloud.errors import Invalid, NotFound
from cloud.grid import Node, subtree
from cloud.riskstats import RiseParams, RiseTest, priority, rise_test
from cloud.settings import Settings
from cloud.sqlfilter import subtree_sql

K = TypeVar("K", bound=Hashable)
KINDS = ("positivity_rise", "producer_repeat", "station_invalid")
SEVERITIES = ("high", "medium")


@dataclass(frozen=True)
class RiskParams:
    place_level: str = "town"
    baseline_weeks: int = 8
    rise: RiseParams = field(default_factory=RiseParams)
    invalid: RiseParams = field(
        default_factory=lambda: RiseParams(alpha=0.001, min_positives=5, min_ratio=2.0, floor_rate=0.02)
    )
    producer_window_days: int = 90
    producer_min: int = 2
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))


def params_from(settings: Settings) -> RiskParams:
    """The scan parameters configured in the cloud settings."""
    return RiskParams(
        place_level=settings.risk_place_level, rise=RiseParams(alpha=settings.risk_alpha), tz=settings.tz
    )


@dataclass
class ScanReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    cells: int = 0


def _nodes(db: Database) -> dict[int, Node]:
    return {n.row_id: n for n in subtree(db, "/")}


def _ancestor(nodes: dict[int, Node], node_id: int, level: str) -> Node | None:
    node = nodes.get(node_id)
    if node is None:
        return None
    for part in node.path.strip("/").split("/"):
        anc = nodes.get(int(part)) if part else None
        if anc is not None and anc.level == level:
            return anc
    return None


def week_start(d: date) -> date:
    return d - timedelta(days=d.weekday())


def week_label(start: date) -> str:
    iso = start.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _utc_text(d: date, tz: ZoneInfo) -> str:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


_Count = tuple[date, str, str, int, str, int]
"""(local date, analyte, product, station node id, verdict, count): one row of `_hour_counts`."""


def _hour_counts(db: Database, lo: date, hi: date, tz: ZoneInfo) -> list[_Count]:
    """(local date, analyte, product, station node id, verdict, count) for results measured in [lo, hi)."""
    rows = db.execute(
        """SELECT substr(measured_at, 1, 13), analyte, product, node_id, verdict, COUNT(*)
           FROM results WHERE measured_at >= ? AND measured_at < ?
           GROUP BY substr(measured_at, 1, 13), analyte, product, node_id, verdict""",
        [_utc_text(lo, tz), _utc_text(hi, tz)],
    ).fetchall()
    out = []
    for hour, analyte, product, node_id, verdict, n in rows:
        local = datetime.fromisoformat(f"{hour}:00:00+00:00").astimezone(tz).date()
        out.append((local, str(analyte), str(product), int(node_id), str(verdict), int(n)))
    return out


def _upsert(
    db: Database,
    report: ScanReport,
    key: str,
    now: datetime,
    fields: dict[str, Any],
) -> None:
    row = db.execute("SELECT id, severity FROM risk_alerts WHERE key = ?", [key]).fetchone()
    if row is None:
        cols = {"key": key, **fields, "created_at": now.isoformat(), "updated_at": now.isoformat()}
        db.execute(
            f"INSERT INTO risk_alerts ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",  # noqa: S608 - our columns
            list(cols.values()),
        )
        report.created.append(key)
        return
    severity = "high" if "high" in (row[1], fields["severity"]) else fields["severity"]
    db.execute(
        """UPDATE risk_alerts SET observed = ?, tests = ?, expected_rate = ?, p_value = ?, severity = ?,
           detail_json = ?, updated_at = ? WHERE id = ?""",
        [
            fields["observed"],
            fields["tests"],
            fields["expected_rate"],
            fields["p_value"],
            severity,
            fields["detail_json"],
            now.isoformat(),
            int(row[0]),
        ],
    )
    report.updated.append(key)


def _rise_fields(test: RiseTest, **extra: Any) -> dict[str, Any]:
    return {
        "severity": test.severity,
        "observed": test.observed,
        "tests": test.tests,
        "expected_rate": round(test.expected_rate, 6),
        "p_value": test.p_value,
        **extra,
    }


def scan(db: Database, now: datetime, params: RiskParams | None = None) -> ScanReport:
    """Evaluate every cell of the current and the previous local week; store new alerts (see module doc)."""
    params = params or RiskParams()
    tz = params.tz
    today = now.astimezone(tz).date()
    this_week = week_start(today)
    weeks = [this_week - timedelta(days=7), this_week]
    lo = weeks[0] - timedelta(days=7 * params.baseline_weeks)
    hi = today + timedelta(days=1)
    nodes = _nodes(db)
    counts = _hour_counts(db, lo, hi, tz)
    report = ScanReport()
    with transaction(db):
        for week in weeks:
            _scan_positivity(db, report, nodes, counts, week, params, now)
            _scan_invalid(db, report, nodes, counts, week, params, now)
        _scan_producers(db, report, nodes, now, params)
    return report


@dataclass
class _Buckets(Generic[K]):
    """Events and tests per key in the scanned week (`current`) and the trailing baseline weeks before it
    (`baseline`), and the baseline summed per reference key (`reference`): [events, tests] each."""

    current: dict[K, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    baseline: dict[K, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    reference: dict[Hashable, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


def _bucket(
    counts: list[_Count],
    week: date,
    baseline_weeks: int,
    key: Callable[[_Count], K | None],
    reference: Callable[[_Count], Hashable],
    event: str,
) -> _Buckets[K]:
    """Count the tests of `counts` (and those among them with verdict `event`) per `key` — rows whose key is
    None are skipped — into the week starting `week` and the `baseline_weeks` before it; the baseline also
    per `reference` key, the rate a cell's baseline is shrunk towards."""
    base_lo = week - timedelta(days=7 * baseline_weeks)
    week_end = week + timedelta(days=7)
    out: _Buckets[K] = _Buckets()
    for row in counts:
        day, verdict, n = row[0], row[4], row[5]
        k = key(row)
        if k is None:
            continue
        hits = n if verdict == event else 0
        if week <= day < week_end:
            cell = out.current[k]
        elif base_lo <= day < week:
            cell = out.baseline[k]
            ref = out.reference[reference(row)]
            ref[0] += hits
            ref[1] += n
        else:
            continue
        cell[0] += hits
        cell[1] += n
    return out


def _scan_positivity(
    db: Database,
    report: ScanReport,
    nodes: dict[int, Node],
    counts: list[_Count],
    week: date,
    params: RiskParams,
    now: datetime,
) -> None:
    def cell(row: _Count) -> tuple[str, str, int] | None:
        place = None if row[4] == "invalid" else _ancestor(nodes, row[3], params.place_level)
        return None if place is None else (row[1], row[2], place.row_id)

    buckets = _bucket(counts, week, params.baseline_weeks, cell, lambda row: row[1], "positive")
    label = week_label(week)
    for (analyte, product, place_id), (x, n) in buckets.current.items():
        report.cells += 1
        bx, bn = buckets.baseline.get((analyte, product, place_id), (0, 0))
        rx, rn = buckets.reference.get(analyte, (0, 0))
        test = rise_test(x, n, bx, bn, rx / rn if rn else 0.0, params.rise)
        if not test.alert:
            continue
        place = nodes[place_id]
        detail = {
            "baseline": {"positives": bx, "tests": bn, "weeks": params.baseline_weeks},
            "place": place.name,
        }
        _upsert(
            db,
            report,
            f"rise:{analyte}:{product}:{place.code}:{label}",
            now,
            _rise_fields(
                test,
                kind="positivity_rise",
                node_id=place_id,
                period=label,
                analyte=analyte,
                product=product,
                detail_json=json.dumps(detail, ensure_ascii=False),
            ),
        )


def _scan_invalid(
    db: Database,
    report: ScanReport,
    nodes: dict[int, Node],
    counts: list[_Count],
    week: date,
    params: RiskParams,
    now: datetime,
) -> None:
    buckets = _bucket(counts, week, params.baseline_weeks, lambda row: row[3], lambda _row: "all", "invalid")
    rx, rn = buckets.reference.get("all", (0, 0))
    label = week_label(week)
    for node_id, (x, n) in buckets.current.items():
        bx, bn = buckets.baseline.get(node_id, (0, 0))
        test = rise_test(x, n, bx, bn, rx / rn if rn else 0.0, params.invalid)
        if not test.alert or node_id not in nodes:
            continue
        station = nodes[node_id]
        detail = {"baseline": {"invalid": bx, "tests": bn, "weeks": params.baseline_weeks}}
        _upsert(
            db,
            report,
            f"invalid:{station.code}:{label}",
            now,
            _rise_fields(
                test,
                kind="station_invalid",
                node_id=node_id,
                period=label,
                station=station.code,
                detail_json=json.dumps(detail, ensure_ascii=False),
            ),
        )


def _scan_producers(
    db: Database, report: ScanReport, nodes: dict[int, Node], now: datetime, params: RiskParams
) -> None:
    since = (now - timedelta(days=params.producer_window_days)).astimezone(UTC).isoformat()
    rows = db.execute(
        """SELECT s.producer_id, p.name, p.village_node_id, s.root_code, s.station, r.analyte, MAX(r.measured_at)
           FROM results r
           JOIN samples s ON s.station = r.station AND s.code = r.sample_id
           JOIN producers p ON p.id = s.producer_id
           WHERE r.verdict = 'positive' AND r.measured_at >= ?
           GROUP BY s.producer_id, p.name, p.village_node_id, s.station, s.root_code, r.analyte""",
        [since],
    ).fetchall()
    per_batch: dict[tuple[int, str, str], tuple[str, set[str]]] = {}
    names: dict[int, tuple[str, int]] = {}
    for pid, name, village, root, station, analyte, last in rows:
        key = (int(pid), str(station), str(root))
        prev_last, analytes = per_batch.get(key, ("", set()))
        analytes.add(str(analyte))
        per_batch[key] = (max(prev_last, str(last)), analytes)
        names[int(pid)] = (str(name), int(village))
    batches: dict[int, list[tuple[str, str, str, str]]] = defaultdict(list)
    for (pid, station, root), (last, analytes) in per_batch.items():
        batches[pid].append((station, root, last, ",".join(sorted(analytes))))
    for pid, found in batches.items():
        if len(found) < params.producer_min:
            continue
        name, village = names[pid]
        found.sort(key=lambda b: b[2])
        detail = {
            "producer": name,
            "batches": [
                {"station": s, "batch": r, "last": t, "analytes": a.split(",")} for s, r, t, a in found
            ],
            "window_days": params.producer_window_days,
        }
        _upsert(
            db,
            report,
            f"producer:{pid}:{len(found)}",
            now,
            {
                "kind": "producer_repeat",
                "severity": "high" if len(found) > params.producer_min else "medium",
                "node_id": village,
                "period": found[-1][2][:10],
                "producer_id": pid,
                "observed": len(found),
                "tests": len(found),
                "expected_rate": None,
                "p_value": None,
                "detail_json": json.dumps(detail, ensure_ascii=False),
            },
        )


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
