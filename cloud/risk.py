"""Risk early warning (风险预警): scan stored results for rising risk and store the alerts.

Does:
- `scan(db, now, params)`: for the current and the previous local ISO week, three kinds of alert —
  ``positivity_rise`` per analyte × product × place (a node at `params.place_level`, town by default) by the
  binomial rise rule of `cloud.riskstats` against the cell's own trailing baseline (shrunk towards the analyte's
  county-wide rate); ``producer_repeat`` when one producer (生产主体) has positive samples in `producer_min`
  or more different batches within `producer_window_days`; ``station_invalid`` when a station's share of
  invalid tests rises against its own baseline (same rule). Alerts are stored once per key (the cell and the
  week; the producer and its count of positive batches); a later scan updates the figures of an existing
  alert and never duplicates it.

Time: weeks are local calendar weeks (Monday 00:00 in the grid's time zone); results are bucketed by the hour
of their stored UTC ``measured_at`` (whole-hour zone offsets such as +08:00 map hours exactly).

Does not: read the alert feed, acknowledge alerts, rank where to test next or draw the map
(cloud.risk_feed); send notifications (cloud.notify reads new alerts from the table), or create tasks
(cloud.tasks).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from cloud.db import Database, transaction
from cloud.grid import Node, subtree
from cloud.riskstats import RiseParams, RiseTest, rise_test
from cloud.settings import Settings

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
