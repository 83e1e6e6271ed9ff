"""Report endpoints under /api/reports (JSON by default, `?format=csv` for Excel-friendly CSV).

Every endpoint is scoped to the caller's grid node: `node` defaults to the caller's own node (the whole
grid for an admin) and a node outside the caller's subtree is answered 404, like the rest of the API.

Does not: compute anything itself (cloud.reports does) or write to the database.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from cloud import periods, ranking_pages, report_render, reports
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.auth import resolve_scope
from cloud.grid import Node

router = APIRouter(prefix="/api/reports", tags=["reports"])

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with ?format=csv",
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    404: {"description": "grid node not found in your scope"},
    422: {"description": "invalid parameters"},
}

NodeQuery = Annotated[
    str | None,
    Query(max_length=64, description="grid node code (default: your own node; everything for an admin)"),
]
StartQuery = Annotated[date | None, Query(description="first local day (default: 29 days before end)")]
EndQuery = Annotated[date | None, Query(description="last local day, inclusive (default: today, China time)")]
TableFormat = Annotated[Literal["json", "csv"], Query(description="json (default) or csv (UTF-8 with BOM)")]


def _csv(body: bytes, filename: str) -> Response:
    return Response(
        content=body,
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _safe(text: str | None) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in (text or "all"))


def _range(start: date | None, end: date | None, today: date) -> periods.Period:
    last = end if end is not None else today
    periods.check_dates(last)  # before the arithmetic below, which overflows near date.min
    first = start if start is not None else last - timedelta(days=29)
    return periods.range_period(first, last)


class NodeSummary(BaseModel):
    node: Node
    period: periods.Period
    totals: reports.Counts
    closure: reports.ClosureStats
    by_analyte: list[reports.AnalyteRow]


class PositivityReport(BaseModel):
    node: Node
    period: periods.Period
    rows: list[reports.PositivityRow]


class ClosureReport(BaseModel):
    node: Node
    period: periods.Period
    closure: reports.ClosureStats


@router.get("/summary", responses=_ERRORS)
def summary(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: NodeQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
) -> NodeSummary:
    """Totals (tests, valid, positives, suspects, invalid, positive rate), case closure and per-analyte
    counts of one node over a period of local days."""
    now = clock.now()
    scope = resolve_scope(db, user, node)
    period = _range(start, end, periods.local_today(now, settings.tz))
    return NodeSummary(
        node=scope,
        period=period,
        totals=reports.counts(db, scope, period, settings.tz),
        closure=reports.closure(db, scope, period, now, settings.tz),
        by_analyte=reports.by_analyte(db, scope, period, settings.tz),
    )


@router.get("/positivity", responses={**_CSV_RESPONSE, **_ERRORS}, response_model=PositivityReport)
def positivity(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: NodeQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    format: TableFormat = "json",
) -> PositivityReport | Response:
    """Tests done, positives and positive rate by analyte × product × month (local months)."""
    scope = resolve_scope(db, user, node)
    period = _range(start, end, periods.local_today(clock.now(), settings.tz))
    rows = reports.positivity(db, scope, period, settings.tz)
    if format == "csv":
        return _csv(
            report_render.to_csv(rows, report_render.POSITIVITY_COLUMNS),
            f"positivity_{_safe(scope.code)}_{period.start}_{period.end}.csv",
        )
    return PositivityReport(node=scope, period=period, rows=rows)


@router.get("/closure", responses={**_CSV_RESPONSE, **_ERRORS}, response_model=ClosureReport)
def case_closure(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: NodeQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    format: TableFormat = "json",
) -> ClosureReport | Response:
    """On-time case closure of the cases opened in the period (judged now)."""
    now = clock.now()
    scope = resolve_scope(db, user, node)
    period = _range(start, end, periods.local_today(now, settings.tz))
    stats = reports.closure(db, scope, period, now, settings.tz)
    if format == "csv":
        return _csv(
            report_render.to_csv([stats], report_render.CLOSURE_COLUMNS),
            f"closure_{_safe(scope.code)}_{period.start}_{period.end}.csv",
        )
    return ClosureReport(node=scope, period=period, closure=stats)


XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/rankings",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
                XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "JSON, CSV, a printable 排名通报 page (?format=html) or Excel (?format=xlsx)",
        },
        **_ERRORS,
    },
    response_model=reports.Ranking,
)
def rankings(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    level: Annotated[reports.RankLevel, Query(description="rank towns, counties or villages")] = "town",
    period: Annotated[periods.PeriodKind, Query(description="day, ISO week or month")] = "week",
    on: Annotated[date | None, Query(description="a local day inside the period (default: today)")] = None,
    node: NodeQuery = None,
    format: Annotated[Literal["json", "csv", "html", "xlsx"], Query()] = "json",
) -> reports.Ranking | Response:
    """Rank the nodes of `level` inside `node` over the day / week / month containing `on` by the assessment
    score (考核). Towns are usually ranked daily or weekly, counties weekly or monthly; any combination is
    allowed. ?format=html is the printable 排名通报, ?format=xlsx the same as an Excel workbook."""
    now = clock.now()
    scope = resolve_scope(db, user, node)
    span = periods.period_containing(period, on if on is not None else periods.local_today(now, settings.tz))
    result = reports.ranking(db, scope, level, span, now, settings.tz, assess=settings.assessment)
    name = f"ranking_{level}_{span.label}_{_safe(scope.code)}"
    if format == "csv":
        return _csv(report_render.to_csv(result.rows, report_render.RANKING_COLUMNS), f"{name}.csv")
    if format == "html":
        return HTMLResponse(
            ranking_pages.ranking_html(result, now, settings.tz),
            headers={"Content-Security-Policy": report_render.WEEKLY_HTML_CSP},
        )
    if format == "xlsx":
        return Response(
            content=ranking_pages.ranking_xlsx(result),
            media_type=XLSX_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
        )
    return result


@router.get(
    "/weekly",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
            "description": "JSON, CSV (?format=csv) or a printable HTML page (?format=html)",
        },
        **_ERRORS,
    },
    response_model=reports.WeeklyReport,
)
def weekly(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: NodeQuery = None,
    week: Annotated[
        str | None,
        Query(
            pattern=r"^\d{4}-[Ww]\d{2}$",
            description="ISO week such as 2026-W47 (default: the last full week)",
        ),
    ] = None,
    format: Annotated[Literal["json", "csv", "html"], Query()] = "json",
) -> reports.WeeklyReport | Response:
    """The weekly report of a node: totals vs the previous week, case closure, per analyte, per day,
    ranking of the child nodes and the list of positive results."""
    now = clock.now()
    scope = resolve_scope(db, user, node)
    if week is None:
        span = periods.week_period(periods.local_today(now, settings.tz) - timedelta(days=7))
    else:
        span = periods.parse_iso_week(week)
    report = reports.weekly_report(db, scope, span, now, settings.tz, assess=settings.assessment)
    if format == "csv":
        return _csv(report_render.weekly_csv(report), f"weekly_{_safe(scope.code)}_{span.label}.csv")
    if format == "html":
        return HTMLResponse(
            report_render.weekly_html(report),
            headers={"Content-Security-Policy": report_render.WEEKLY_HTML_CSP},
        )
    return report
