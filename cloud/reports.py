"""Reports over the cloud database: pure functions (a `Database` in, pydantic models out).

Does: per grid node (any level, or everything for an admin) — tests done, positives and positive rate
by analyte × product × month; on-time case closure; rankings of towns / counties (or villages) over a
day, ISO week or month by a documented score; the weekly report (JSON, CSV, HTML); CSV rendering as
UTF-8 with a BOM so Excel shows Chinese. Periods are local calendar days in `REPORT_TZ`
(Asia/Shanghai by default: a day starts at 00:00 China time, i.e. 16:00 UTC the day before).

Whole-day counts come from the daily aggregates (cloud.rollup) when the grid's time zone is the rollup's;
a grid in another time zone is counted from the results themselves, with the same definitions.

Does not: authorise (callers pass a `cloud.grid.Node` they resolved with `cloud.auth.resolve_scope`, which
enforces the user's subtree), write anything, or know about HTTP.

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

import base64
import csv
import hashlib
import html
import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from cloud import assessment, rollup
from cloud.db import Database
from cloud.errors import Invalid
from cloud.grid import Node
from cloud.sqlfilter import LocalUnit, local_time_sql, subtree_sql
from kuaijian_schema import labels

REPORT_TZ = ZoneInfo("Asia/Shanghai")
LEVEL_ORDER: tuple[str, ...] = ("county", "town", "village", "station")
PeriodKind = Literal["day", "week", "month"]
RankLevel = Literal["county", "town", "village"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------- periods


class Period(_Frozen):
    """Local calendar days [start, end] (both inclusive) with a label such as 2026-W47."""

    kind: Literal["day", "week", "month", "range"]
    start: date
    end: date
    label: str

    def utc_bounds(self, tz: ZoneInfo = REPORT_TZ) -> tuple[str, str]:
        """[lo, hi) as 'YYYY-MM-DDTHH:MM:SS' UTC strings; they compare correctly with stored timestamps
        whatever their fractional-second digits, because a stored value with the same second is longer."""
        lo = datetime.combine(self.start, time(), tz).astimezone(UTC)
        hi = datetime.combine(self.end + timedelta(days=1), time(), tz).astimezone(UTC)
        return lo.strftime("%Y-%m-%dT%H:%M:%S"), hi.strftime("%Y-%m-%dT%H:%M:%S")

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        if self.kind == "month":
            return month_period(self.start - timedelta(days=1))
        if self.kind == "week":
            return week_period(self.start - timedelta(days=1))
        if self.kind == "day":
            return day_period(self.start - timedelta(days=1))
        span = (self.end - self.start).days + 1
        return range_period(self.start - timedelta(days=span), self.start - timedelta(days=1))


EARLIEST = date(2000, 1, 1)
LATEST = date(2099, 12, 31)


def check_dates(*days: date) -> None:
    """Invalid unless every day lies in the supported report range."""
    for d in days:
        if not EARLIEST <= d <= LATEST:
            raise Invalid(f"dates must lie between {EARLIEST} and {LATEST}, got {d}")


def day_period(d: date) -> Period:
    check_dates(d)
    return Period(kind="day", start=d, end=d, label=d.isoformat())


def week_period(d: date) -> Period:
    """The ISO week (Monday–Sunday) containing `d`."""
    check_dates(d)
    year, week, weekday = d.isocalendar()
    start = d - timedelta(days=weekday - 1)
    return Period(kind="week", start=start, end=start + timedelta(days=6), label=f"{year}-W{week:02d}")


def month_period(d: date) -> Period:
    check_dates(d)
    start = d.replace(day=1)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return Period(kind="month", start=start, end=nxt - timedelta(days=1), label=start.strftime("%Y-%m"))


def range_period(start: date, end: date) -> Period:
    check_dates(start, end)
    if end < start:
        raise Invalid("end date is before start date")
    if (end - start).days > 3660:
        raise Invalid("a report period may span at most ten years")
    return Period(kind="range", start=start, end=end, label=f"{start.isoformat()}..{end.isoformat()}")


def period_containing(kind: PeriodKind, d: date) -> Period:
    if kind == "day":
        return day_period(d)
    if kind == "week":
        return week_period(d)
    return month_period(d)


def parse_iso_week(text: str) -> Period:
    """'2026-W47' → that ISO week; Invalid for anything else."""
    try:
        year_s, week_s = text.upper().split("-W")
        monday = date.fromisocalendar(int(year_s), int(week_s), 1)
    except (ValueError, OverflowError) as exc:
        raise Invalid(f"week must look like 2026-W47, got {text!r}") from exc
    return week_period(monday)


def local_today(now: datetime, tz: ZoneInfo = REPORT_TZ) -> date:
    return now.astimezone(tz).date()


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


# ---------------------------------------------------------------- CSV / HTML rendering

Column = tuple[str, str]
"""(field name, header label)."""

POSITIVITY_COLUMNS: tuple[Column, ...] = (
    ("month", "月份 month"),
    ("analyte", "检测项目 analyte"),
    ("product", "样品 product"),
    ("tests", "检测数 tests"),
    ("valid", "有效数 valid"),
    ("positives", "阳性数 positives"),
    ("suspects", "可疑数 suspects"),
    ("invalid", "无效数 invalid"),
    ("positive_rate", "阳性率 positive_rate"),
)
RANKING_COLUMNS: tuple[Column, ...] = (
    ("rank", "排名 rank"),
    ("code", "编码 code"),
    ("name", "名称 name"),
    ("level", "层级 level"),
    ("score", "得分 score"),
    ("tests", "检测数 tests"),
    ("valid", "有效数 valid"),
    ("positives", "阳性数 positives"),
    ("positive_rate", "阳性率 positive_rate"),
    ("stations_total", "站点数 stations_total"),
    ("stations_active", "有检测站点 stations_active"),
    ("coverage", "覆盖率 coverage"),
    ("cases_due", "应办结案件 cases_due"),
    ("cases_on_time", "按期办结 cases_on_time"),
    ("on_time_rate", "按期办结率 on_time_rate"),
    ("task_done", "任务完成数 task_done"),
    ("task_target", "任务目标数 task_target"),
    ("task_completion", "任务完成率 task_completion"),
    ("timeliness", "上传及时率 timeliness"),
    ("quality", "检测质量 quality"),
    ("registration", "登记完整率 registration"),
)
CLOSURE_COLUMNS: tuple[Column, ...] = (
    ("opened", "立案数 opened"),
    ("closed", "办结数 closed"),
    ("closed_on_time", "按期办结 closed_on_time"),
    ("closed_late", "超期办结 closed_late"),
    ("open_overdue", "超期未结 open_overdue"),
    ("open_pending", "未到期 open_pending"),
    ("on_time_rate", "按期办结率 on_time_rate"),
)
WEEKLY_COLUMNS: tuple[Column, ...] = (
    ("week", "周 week"),
    ("code", "编码 code"),
    ("name", "名称 name"),
    ("level", "层级 level"),
    ("tests", "检测数 tests"),
    ("valid", "有效数 valid"),
    ("positives", "阳性数 positives"),
    ("positive_rate", "阳性率 positive_rate"),
    ("stations_total", "站点数 stations_total"),
    ("stations_active", "有检测站点 stations_active"),
    ("cases_due", "应办结案件 cases_due"),
    ("cases_on_time", "按期办结 cases_on_time"),
    ("on_time_rate", "按期办结率 on_time_rate"),
    ("score", "得分 score"),
)


_FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """One CSV cell. Text that a spreadsheet would run as a formula (it begins with = + - @, tab or CR) is
    prefixed with an apostrophe, so a product or node name like ``=HYPERLINK(…)`` stays text; numbers,
    negative ones included, are written as numbers."""
    if value is None:
        return ""
    if isinstance(value, int):  # bool included
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_LEAD) else text


def to_csv(rows: Iterable[BaseModel | dict[str, Any]], columns: Sequence[Column]) -> bytes:
    """CSV (UTF-8 with BOM, CRLF line ends, header row of `columns` labels); None → empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([label for _, label in columns])
    for row in rows:
        data = row.model_dump() if isinstance(row, BaseModel) else row
        writer.writerow([_cell(data.get(name)) for name, _ in columns])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def weekly_csv(report: WeeklyReport) -> bytes:
    """One row per child node plus a final row for the node itself (its totals and closure)."""
    rows: list[dict[str, Any]] = [{"week": report.week, **c.model_dump()} for c in report.children]
    cl = report.closure
    rows.append(
        {
            "week": report.week,
            "code": report.node.code or "",
            "name": report.node.name,
            "level": report.node.level,
            "tests": report.totals.tests,
            "valid": report.totals.valid,
            "positives": report.totals.positives,
            "positive_rate": report.totals.positive_rate,
            "cases_due": cl.closed_on_time + cl.closed_late + cl.open_overdue,
            "cases_on_time": cl.closed_on_time,
            "on_time_rate": cl.on_time_rate,
        }
    )
    return to_csv(rows, WEEKLY_COLUMNS)


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_REPORT_CSS = (
    "body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:2em;color:#1d2733}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccd;padding:.25em .6em}"
    "th{background:#eef2f6}h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}"
)
WEEKLY_HTML_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_REPORT_CSS.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The Content-Security-Policy of `weekly_html` pages: no script at all, only its own inline stylesheet."""


def _local_text(at: datetime, zone: str) -> str:
    """'YYYY-MM-DD HH:MM:SS' of `at` in the time zone `zone` (stored times are UTC)."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def weekly_html(report: WeeklyReport) -> str:
    """A self-contained printable HTML page (Chinese labels, inline CSS allowed by WEEKLY_HTML_CSP, no scripts)."""
    t, p, cl = report.totals, report.previous_week, report.closure
    title = f"{report.node.name} 快检周报 {report.week}（{report.start} 至 {report.end}）"
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_REPORT_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>生成时间 {html.escape(_local_text(report.generated_at, report.timezone)[:16])}"
        f"（{html.escape(report.timezone)}）</p>",
        "<h2>总体情况</h2>",
        _table(
            ["指标", "本周", "上周"],
            [
                ["检测数", t.tests, p.tests],
                ["有效检测数", t.valid, p.valid],
                ["阳性数", t.positives, p.positives],
                ["可疑数", t.suspects, p.suspects],
                ["阳性率", _pct(t.positive_rate), _pct(p.positive_rate)],
            ],
        ),
        "<h2>案件处置</h2>",
        _table(
            ["立案", "办结", "按期办结", "超期办结", "超期未结", "未到期", "按期办结率"],
            [
                [
                    cl.opened,
                    cl.closed,
                    cl.closed_on_time,
                    cl.closed_late,
                    cl.open_overdue,
                    cl.open_pending,
                    _pct(cl.on_time_rate),
                ]
            ],
        ),
        "<h2>各检测项目</h2>",
        _table(
            ["检测项目", "检测数", "阳性数", "阳性率"],
            [[labels.zh(a.analyte), a.tests, a.positives, _pct(a.positive_rate)] for a in report.by_analyte],
        ),
        "<h2>每日检测量</h2>",
        _table(["日期", "检测数", "阳性数"], [[d.day, d.tests, d.positives] for d in report.per_day]),
    ]
    if report.children:
        parts += [
            "<h2>下级排名</h2>",
            _table(
                ["排名", "名称", "得分", "检测数", "阳性率", "覆盖率", "按期办结率"],
                [
                    [
                        c.rank,
                        c.name,
                        c.score,
                        c.tests,
                        _pct(c.positive_rate),
                        _pct(c.coverage),
                        _pct(c.on_time_rate),
                    ]
                    for c in report.children
                ],
            ),
            f"<p>{html.escape(report.score_formula)}</p>",
        ]
    parts += [
        "<h2>阳性结果</h2>",
        _table(
            [f"时间（{report.timezone}）", "站点", "样品", "检测项目", "样品编号", "生产者"],
            [
                [
                    _local_text(datetime.fromisoformat(r.measured_at), report.timezone),
                    r.station,
                    r.product,
                    labels.zh(r.analyte),
                    r.sample_id,
                    r.producer,
                ]
                for r in report.positives
            ],
        ),
        "</body></html>",
    ]
    return "".join(parts)


# ---------------------------------------------------------------- operator entry point (CLI)

ReportKind = Literal["weekly", "positivity", "closure", "rankings", "summary"]
REPORT_KINDS: tuple[str, ...] = ("weekly", "positivity", "closure", "rankings", "summary")


def render_report(
    db: Database,
    kind: ReportKind,
    scope: Node,
    now: datetime,
    *,
    fmt: Literal["json", "csv", "html"] = "json",
    week: str | None = None,
    start: date | None = None,
    end: date | None = None,
    level: RankLevel = "town",
    period: PeriodKind = "week",
    on: date | None = None,
    tz: ZoneInfo = REPORT_TZ,
    assess: assessment.AssessmentConfig | None = None,
) -> bytes:
    """One report as bytes (JSON, CSV with BOM, or HTML for the weekly report) — what the REST endpoints
    return, for an operator's CLI or a cron job. Raises Invalid for a format the report does not have."""
    today = local_today(now, tz)
    if fmt == "html" and kind != "weekly":
        raise Invalid("only the weekly report has an HTML form")
    if kind == "weekly":
        span = parse_iso_week(week) if week else week_period(today - timedelta(days=7))
        report = weekly_report(db, scope, span, now, tz, assess=assess)
        if fmt == "csv":
            return weekly_csv(report)
        if fmt == "html":
            return weekly_html(report).encode("utf-8")
        return report.model_dump_json(indent=2).encode("utf-8")
    if kind == "rankings":
        ranked = ranking(db, scope, level, period_containing(period, on or today), now, tz, assess)
        if fmt == "csv":
            return to_csv(ranked.rows, RANKING_COLUMNS)
        return ranked.model_dump_json(indent=2).encode("utf-8")
    last = end or today
    rng = range_period(start or last - timedelta(days=29), last)
    doc: dict[str, Any] = {"node": scope.model_dump(), "period": rng.model_dump(mode="json")}
    if kind == "positivity":
        rows = positivity(db, scope, rng, tz)
        if fmt == "csv":
            return to_csv(rows, POSITIVITY_COLUMNS)
        doc["rows"] = [r.model_dump() for r in rows]
    elif kind == "closure":
        stats = closure(db, scope, rng, now, tz)
        if fmt == "csv":
            return to_csv([stats], CLOSURE_COLUMNS)
        doc["closure"] = stats.model_dump()
    else:
        if fmt == "csv":
            raise Invalid("the summary has no CSV form; use positivity or closure")
        doc["totals"] = counts(db, scope, rng, tz).model_dump()
        doc["closure"] = closure(db, scope, rng, now, tz).model_dump()
        doc["by_analyte"] = [a.model_dump() for a in by_analyte(db, scope, rng, tz)]
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")
