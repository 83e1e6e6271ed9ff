"""Reports rendered for people and spreadsheets: CSV, the weekly report's HTML page, any report as bytes.

Does: CSV as UTF-8 with a BOM so Excel shows Chinese, CRLF line ends and bilingual headers (the column sets of
positivity, rankings, closure and the weekly report); a text cell that a spreadsheet would run as a formula is
written as text. The weekly report as CSV (one row per child node plus the node itself) and as a
self-contained printable HTML page (Chinese labels, no script) with its Content-Security-Policy.
`render_report`: one report as bytes (JSON, CSV or HTML) — what the REST endpoints return, for an operator's
CLI or a cron job.

Does not: compute a figure (cloud.reports; periods are cloud.periods), authorise (callers pass a resolved
`cloud.grid.Node`), write to the database, or know about HTTP.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from cloud import assessment
from cloud.db import Database
from cloud.errors import Invalid
from cloud.grid import Node
from cloud.periods import (
    REPORT_TZ,
    PeriodKind,
    local_today,
    parse_iso_week,
    period_containing,
    range_period,
    week_period,
)
from cloud.reports import (
    RankLevel,
    WeeklyReport,
    by_analyte,
    closure,
    counts,
    positivity,
    ranking,
    weekly_report,
)
from kuaijian_schema import labels

# ---------------------------------------------------------------- CSV / HTML rendering

Column = tuple[str, str]
"""(field name, header label)."""

_HEADERS: dict[str, str] = {
    "month": "月份 month",
    "analyte": "检测项目 analyte",
    "product": "样品 product",
    "tests": "检测数 tests",
    "valid": "有效数 valid",
    "positives": "阳性数 positives",
    "suspects": "可疑数 suspects",
    "invalid": "无效数 invalid",
    "positive_rate": "阳性率 positive_rate",
    "rank": "排名 rank",
    "code": "编码 code",
    "name": "名称 name",
    "level": "层级 level",
    "score": "得分 score",
    "stations_total": "站点数 stations_total",
    "stations_active": "有检测站点 stations_active",
    "coverage": "覆盖率 coverage",
    "cases_due": "应办结案件 cases_due",
    "cases_on_time": "按期办结 cases_on_time",
    "on_time_rate": "按期办结率 on_time_rate",
    "task_done": "任务完成数 task_done",
    "task_target": "任务目标数 task_target",
    "task_completion": "任务完成率 task_completion",
    "timeliness": "上传及时率 timeliness",
    "quality": "检测质量 quality",
    "registration": "登记完整率 registration",
    "opened": "立案数 opened",
    "closed": "办结数 closed",
    "closed_on_time": "按期办结 closed_on_time",
    "closed_late": "超期办结 closed_late",
    "open_overdue": "超期未结 open_overdue",
    "open_pending": "未到期 open_pending",
    "week": "周 week",
}
"""Header label of every report field: one label per field, whichever report shows it."""


def _columns(*names: str) -> tuple[Column, ...]:
    """The (field, header) columns of a report showing `names`, in that order."""
    return tuple((name, _HEADERS[name]) for name in names)


POSITIVITY_COLUMNS = _columns(
    "month", "analyte", "product", "tests", "valid", "positives", "suspects", "invalid", "positive_rate"
)
RANKING_COLUMNS = _columns(
    "rank",
    "code",
    "name",
    "level",
    "score",
    "tests",
    "valid",
    "positives",
    "positive_rate",
    "stations_total",
    "stations_active",
    "coverage",
    "cases_due",
    "cases_on_time",
    "on_time_rate",
    "task_done",
    "task_target",
    "task_completion",
    "timeliness",
    "quality",
    "registration",
)
CLOSURE_COLUMNS = _columns(
    "opened", "closed", "closed_on_time", "closed_late", "open_overdue", "open_pending", "on_time_rate"
)
WEEKLY_COLUMNS = _columns(
    "week",
    "code",
    "name",
    "level",
    "tests",
    "valid",
    "positives",
    "positive_rate",
    "stations_total",
    "stations_active",
    "cases_due",
    "cases_on_time",
    "on_time_rate",
    "score",
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
