"""The ranking bulletin (排名通报) as a printable HTML page and as an Excel workbook.

Does: render a `cloud.reports.Ranking` — every unit's rank, score and each assessment part with its raw
counts, and the formula with the weights in force — as a self-contained HTML page (no script, inline CSS
allowed by the same CSP as the weekly report) and as an .xlsx workbook (openpyxl; numbers as numbers, shares
as percentages, text cells that look like formulas written as text).

Does not: compute the ranking (cloud.reports / cloud.assessment) or know about HTTP.
"""

from __future__ import annotations

import html
import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook

from cloud.report_render import _REPORT_CSS, _pct, _table
from cloud.reports import Ranking

LEVEL_NAMES = {"county": "区县", "town": "乡镇（街道）", "village": "村（社区）"}
PERIOD_NAMES = {"day": "日", "week": "周", "month": "月", "range": "期"}
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rank", "排名", "int"),
    ("name", "单位", "text"),
    ("code", "编码", "text"),
    ("score", "得分", "num"),
    ("coverage", "覆盖率", "pct"),
    ("task_completion", "任务完成率", "pct"),
    ("timeliness", "上传及时率", "pct"),
    ("on_time_rate", "按时办结率", "pct"),
    ("quality", "检测质量", "pct"),
    ("registration", "登记完整率", "pct"),
    ("tests", "检测数", "int"),
    ("positives", "阳性数", "int"),
    ("positive_rate", "阳性率", "pct"),
    ("stations_active", "有检测站点", "int"),
    ("stations_total", "站点数", "int"),
    ("task_done", "任务完成数", "int"),
    ("task_target", "任务目标数", "int"),
    ("cases_due", "应办结案件", "int"),
    ("cases_on_time", "按时办结", "int"),
)


def title(ranking: Ranking) -> str:
    within = ranking.within.name
    kind = PERIOD_NAMES.get(ranking.period.kind, "")
    return f"{within} {LEVEL_NAMES.get(ranking.level, ranking.level)}考核排名通报（{kind}）{ranking.period.label}"


def ranking_html(ranking: Ranking, now: datetime, tz: ZoneInfo) -> str:
    head = title(ranking)
    rows: list[list[Any]] = []
    for r in ranking.rows:
        row = r.model_dump()
        rows.append(
            [_pct(row[key]) if kind == "pct" else row[key] for key, _label, kind in COLUMNS if key != "code"]
        )
    return "".join(
        [
            "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
            f"<title>{html.escape(head)}</title><style>{_REPORT_CSS}</style></head><body>",
            f"<h1>{html.escape(head)}</h1>",
            f"<p>统计区间 {ranking.period.start} 至 {ranking.period.end}（{html.escape(str(tz))}）· 生成时间 "
            f"{html.escape(now.astimezone(tz).strftime('%Y-%m-%d %H:%M'))}</p>",
            _table([label for key, label, _kind in COLUMNS if key != "code"], rows),
            f"<p>{html.escape(ranking.score_formula)}</p>",
            "<p>各项定义见 docs/reports.md：覆盖率 = 有有效检测的站点 / 站点；任务完成率 = Σ min(完成, 目标) / Σ 目标；"
            "上传及时率 = 检测后规定时间内到达云端的结果 / 结果；按时办结率 = 按时办结 / 应办结案件；"
            "检测质量 = 1 − (无效 + 质控标记) / 检测；登记完整率 = 已登记样品的检测 / 检测。无数据的项不参与计算。</p>",
            "</body></html>",
        ]
    )


def _text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def ranking_xlsx(ranking: Ranking) -> bytes:
    wb = Workbook()
    ws = wb.create_sheet("排名通报", 0)
    for extra in wb.sheetnames[1:]:
        del wb[extra]
    ws.append([title(ranking)])
    ws.append([f"{ranking.period.start} 至 {ranking.period.end}", ranking.score_formula])
    ws.append([label for _key, label, _kind in COLUMNS])
    for r in ranking.rows:
        row = r.model_dump()
        ws.append([_text(row[key]) if kind == "text" else row[key] for key, _label, kind in COLUMNS])
    for col, (_key, _label, kind) in enumerate(COLUMNS, start=1):
        if kind == "pct":
            for cells in ws.iter_rows(min_row=4, min_col=col, max_col=col):
                for cell in cells:
                    cell.number_format = "0.0%"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
