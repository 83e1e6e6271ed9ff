"""Assessment (考核): the parts of a unit's score over a period, and the score from configured weights.

Parts (each a share in [0, 1]; None when the unit has nothing it could be judged on for that part):
    coverage      stations of the unit with at least one valid test in the period / stations of the unit
                  (0 when none tested; None only when the unit has no station)
    tasks         Σ min(done, target) / Σ target over the sampling tasks set on the unit or under it whose
                  [start, due] overlaps the period (progress as counted by cloud.tasks, at `now`)
    timeliness    results measured in the period that reached the cloud within `timely_minutes` of their
                  measurement / results measured in the period (upload timeliness, 上传及时率)
    cases         cases opened in the period and due (closed, or overdue at `now`) that were closed on time,
                  never escalated / cases due (on-time case handling, 按时办结率)
    quality       1 − (invalid tests + tests carrying a QC flag) / tests (QC-failed share)
    registration  tests whose sample was registered at the station (a producer and batch are known)
                  / tests (登记完整率)

score = 100 × Σ wᵢ·partᵢ / Σ wᵢ over the parts that are not None (a part the unit could not be judged on
neither helps nor hurts it); 0 when every part is None. Weights come from `Settings.assessment_weights`.

Does not: rank (cloud.reports.ranking sorts by the score) or authorise (callers pass a resolved scope path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cloud import rollup
from cloud.db import Database
from cloud.sqlfilter import minutes_between_sql, subtree_sql

PARTS = ("coverage", "tasks", "timeliness", "cases", "quality", "registration")
DEFAULT_WEIGHTS: dict[str, float] = {
    "coverage": 20.0,
    "tasks": 25.0,
    "timeliness": 15.0,
    "cases": 20.0,
    "quality": 10.0,
    "registration": 10.0,
}
PART_NAMES = {
    "coverage": "覆盖率",
    "tasks": "任务完成率",
    "timeliness": "上传及时率",
    "cases": "按时办结率",
    "quality": "检测质量",
    "registration": "登记完整率",
}


@dataclass(frozen=True)
class AssessmentConfig:
    """Weights of the parts and the upload delay that still counts as timely (from Settings)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    timely_minutes: float = 60.0

    @property
    def formula(self) -> str:
        return formula(self.weights)


@dataclass(frozen=True)
class Parts:
    coverage: float | None
    tasks: float | None
    timeliness: float | None
    cases: float | None
    quality: float | None
    registration: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in PARTS}


def score(parts: Parts, weights: dict[str, float]) -> float:
    """The weighted mean of the parts present, × 100, rounded to 2 decimals (see the module docstring)."""
    num = 0.0
    den = 0.0
    for name, value in parts.as_dict().items():
        w = float(weights.get(name, 0.0))
        if value is None or w <= 0:
            continue
        num += w * value
        den += w
    return round(100.0 * num / den, 2) if den else 0.0


def formula(weights: dict[str, float]) -> str:
    terms = " + ".join(f"{weights.get(p, 0):g}×{PART_NAMES[p]}({p})" for p in PARTS if weights.get(p, 0) > 0)
    return f"得分 score = 100 × ({terms}) / 参与计算的权重之和 (parts without data are left out)"


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def unit_parts(
    db: Database,
    path: str,
    lo: str,
    hi: str,
    now_text: str,
    first_day: date,
    last_day: date,
    now: datetime,
    tz: ZoneInfo,
    timely_minutes: float,
    result_counts: rollup.UnitCounts | None = None,
) -> tuple[Parts, dict[str, Any]]:
    """The parts of the unit at materialized `path` over results measured in [lo, hi) (UTC text bounds of
    the local days first_day..last_day in `tz`), plus the raw counts behind them. The result counts are
    `result_counts` when the caller has them (a ranking reads every unit's at once), else they come from the
    daily aggregates (cloud.rollup) when those cover `tz` and `timely_minutes`, else from the results."""
    from cloud import tasks  # tasks → risk → reports would cycle at import time

    under_r, params_r = subtree_sql("r.node_id", path)
    under_g, params_g = subtree_sql("id", path)
    under_c, params_c = subtree_sql("c.origin_node_id", path)
    under_t, params_t = subtree_sql("t.node_id", path)
    if result_counts is not None:
        tests, flawed, timely, registered, active = result_counts
    elif rollup.covers(tz) and timely_minutes == rollup.TIMELY_MINUTES:
        tests, flawed, timely, registered, active = rollup.unit(db, path, first_day, last_day)
    else:
        row = db.execute(
            f"""SELECT COUNT(*),
                   COALESCE(SUM(CASE WHEN r.verdict = 'invalid' OR r.qc_json != '[]' THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN {minutes_between_sql(db.dialect, "r.measured_at", "r.received_at")} <= ? THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM samples s WHERE s.station = r.station
                                                  AND s.code = r.sample_id) THEN 1 ELSE 0 END), 0),
                   COUNT(DISTINCT CASE WHEN r.verdict != 'invalid' THEN r.node_id END)
            FROM results r WHERE r.measured_at >= ? AND r.measured_at < ? AND {under_r}""",  # noqa: S608
            [timely_minutes, lo, hi, *params_r],
        ).fetchone()
        tests, flawed, timely, registered, active = (int(v or 0) for v in row)
    stations = int(
        db.execute(
            f"SELECT COUNT(*) FROM grid_nodes WHERE level = 'station' AND {under_g}",  # noqa: S608
            params_g,
        ).fetchone()[0]
    )
    cases = db.execute(
        f"""SELECT COALESCE(SUM(CASE WHEN c.status = 'closed' AND c.escalations = 0 AND c.closed_at <= c.deadline
                                THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN c.status = 'closed' OR c.escalations > 0 OR c.deadline < ?
                                THEN 1 ELSE 0 END), 0)
            FROM cases c WHERE c.opened_at >= ? AND c.opened_at < ? AND {under_c}""",  # noqa: S608
        [now_text, lo, hi, *params_c],
    ).fetchone()
    on_time, due = int(cases[0] or 0), int(cases[1] or 0)
    done = target = 0
    task_rows = db.execute(
        f"""SELECT t.id FROM tasks t WHERE t.cancelled_at IS NULL AND t.start_date <= ? AND t.due_date >= ?
            AND {under_t}""",  # noqa: S608
        [last_day.isoformat(), first_day.isoformat(), *params_t],
    ).fetchall()
    for (task_id,) in task_rows:
        item = tasks.task_by_id(db, int(task_id), now, tz)
        done += min(item["done"], item["target"])
        target += item["target"]
    parts = Parts(
        coverage=(active / stations) if stations else None,
        tasks=_share(done, target),
        timeliness=_share(timely, tests),
        cases=_share(on_time, due),
        quality=(1.0 - flawed / tests) if tests else None,
        registration=_share(registered, tests),
    )
    raw = {
        "tests": tests,
        "flawed": flawed,
        "timely": timely,
        "registered": registered,
        "stations_active": active,
        "stations_total": stations,
        "cases_due": due,
        "cases_on_time": on_time,
        "task_done": done,
        "task_target": target,
    }
    return parts, raw
