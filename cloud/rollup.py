"""Daily aggregates of the results, kept exact by the database itself, and the queries that read them.

Three tables (revision 0010), keyed by the station's grid node and — the first two — the local calendar day
of ``measured_at`` in the rollup's time zone (`ROLLUP_TZ`, Asia/Shanghai: UTC+8 all year since 1991):

    result_days       day, node_id, verdict → tests, flawed (invalid or with QC flags), timely (uploaded
                      within `TIMELY_MINUTES` of the measurement), registered (its sample is registered)
    result_day_items  day, node_id, analyte, product, verdict → tests
    result_totals     node_id, analyte, product, verdict → tests (all time: list totals without a time range)

Triggers maintain them in the transaction of every insert into ``results`` (on PostgreSQL one statement-level
trigger over the inserted rows, so a multi-row INSERT or COPY pays one grouped upsert per table; on SQLite a
row trigger), and a trigger on ``samples`` counts the results a late registration turns into registered ones.
Whatever writes results — ingest, `migrate-db`, a test — the aggregates follow; results are never updated or
deleted. Revision 0010 fills them from the results already stored.

Does: answer what the reports, rankings, dashboard, grid rollup and list totals ask of whole local days —
counts by verdict, per day, per analyte, per month × analyte × product, the assessment's counts — from these
tables (`covers` says when they can: the grid's time zone is the rollup's), and count results between two
arbitrary instants as whole days from `result_days` plus the partial days at either end from ``results``.

Does not: decide scope (callers pass a materialized grid path or a scope condition), know about HTTP, or
answer what needs a result's other fields (text search, the positives list): those read ``results``.
"""

from __future__ import annotations

# ruff: noqa: S608 - SQL here is assembled from this module's constants; values are bound.
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cloud.clock import utc_iso
from cloud.db import Database
from cloud.sqlfilter import local_time_sql, minutes_between_sql, subtree_sql

ROLLUP_TZ = ZoneInfo("Asia/Shanghai")
ROLLUP_OFFSET = "+480 minutes"
"""Asia/Shanghai's offset, fixed since 1991 (report dates start in 2000)."""
TIMELY_MINUTES = 60.0
"""The upload delay `result_days.timely` counts within: Settings.assessment_timely_minutes' default. A grid
configured with another limit reads its timeliness from ``results``."""

Counts = tuple[int, int, int, int, int]
"""tests, valid, positives, suspects, invalid."""


def covers(tz: ZoneInfo) -> bool:
    """True when days of the grid's time zone `tz` are the rollup's days."""
    return tz.key == ROLLUP_TZ.key


# ---------------------------------------------------------------- the SQL the triggers and revision 0010 run


def day_sql(dialect: str, column: str) -> str:
    """The rollup day of the UTC timestamp text in `column` (the reports' own local-day expression)."""
    return local_time_sql(dialect, column, "day").replace("?", f"'{ROLLUP_OFFSET}'")


def _day_columns(dialect: str, alias: str) -> str:
    a = alias
    timely = minutes_between_sql(dialect, f"{a}.measured_at", f"{a}.received_at")
    return (
        f"{day_sql(dialect, f'{a}.measured_at')}, {a}.node_id, {a}.verdict, COUNT(*),"
        f" SUM(CASE WHEN {a}.verdict = 'invalid' OR {a}.qc_json != '[]' THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {timely} <= {TIMELY_MINUTES} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN EXISTS (SELECT 1 FROM samples s WHERE s.station = {a}.station"
        f" AND s.code = {a}.sample_id) THEN 1 ELSE 0 END)"
    )


_DAYS_UPSERT = (
    " ON CONFLICT (day, node_id, verdict) DO UPDATE SET tests = result_days.tests + excluded.tests,"
    " flawed = result_days.flawed + excluded.flawed, timely = result_days.timely + excluded.timely,"
    " registered = result_days.registered + excluded.registered"
)
_ITEMS_UPSERT = (
    " ON CONFLICT (day, node_id, analyte, product, verdict)"
    " DO UPDATE SET tests = result_day_items.tests + excluded.tests"
)
_TOTALS_UPSERT = " ON CONFLICT (node_id, analyte, product, verdict) DO UPDATE SET tests = result_totals.tests + excluded.tests"


def fill_sql(dialect: str, source: str) -> list[str]:
    """INSERTs adding the aggregates of the rows of `source` (``results``, or PostgreSQL's transition table)
    to the three tables."""
    day = day_sql(dialect, "n.measured_at")
    where = " WHERE true" if dialect == "sqlite" else ""  # SQLite: INSERT … SELECT before ON CONFLICT
    return [
        "INSERT INTO result_days (day, node_id, verdict, tests, flawed, timely, registered)"
        f" SELECT {_day_columns(dialect, 'n')} FROM {source} n{where} GROUP BY 1, 2, 3" + _DAYS_UPSERT,
        "INSERT INTO result_day_items (day, node_id, analyte, product, verdict, tests)"
        f" SELECT {day}, n.node_id, n.analyte, n.product, n.verdict, COUNT(*) FROM {source} n{where}"
        " GROUP BY 1, 2, 3, 4, 5" + _ITEMS_UPSERT,
        "INSERT INTO result_totals (node_id, analyte, product, verdict, tests)"
        f" SELECT n.node_id, n.analyte, n.product, n.verdict, COUNT(*) FROM {source} n{where}"
        " GROUP BY 1, 2, 3, 4" + _TOTALS_UPSERT,
    ]


def trigger_sql(dialect: str) -> list[str]:
    """DDL of the triggers that keep the aggregates (see the module docstring)."""
    sample_match = (
        "SELECT {day} AS day, r.node_id, r.verdict, COUNT(*) AS n FROM results r"
        " WHERE r.station = NEW.station AND r.sample_id = NEW.code GROUP BY 1, 2, 3"
    )
    if dialect == "postgresql":
        body = ";\n  ".join(fill_sql(dialect, "kj_new"))
        matched = sample_match.format(day=day_sql(dialect, "r.measured_at"))
        return [
            "CREATE FUNCTION kj_results_rollup() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  "
            + body
            + ";\n  RETURN NULL;\nEND $$",
            "CREATE TRIGGER trg_results_rollup AFTER INSERT ON results REFERENCING NEW TABLE AS kj_new"
            " FOR EACH STATEMENT EXECUTE FUNCTION kj_results_rollup()",
            "CREATE FUNCTION kj_samples_rollup() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            "  UPDATE result_days d SET registered = d.registered + m.n"
            f" FROM ({matched}) m WHERE d.day = m.day AND d.node_id = m.node_id AND d.verdict = m.verdict;\n"
            "  RETURN NULL;\nEND $$",
            "CREATE TRIGGER trg_samples_rollup AFTER INSERT ON samples FOR EACH ROW"
            " EXECUTE FUNCTION kj_samples_rollup()",
        ]
    timely = minutes_between_sql(dialect, "NEW.measured_at", "NEW.received_at")
    day = day_sql(dialect, "NEW.measured_at")
    rday = day_sql(dialect, "r.measured_at")
    return [
        "CREATE TRIGGER trg_results_rollup AFTER INSERT ON results BEGIN\n"
        "  INSERT INTO result_days (day, node_id, verdict, tests, flawed, timely, registered)"
        f" VALUES ({day}, NEW.node_id, NEW.verdict, 1,"
        " CASE WHEN NEW.verdict = 'invalid' OR NEW.qc_json != '[]' THEN 1 ELSE 0 END,"
        f" CASE WHEN {timely} <= {TIMELY_MINUTES} THEN 1 ELSE 0 END,"
        " CASE WHEN EXISTS (SELECT 1 FROM samples s WHERE s.station = NEW.station AND s.code = NEW.sample_id)"
        " THEN 1 ELSE 0 END)" + _DAYS_UPSERT + ";\n"
        "  INSERT INTO result_day_items (day, node_id, analyte, product, verdict, tests)"
        f" VALUES ({day}, NEW.node_id, NEW.analyte, NEW.product, NEW.verdict, 1)" + _ITEMS_UPSERT + ";\n"
        "  INSERT INTO result_totals (node_id, analyte, product, verdict, tests)"
        " VALUES (NEW.node_id, NEW.analyte, NEW.product, NEW.verdict, 1)" + _TOTALS_UPSERT + ";\n"
        "END",
        "CREATE TRIGGER trg_samples_rollup AFTER INSERT ON samples BEGIN\n"
        "  UPDATE result_days SET registered = registered + (SELECT COUNT(*) FROM results r"
        " WHERE r.station = NEW.station AND r.sample_id = NEW.code"
        f" AND {rday} = result_days.day AND r.node_id = result_days.node_id AND r.verdict = result_days.verdict)"
        f" WHERE (day, node_id, verdict) IN (SELECT {rday}, r.node_id, r.verdict FROM results r"
        " WHERE r.station = NEW.station AND r.sample_id = NEW.code);\n"
        "END",
    ]


# ---------------------------------------------------------------- reading


def _days(path: str, first: date | None, last: date | None) -> tuple[str, list[Any]]:
    """Condition on alias d: nodes under `path`, days first..last (inclusive; None = open)."""
    clause, params = subtree_sql("d.node_id", path)
    cond, args = [clause], list(params)
    if first is not None:
        cond.append("d.day >= ?")
        args.append(first.isoformat())
    if last is not None:
        cond.append("d.day <= ?")
        args.append(last.isoformat())
    return " AND ".join(cond), args


_VERDICT_SUMS = """COALESCE(SUM(d.tests), 0),
    COALESCE(SUM(CASE WHEN d.verdict != 'invalid' THEN d.tests ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN d.verdict = 'positive' THEN d.tests ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN d.verdict = 'suspect' THEN d.tests ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN d.verdict = 'invalid' THEN d.tests ELSE 0 END), 0)"""


RAW_COUNTS = """COUNT(*),
    COALESCE(SUM(CASE WHEN r.verdict != 'invalid' THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN r.verdict = 'positive' THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN r.verdict = 'suspect' THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN r.verdict = 'invalid' THEN 1 ELSE 0 END), 0)"""
"""The same five counts over ``results r`` (the raw form of `_VERDICT_SUMS`)."""


def _as_counts(row: Sequence[Any], offset: int = 0) -> Counts:
    t, v, p, s, i = (int(row[offset + k] or 0) for k in range(5))
    return t, v, p, s, i


def counts(db: Database, path: str, first: date, last: date) -> Counts:
    """Counts under `path` over the local days first..last."""
    where, params = _days(path, first, last)
    return _as_counts(
        db.execute(f"SELECT {_VERDICT_SUMS} FROM result_days d WHERE {where}", params).fetchone()
    )


def per_day(db: Database, path: str, first: date, last: date) -> dict[str, Counts]:
    """Counts per local day (days without results absent)."""
    where, params = _days(path, first, last)
    rows = db.execute(
        f"SELECT d.day, {_VERDICT_SUMS} FROM result_days d WHERE {where} GROUP BY d.day", params
    )
    return {str(r[0]): _as_counts(r, 1) for r in rows.fetchall()}


def by_analyte(db: Database, path: str, first: date, last: date) -> list[tuple[str, Counts]]:
    """Counts per analyte, most tested first (then by analyte)."""
    where, params = _days(path, first, last)
    rows = db.execute(
        f"""SELECT d.analyte, {_VERDICT_SUMS} FROM result_day_items d WHERE {where}
            GROUP BY d.analyte ORDER BY COALESCE(SUM(d.tests), 0) DESC, d.analyte""",
        params,
    ).fetchall()
    return [(str(r[0]), _as_counts(r, 1)) for r in rows]


def positivity(db: Database, path: str, first: date, last: date) -> list[tuple[str, str, str, Counts]]:
    """Counts by local month × analyte × product, sorted by them."""
    where, params = _days(path, first, last)
    rows = db.execute(
        f"""SELECT substr(d.day, 1, 7) AS month, d.analyte, d.product, {_VERDICT_SUMS}
            FROM result_day_items d WHERE {where}
            GROUP BY substr(d.day, 1, 7), d.analyte, d.product ORDER BY month, d.analyte, d.product""",
        params,
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), _as_counts(r, 3)) for r in rows]


UnitCounts = tuple[int, int, int, int, int]
"""tests, flawed, timely, registered, stations with a valid test (cloud.assessment's counts)."""


def unit(db: Database, path: str, first: date, last: date) -> UnitCounts:
    """The assessment's counts under `path` over first..last: tests, flawed, timely, registered, and the
    stations with a valid test."""
    where, params = _days(path, first, last)
    row = db.execute(
        f"""SELECT COALESCE(SUM(d.tests), 0), COALESCE(SUM(d.flawed), 0), COALESCE(SUM(d.timely), 0),
                   COALESCE(SUM(d.registered), 0), COUNT(DISTINCT CASE WHEN d.verdict != 'invalid' THEN d.node_id END)
            FROM result_days d WHERE {where}""",
        params,
    ).fetchone()
    tests, flawed, timely, registered, active = (int(v or 0) for v in row)
    return tests, flawed, timely, registered, active


class Units:
    """Every unit's counts under one scope over first..last, read in two queries (a ranking's units):
    `counts(path)` and `unit(path)` for any node at or below the scope."""

    def __init__(self, db: Database, scope_path: str, first: date, last: date) -> None:
        where, params = _days(scope_path, first, last)
        rows = db.execute(
            f"""SELECT d.node_id, {_VERDICT_SUMS}, COALESCE(SUM(d.flawed), 0), COALESCE(SUM(d.timely), 0),
                       COALESCE(SUM(d.registered), 0)
                FROM result_days d WHERE {where} GROUP BY d.node_id""",
            params,
        ).fetchall()
        self._by_node = {int(r[0]): tuple(int(v or 0) for v in r[1:]) for r in rows}
        clause, sub = subtree_sql("id", scope_path)
        self._paths = {
            int(r[0]): str(r[1]) for r in db.execute(f"SELECT id, path FROM grid_nodes WHERE {clause}", sub)
        }

    def _sums(self, path: str) -> tuple[list[int], int]:
        total = [0] * 8
        active = 0
        for node, node_path in self._paths.items():
            row = self._by_node.get(node)
            if row is None or not node_path.startswith(path):
                continue
            total = [a + b for a, b in zip(total, row, strict=True)]
            active += row[1] > 0  # a valid test
        return total, active

    def counts(self, path: str) -> Counts:
        t, _ = self._sums(path)
        return t[0], t[1], t[2], t[3], t[4]

    def unit(self, path: str) -> UnitCounts:
        t, active = self._sums(path)
        return t[0], t[5], t[6], t[7], active


def day_start(day: date) -> datetime:
    """The UTC instant the rollup day `day` starts."""
    return datetime.combine(day, time(), ROLLUP_TZ).astimezone(UTC)


def _bound(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # compares right with any stored precision


Range = tuple[str | None, str | None]
"""[lo, hi) of measured_at text (None = open)."""


def split(
    since: datetime | None, until: datetime | None
) -> tuple[tuple[date | None, date | None] | None, list[Range]]:
    """[since, until) (None = open) as whole rollup days (first, last) — None when it holds no whole day —
    plus the ranges of ``results`` left at either end, compared exactly as the raw queries compare."""
    first = None if since is None else since.astimezone(ROLLUP_TZ).date()
    if since is not None and first is not None and day_start(first) != since:
        first += timedelta(days=1)
    last = None if until is None else until.astimezone(ROLLUP_TZ).date() - timedelta(days=1)
    lo = None if since is None else utc_iso(since)
    hi = None if until is None else utc_iso(until)
    if first is not None and last is not None and first > last:
        return None, [(lo, hi)]
    edges: list[Range] = []
    if since is not None and first is not None and day_start(first) != since:
        edges.append((lo, _bound(day_start(first))))
    if until is not None and last is not None and day_start(last + timedelta(days=1)) != until:
        edges.append((_bound(day_start(last + timedelta(days=1))), hi))
    return (first, last), edges


Condition = Callable[[str], tuple[str, list[Any]]]
"""Given a table alias ("d" for the rollup, "r" for results), a SQL condition and its parameters on the
columns both have (node_id, verdict; analyte, product with `items`)."""


def range_counts(
    db: Database, cond: Condition, since: datetime | None, until: datetime | None, *, items: bool = False
) -> Counts:
    """Counts of the results matching `cond` measured in [since, until): whole days from the rollup
    (``result_day_items`` when `items`, for analyte/product conditions), the partial days from results."""
    total = [0, 0, 0, 0, 0]
    for row in _range_rows(db, cond, since, until, items=items, by_node=False):
        total = [a + b for a, b in zip(total, _as_counts(row), strict=True)]
    t, v, p, s, i = total
    return t, v, p, s, i


def range_counts_by_node(
    db: Database, cond: Condition, since: datetime | None, until: datetime | None
) -> dict[int, Counts]:
    """`range_counts` per station node (the node_id results carry), in as many queries as for one total."""
    found: dict[int, list[int]] = {}
    for row in _range_rows(db, cond, since, until, items=False, by_node=True):
        acc = found.setdefault(int(row[0]), [0, 0, 0, 0, 0])
        for k, v in enumerate(_as_counts(row, 1)):
            acc[k] += v
    return {n: (c[0], c[1], c[2], c[3], c[4]) for n, c in found.items()}


def _range_rows(
    db: Database,
    cond: Condition,
    since: datetime | None,
    until: datetime | None,
    *,
    items: bool,
    by_node: bool,
) -> list[Sequence[Any]]:
    days, edges = split(since, until)
    queries: list[tuple[str, list[Any]]] = []
    if since is None and until is None:  # all time: the per-node totals, a few rows per station
        sql, params = cond("d")
        select, group = ("d.node_id, ", " GROUP BY d.node_id") if by_node else ("", "")
        queries.append((f"SELECT {select}{_VERDICT_SUMS} FROM result_totals d WHERE {sql}{group}", params))
        days, edges = None, []
    if days is not None:
        sql, params = cond("d")
        first, last = days
        if first is not None:
            sql += " AND d.day >= ?"
            params = [*params, first.isoformat()]
        if last is not None:
            sql += " AND d.day <= ?"
            params = [*params, last.isoformat()]
        table = "result_day_items" if items else "result_days"
        select, group = ("d.node_id, ", " GROUP BY d.node_id") if by_node else ("", "")
        queries.append((f"SELECT {select}{_VERDICT_SUMS} FROM {table} d WHERE {sql}{group}", params))
    for lo, hi in edges:
        sql, params = cond("r")
        if lo is not None:
            sql += " AND r.measured_at >= ?"
            params = [*params, lo]
        if hi is not None:
            sql += " AND r.measured_at < ?"
            params = [*params, hi]
        select, group = ("r.node_id, ", " GROUP BY r.node_id") if by_node else ("", "")
        queries.append((f"SELECT {select}{RAW_COUNTS} FROM results r WHERE {sql}{group}", params))
    rows: list[Sequence[Any]] = []
    for sql, params in queries:
        rows += db.execute(sql, params).fetchall()
    return rows
