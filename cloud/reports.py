"""Reports over the cloud database: pure functions (a `Database` in, pydantic models out).

Does: per grid node (any level, or everything for an admin) — tests done, positives and positive rate
by analyte × product × month; on-time case closure; rankings of towns / counties (or villages) over a
day, ISO week or month by a documented score; the weekly report (a model: its JSON is its dump). Periods
(`cloud.periods`) are local calendar days in `REPORT_TZ` (Asia/Shanghai by default: a day starts at 00:00
China time, i.e. 16:00 UTC the day before).

Whole-day counts come from the daily aggregates (cloud.rollup) when the grid's time zone is the rollup's;
a grid in another time zone is counted from the results themselves, with the same definitions.

Does not: authorise (callers pass a `cloud.grid.Node` they resolved with `cloud.auth.resolve_scope`, which
enforces the user's subtree), write anything, or know about HTTP. Periods and their constructors are
cloud.periods; CSV, the weekly report's HTML page and a report as bytes (`render_report`) are
cloud.report_render.

Definitions (docs/reports.md has the long form):
- tests = every stored result; valid = tests whose verdict is not ``invalid``;
  positive_rate = positives / valid (None when there is no valid test).
- A case counts in the period in which it was *opened*. closed_on_time = closed, never escalated,
  closed_at ≤ deadline. closed_late = the other closed cases. open_overdue = not closed and (escalated
  or past its deadline at `now`). open_pending = not closed, not escalated, deadline still ahead.
  on_time_rate = closed_on_time / (closed_on_time + closed_late + open_overdue) (None if that is 0).
- Ranking score (0–100): the assessment score of cloud.assessment (weighted parts: coverage, task
  completion, upload timeliness, on-time case handling, test quality, registration completeness; weights in
  Settings.assessment_weights). Ties: more valid tests first, then node code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from cloud import assessment, rollup
from cloud.db import Database
from cloud.errors import Invalid
from cloud.grid import Node
from cloud.periods import REPORT_TZ, Period, _Frozen
from cloud.sqlfilter import LocalUnit, local_time_sql, subtree_sql

LEVEL_ORDER: tuple[str, ...] = ("county", "town", "village", "station")
RankLevel = Literal["county", "town", "village"]


def _offset_modifier(period: Period, tz: ZoneInfo) -> str:
    """The offset that turns a UTC timestamp into local time (at period start), as "+480 minutes"."""
    offset = datetime.combine(period.start, time(), tz).utcoffset() or timedelta(0)
    return f"{int(offset.total_seconds() // 60):+d} minutes"


def _local(db: Database, column: str, unit: LocalUnit) -> str:
    return local_time_sql(db.dialect, column, unit)


# ---------------------------------------------------------------- counts and positivity


class Counts(_Frozen):
    tests: int
    valid: int
    positives: int
    suspects: int
    invalid: int
    positive_rate: float | None


_COUNT_COLUMNS = rollup.RAW_COUNTS


def _counts(row: Sequence[Any], offset: int = 0) -> Counts:
    tests, valid, pos, sus, inv = (int(row[offset + i] or 0) for i in range(5))
    return Counts(
        tests=tests,
        valid=valid,
        positives=pos,
        suspects=sus,
        invalid=inv,
        positive_rate=(pos / valid) if valid else None,
    )


def _results_where(scope: Node, period: Period, tz: ZoneInfo) -> tuple[str, list[Any]]:
    lo, hi = period.utc_bounds(tz)
    clause, params = subtree_sql("r.node_id", scope.path)
    return f"r.measured_at >= ? AND r.measured_at < ? AND {clause}", [lo, hi, *params]


def counts(db: Database, scope: Node, period: Period, tz: ZoneInfo = REPORT_TZ) -> Counts:
    """Tests, valid tests, positives, suspects, invalid and positive rate under `scope` in `period`."""
    if rollup.covers(tz):
        return _counts(rollup.counts(db, scope.path, period.start, period.end))
    where, params = _results_where(scope, period, tz)
    row = db.execute(f"SELECT {_COUNT_COLUMNS} FROM results r WHERE {where}", params).fetchone()  # noqa: S608
    return _counts(row)


class PositivityRow(Counts):
    month: str
    analyte: str
    product: str


def positivity(db: Database, scope: Node, period: Period, tz: ZoneInfo = REPORT_TZ) -> list[PositivityRow]:
    """Counts by local month × analyte × product, sorted by month, analyte, product."""
    if rollup.covers(tz):
        return [
            PositivityRow(month=m, analyte=a, product=p, **_counts(c).model_dump())
            for m, a, p, c in rollup.positivity(db, scope.path, period.start, period.end)
        ]
    where, params = _results_where(scope, period, tz)
    month = _local(db, "r.measured_at", "month")
    sql = f"""SELECT {month} AS month, r.analyte, r.product, {_COUNT_COLUMNS}
              FROM results r WHERE {where}
              GROUP BY month, r.analyte, r.product ORDER BY month, r.analyte, r.product"""  # noqa: S608
    rows = db.execute(sql, [_offset_modifier(period, tz), *params]).fetchall()
    return [PositivityRow(month=r[0], analyte=r[1], product=r[2], **_counts(r, 3).model_dump()) for r in rows]


class AnalyteRow(Counts):
    analyte: str


def by_analyte(db: Database, scope: Node, period: Period, tz: ZoneInfo = REPORT_TZ) -> list[AnalyteRow]:
    """Counts per analyte, most tested first."""
    if rollup.covers(tz):
        return [
            AnalyteRow(analyte=a, **_counts(c).model_dump())
            for a, c in rollup.by_analyte(db, scope.path, period.start, period.end)
        ]
    where, params = _results_where(scope, period, tz)
    sql = f"""SELECT r.analyte, {_COUNT_COLUMNS} FROM results r WHERE {where}
              GROUP BY r.analyte ORDER BY COUNT(*) DESC, r.analyte"""  # noqa: S608
    return [
        AnalyteRow(analyte=r[0], **_counts(r, 1).model_dump()) for r in db.execute(sql, params).fetchall()
    ]


def analytes_of(cells: Sequence[PositivityRow]) -> list[AnalyteRow]:
    """`by_analyte` of the same scope and period, summed from its `positivity` cells (one read for both)."""
    sums: dict[str, list[int]] = {}
    for c in cells:
        acc = sums.setdefault(c.analyte, [0, 0, 0, 0, 0])
        for k, v in enumerate((c.tests, c.valid, c.positives, c.suspects, c.invalid)):
            acc[k] += v
    rows = [AnalyteRow(analyte=a, **_counts(v).model_dump()) for a, v in sums.items()]
    return sorted(rows, key=lambda r: (-r.tests, r.analyte))


class DayRow(Counts):
    day: str


def per_day(db: Database, scope: Node, period: Period, tz: ZoneInfo = REPORT_TZ) -> list[DayRow]:
    """Counts per local day of `period`, every day present (zeros included)."""
    if rollup.covers(tz):
        found = {d: _counts(c) for d, c in rollup.per_day(db, scope.path, period.start, period.end).items()}
    else:
        where, params = _results_where(scope, period, tz)
        day = _local(db, "r.measured_at", "day")
        sql = f"SELECT {day} AS day, {_COUNT_COLUMNS} FROM results r WHERE {where} GROUP BY day"  # noqa: S608
        rows = db.execute(sql, [_offset_modifier(period, tz), *params]).fetchall()
        found = {r[0]: _counts(r, 1) for r in rows}
    empty = Counts(tests=0, valid=0, positives=0, suspects=0, invalid=0, positive_rate=None)
    out: list[DayRow] = []
    d = period.start
    while d <= period.end:
        key = d.isoformat()
        out.append(DayRow(day=key, **found.get(key, empty).model_dump()))
        d += timedelta(days=1)
    return out


# ---------------------------------------------------------------- cases


class ClosureStats(_Frozen):
    opened: int
    closed: int
    closed_on_time: int
    closed_late: int
    open_overdue: int
    open_pending: int
    on_time_rate: float | None


_CLOSURE_COLUMNS = """COUNT(c.id),
    COALESCE(SUM(CASE WHEN c.status = 'closed' THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN c.status = 'closed' AND c.escalations = 0 AND c.closed_at <= c.deadline THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN c.status != 'closed' AND (c.escalations > 0 OR c.deadline < ?) THEN 1 ELSE 0 END), 0)"""


def _closure(row: Sequence[Any], offset: int = 0) -> ClosureStats:
    opened, closed, on_time, overdue = (int(row[offset + i] or 0) for i in range(4))
    late = closed - on_time
    due = on_time + late + overdue
    return ClosureStats(
        opened=opened,
        closed=closed,
        closed_on_time=on_time,
        closed_late=late,
        open_overdue=overdue,
        open_pending=opened - closed - overdue,
        on_time_rate=(on_time / due) if due else None,
    )


def _now_text(now: datetime) -> str:
    # Whole seconds without suffix, like `Period.utc_bounds`: compares correctly with any stored precision.
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def closure(
    db: Database, scope: Node, period: Period, now: datetime, tz: ZoneInfo = REPORT_TZ
) -> ClosureStats:
    """On-time closure of the cases opened under `scope` in `period`, judged at `now`."""
    lo, hi = period.utc_bounds(tz)
    clause, params = subtree_sql("c.origin_node_id", scope.path)
    sql = f"""SELECT {_CLOSURE_COLUMNS} FROM cases c
              WHERE c.opened_at >= ? AND c.opened_at < ? AND {clause}"""  # noqa: S608
    return _closure(db.execute(sql, [_now_text(now), lo, hi, *params]).fetchone())


# ---------------------------------------------------------------- rankings


class RankingRow(_Frozen):
    rank: int
    code: str
    name: str
    level: str
    tests: int
    valid: int
    positives: int
    positive_rate: float | None
    stations_total: int
    stations_active: int
    coverage: float | None
    cases_due: int
    cases_on_time: int
    on_time_rate: float | None
    task_done: int = 0
    task_target: int = 0
    task_completion: float | None = None
    timeliness: float | None = None
    quality: float | None = None
    registration: float | None = None
    score: float


class Ranking(_Frozen):
    level: str
    period: Period
    within: Node
    score_formula: str
    rows: list[RankingRow]


def ranking(
    db: Database,
    scope: Node,
    level: RankLevel,
    period: Period,
    now: datetime,
    tz: ZoneInfo = REPORT_TZ,
    assess: assessment.AssessmentConfig | None = None,
) -> Ranking:
    """Rank the nodes of `level` inside `scope` over `period` by their assessment score (cloud.assessment)."""
    assess = assess or assessment.AssessmentConfig()
    if level not in ("county", "town", "village"):
        raise Invalid("ranking level must be county, town or village")
    lo, hi = period.utc_bounds(tz)
    clause, scope_params = subtree_sql("n.id", scope.path)
    nodes = db.execute(
        f"SELECT n.id, n.code, n.name, n.level, n.path FROM grid_nodes n WHERE n.level = ? AND {clause}",  # noqa: S608
        [level, *scope_params],
    ).fetchall()
    rows: list[RankingRow] = []
    units = None  # every unit's result counts in one read, when the daily aggregates answer them
    if rollup.covers(tz) and assess.timely_minutes == rollup.TIMELY_MINUTES:
        units = rollup.Units(db, scope.path, period.start, period.end)
    for node_id, code, name, node_level, path in nodes:
        unit = Node(id=int(node_id), code=str(code), name=str(name), level=str(node_level), path=str(path))
        c = _counts(units.counts(unit.path)) if units is not None else counts(db, unit, period, tz)
        parts, raw = assessment.unit_parts(
            db,
            str(path),
            lo,
            hi,
            _now_text(now),
            period.start,
            period.end,
            now,
            tz,
            assess.timely_minutes,
            None if units is None else units.unit(unit.path),
        )
        rows.append(
            RankingRow(
                rank=0,
                code=str(code),
                name=str(name),
                level=str(node_level),
                tests=c.tests,
                valid=c.valid,
                positives=c.positives,
                positive_rate=c.positive_rate,
                stations_total=raw["stations_total"],
                stations_active=raw["stations_active"],
                coverage=parts.coverage,
                cases_due=raw["cases_due"],
                cases_on_time=raw["cases_on_time"],
                on_time_rate=parts.cases,
                task_done=raw["task_done"],
                task_target=raw["task_target"],
                task_completion=parts.tasks,
                timeliness=parts.timeliness,
                quality=parts.quality,
                registration=parts.registration,
                score=assessment.score(parts, assess.weights),
            )
        )
    rows.sort(key=lambda r: (-r.score, -r.valid, r.code))
    ranked = [r.model_copy(update={"rank": i}) for i, r in enumerate(rows, start=1)]
    return Ranking(level=level, period=period, within=scope, score_formula=assess.formula, rows=ranked)


# ---------------------------------------------------------------- weekly report


class PositiveResult(_Frozen):
    id: str
    station: str
    measured_at: str
    product: str
    analyte: str
    sample_id: str
    producer: str | None


class WeeklyReport(_Frozen):
    node: Node
    week: str
    start: date
    end: date
    generated_at: datetime
    totals: Counts
    previous_week: Counts
    closure: ClosureStats
    by_analyte: list[AnalyteRow]
    positivity: list[PositivityRow]
    per_day: list[DayRow]
    children: list[RankingRow]
    score_formula: str
    positives: list[PositiveResult]
    timezone: str = Field(
        default="Asia/Shanghai", description="the grid's time zone the report is written in"
    )


_CHILD_RANK_LEVEL: dict[str, RankLevel] = {"all": "county", "county": "town", "town": "village"}


def child_level(scope: Node) -> RankLevel | None:
    """The rankable level just below `scope` (county for the whole grid; None for villages/stations)."""
    return _CHILD_RANK_LEVEL.get(scope.level)


def weekly_report(
    db: Database,
    scope: Node,
    week: Period,
    now: datetime,
    tz: ZoneInfo = REPORT_TZ,
    max_positives: int = 200,
    assess: assessment.AssessmentConfig | None = None,
) -> WeeklyReport:
    """The weekly report of `scope` for ISO week `week` (see `parse_iso_week`)."""
    if week.kind != "week":
        raise Invalid("a weekly report needs an ISO week period")
    assess = assess or assessment.AssessmentConfig()
    lower = child_level(scope)
    children = ranking(db, scope, lower, week, now, tz, assess).rows if lower is not None else []
    cells = positivity(db, scope, week, tz)
    where, params = _results_where(scope, week, tz)
    pos_rows = db.execute(
        f"""SELECT r.id, r.station, r.measured_at, r.product, r.analyte, r.sample_id, r.producer
            FROM results r WHERE {where} AND r.verdict = 'positive'
            ORDER BY r.measured_at, r.id LIMIT ?""",  # noqa: S608
        [*params, max_positives],
    ).fetchall()
    return WeeklyReport(
        node=scope,
        week=week.label,
        start=week.start,
        end=week.end,
        generated_at=now,
        totals=counts(db, scope, week, tz),
        previous_week=counts(db, scope, week.previous(), tz),
        closure=closure(db, scope, week, now, tz),
        by_analyte=analytes_of(cells),
        positivity=cells,
        per_day=per_day(db, scope, week, tz),
        children=children,
        score_formula=assess.formula,
        timezone=str(tz),
        positives=[
            PositiveResult(
                id=r[0],
                station=r[1],
                measured_at=r[2],
                product=r[3],
                analyte=r[4],
                sample_id=r[5],
                producer=r[6],
            )
            for r in pos_rows
        ],
    )
