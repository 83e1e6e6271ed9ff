"""Read-side queries for the API, every one restricted to the caller's scope.

Does: list results / stations / cases / seq gaps / dead letters / configs with filters and
limit+offset pagination (returning the total), count results.
Every query's WHERE starts with its scope (`_Where.scoped`: the caller's subtree); the one unscoped query,
dead letters (most name no station), says so (`_Where.unscoped`) and is for admins only.
Does not: write anything, or HTTP; the grid tree and per-node roll-ups are in cloud.grid_queries, the
dashboard's overview and live feed in cloud.dashboard, reports in cloud.reports.
"""

# ruff: noqa: S608 - SQL text here is assembled only from this module's constants; values are bound.
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloud.auth import User, scoped_node
from cloud.clock import utc_iso
from cloud.db import Database
from cloud.errors import NotFound
from cloud.grid import Node
from cloud.rollup import range_counts
from cloud.sqlfilter import like_contains, subtree_sql
from kuaijian_schema.labels import ANALYTES

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Page:
    total: int
    items: Rows


def _dicts(cur: Any) -> Rows:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class _Where:
    """The WHERE of one query: its scope condition, then filters (`add`), all ANDed."""

    def __init__(self, parts: list[str], params: list[object]) -> None:
        self.parts = parts
        self.params = params

    @classmethod
    def scoped(cls, user: User, node_column: str) -> _Where:
        """Rows whose grid node (`node_column`, a grid_nodes.id column) lies in the user's subtree."""
        sql, params = subtree_sql(node_column, user.node_path)
        return cls([sql], list(params))

    @classmethod
    def unscoped(cls) -> _Where:
        """Every row: for tables no grid node owns (dead letters). The caller has checked the user is an admin."""
        return cls(["1=1"], [])

    def add(self, sql: str, *params: object) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    def subtree(self, column: str, node: Node) -> None:
        sql, params = subtree_sql(column, node.path)
        self.add(sql, *params)

    @property
    def sql(self) -> str:
        return " AND ".join(f"({p})" for p in self.parts)


def _page(
    db: Database,
    select: str,
    frm: str,
    where: _Where,
    order: str,
    limit: int,
    offset: int,
    total: int | None = None,
) -> Page:
    """One page of rows and the total they are part of (counted here unless the caller knows it)."""
    if total is None:
        total = int(db.execute(f"SELECT COUNT(*) FROM {frm} WHERE {where.sql}", where.params).fetchone()[0])
    cur = db.execute(
        f"SELECT {select} FROM {frm} WHERE {where.sql} ORDER BY {order} LIMIT ? OFFSET ?",
        [*where.params, limit, offset],
    )
    return Page(total=total, items=_dicts(cur))


RESULT_COLUMNS = (
    "r.id, r.seq, r.station, r.instrument_serial, r.instrument_model, r.instrument_driver, r.sample_id,"
    " r.product, r.producer, r.sampled_at, r.method, r.analyte, r.channel, r.measured_at, r.verdict,"
    " r.values_json, r.qc_json, r.algorithm, r.config_version, r.operator, r.received_at,"
    " r.raw_json IS NOT NULL AS has_raw, r.ingest_flags, r.measured_at_sent"
)


def result_item(row: dict[str, Any]) -> dict[str, Any]:
    """A results row (RESULT_COLUMNS) in API shape."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "station": row["station"],
        "instrument": {
            "serial": row["instrument_serial"],
            "model": row["instrument_model"],
            "driver": row["instrument_driver"],
        },
        "sample": {
            "id": row["sample_id"],
            "product": row["product"],
            "producer": row["producer"],
            "sampled_at": row["sampled_at"],
        },
        "method": row["method"],
        "analyte": row["analyte"],
        "channel": row["channel"],
        "measured_at": row["measured_at"],
        "verdict": row["verdict"],
        "values": json.loads(row["values_json"]),
        "qc": json.loads(row["qc_json"]),
        "algorithm": row["algorithm"],
        "config_version": row["config_version"],
        "operator": row["operator"],
        "received_at": row["received_at"],
        "has_raw": bool(row["has_raw"]),
        "flags": json.loads(row["ingest_flags"] or "[]"),
        "measured_at_sent": row["measured_at_sent"],
    }


def analytes_named(text: str) -> list[str]:
    """Analyte codes whose code, Chinese or English name contains `text` (case-insensitive): a search for
    "吡虫啉" or "nitrofuran" finds the rows stored under their codes."""
    needle = text.casefold()
    return [code for code, names in ANALYTES.items() if any(needle in n.casefold() for n in (code, *names))]


def _search(where: _Where, q: str, columns: tuple[str, ...], analyte_column: str) -> None:
    """Rows where any of `columns` contains `q` literally, or whose analyte is named by it."""
    parts = [f"{c} LIKE ? ESCAPE '\\'" for c in columns]
    params: list[object] = [like_contains(q)] * len(columns)
    codes = analytes_named(q)
    if codes:
        parts.append(f"{analyte_column} IN ({','.join('?' for _ in codes)})")
        params.extend(codes)
    where.add(" OR ".join(parts), *params)


def list_results(
    db: Database,
    user: User,
    *,
    q: str | None = None,
    station: str | None = None,
    node: str | None = None,
    analyte: str | None = None,
    product: str | None = None,
    verdict: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page:
    """Results, newest measurement first. `since` inclusive, `until` exclusive (measured_at). `q` searches
    the sample id, product, producer, station id and name, and analyte names."""
    node_path = None
    if node is not None:
        node_path = scoped_node(db, user, node).path
    if station is not None:
        scoped_node(db, user, station)
    total = (
        None if q else _results_total(db, user, station, node_path, analyte, product, verdict, since, until)
    )
    # SQLite's planner reads a wide scope's rows through the node index and sorts them all for one page; when
    # the scope holds a large share of the results, walking measured_at (newest first) finds the page at once.
    node_column = "+r.node_id" if _wide_on_sqlite(db, total) else "r.node_id"
    where = _Where.scoped(user, node_column)
    if q:
        _search(where, q, ("r.sample_id", "r.product", "r.producer", "r.station", "sn.name"), "r.analyte")
    if station is not None:
        where.add("r.station = ?", station)
    if node_path is not None:
        sql, params = subtree_sql(node_column, node_path)
        where.add(sql, *params)
    if analyte is not None:
        where.add("r.analyte = ?", analyte)
    if product is not None:
        where.add("r.product = ?", product)
    if verdict is not None:
        where.add("r.verdict = ?", verdict)
    if since is not None:
        where.add("r.measured_at >= ?", utc_iso(since))
    if until is not None:
        where.add("r.measured_at < ?", utc_iso(until))
    page = _page(
        db,
        RESULT_COLUMNS + ", sn.name AS station_name",
        "results r JOIN grid_nodes sn ON sn.id = r.node_id",
        where,
        "r.measured_at DESC, r.id DESC",
        limit,
        offset,
        total,
    )
    return Page(page.total, [{**result_item(r), "station_name": r["station_name"]} for r in page.items])


def _wide_on_sqlite(db: Database, matched: int | None) -> bool:
    """True on SQLite when the page's filters match more than a twentieth of all results (unary ``+`` then
    keeps SQLite off the node index: measured_at's index gives the newest rows of a wide scope at once)."""
    if db.dialect != "sqlite" or matched is None:
        return False
    everything = int(db.scalar("SELECT COALESCE(SUM(tests), 0) FROM result_totals"))
    return matched * 20 > everything


def _results_total(
    db: Database,
    user: User,
    station: str | None,
    node_path: str | None,
    analyte: str | None,
    product: str | None,
    verdict: str | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """How many results `list_results` matches (no text search): whole days from the daily aggregates
    (cloud.rollup), the partial days at either end from the results."""

    def cond(alias: str) -> tuple[str, list[Any]]:
        sql, params = subtree_sql(f"{alias}.node_id", user.node_path)
        parts, args = [sql], list(params)
        if station is not None:
            parts.append(
                "r.station = ?"
                if alias == "r"
                else "d.node_id IN (SELECT node_id FROM stations WHERE id = ?)"
            )
            args.append(station)
        if node_path is not None:
            sub, sub_params = subtree_sql(f"{alias}.node_id", node_path)
            parts.append(sub)
            args += sub_params
        for column, value in (("analyte", analyte), ("product", product), ("verdict", verdict)):
            if value is not None:
                parts.append(f"{alias}.{column} = ?")
                args.append(value)
        return " AND ".join(f"({p})" for p in parts), args

    items = analyte is not None or product is not None
    return range_counts(db, cond, since, until, items=items)[0]


def count_results(db: Database, user: User) -> int:
    """How many results the user's scope holds: every result is in the all-time totals (cloud.rollup), so no
    pass over the results."""
    where = _Where.scoped(user, "node_id")
    return int(
        db.execute(
            f"SELECT COALESCE(SUM(tests), 0) FROM result_totals WHERE {where.sql}", where.params
        ).fetchone()[0]
    )


def get_result(db: Database, user: User, result_id: str) -> dict[str, Any]:
    where = _Where.scoped(user, "r.node_id")
    where.add("r.id = ?", result_id)
    cur = db.execute(f"SELECT {RESULT_COLUMNS}, r.raw_json FROM results r WHERE {where.sql}", where.params)
    rows = _dicts(cur)
    if not rows:
        raise NotFound(f"result {result_id} not found in your scope")
    item = result_item(rows[0])
    item["raw"] = None if rows[0]["raw_json"] is None else json.loads(rows[0]["raw_json"])
    return item


STATION_COLUMNS = (
    "s.id, g.name, g.code AS node_code, v.code AS village_code, s.enrolled_at, s.last_seen, s.online,"
    " s.backlog, s.oldest_unsent_age_s, s.free_disk_bytes, s.config_version, s.status_at, s.high_seq,"
    " (SELECT COUNT(*) FROM seq_gaps q WHERE q.station = s.id AND q.closed_at IS NULL) AS open_gaps"
)
_STATION_FROM = (
    "stations s JOIN grid_nodes g ON g.id = s.node_id LEFT JOIN grid_nodes v ON v.id = g.parent_id"
)


def _station_item(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["online"] = bool(row["online"])
    return row


def list_stations(
    db: Database,
    user: User,
    *,
    node: str | None = None,
    online: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page:
    where = _Where.scoped(user, "s.node_id")
    if node is not None:
        where.subtree("s.node_id", scoped_node(db, user, node))
    if online is not None:
        where.add("s.online = ?", int(online))
    page = _page(db, STATION_COLUMNS, _STATION_FROM, where, "s.id", limit, offset)
    return Page(page.total, [_station_item(r) for r in page.items])


def get_station(db: Database, user: User, station: str) -> dict[str, Any]:
    where = _Where.scoped(user, "s.node_id")
    where.add("s.id = ?", station)
    rows = _dicts(
        db.execute(
            f"SELECT {STATION_COLUMNS}, s.status_json FROM {_STATION_FROM} WHERE {where.sql}", where.params
        )
    )
    if not rows:
        raise NotFound(f"station {station} not found in your scope")
    item = _station_item(rows[0])
    status = item.pop("status_json")
    item["status"] = None if status is None else json.loads(status)
    return item


CASE_LIST_COLUMNS = (
    "c.id, c.station, c.level, g.code AS node_code, c.status, c.reason, c.result_id, c.product, c.analyte,"
    " c.opened_at, c.deadline, c.assignee, c.closed_at, c.escalations, c.reminded, c.updated_at"
)


def list_cases(
    db: Database,
    user: User,
    *,
    status: str | None = None,
    node: str | None = None,
    station: str | None = None,
    level: str | None = None,
    overdue_at: datetime | None = None,
    assignee: str | None = None,
    unclosed: bool = False,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page:
    """Cases whose station is in scope; `overdue_at`: only unclosed cases whose deadline is before it;
    `assignee`: only cases assigned to that user ('my cases'); `unclosed`: every status but closed; `q`
    searches the case number, station id and name, product, assignee and analyte names."""
    where = _Where.scoped(user, "c.origin_node_id")
    if unclosed:
        where.add("c.status != 'closed'")
    if q:
        _search(
            where,
            q,
            ("CAST(c.id AS TEXT)", "c.station", "o.name", "c.product", "c.assignee"),
            "c.analyte",
        )
    if assignee is not None:
        where.add("c.assignee = ?", assignee)
    if status is not None:
        where.add("c.status = ?", status)
    if node is not None:
        where.subtree("c.origin_node_id", scoped_node(db, user, node))
    if station is not None:
        where.add("c.station = ?", station)
    if level is not None:
        where.add("c.level = ?", level)
    if overdue_at is not None:
        where.add("c.status != 'closed' AND c.deadline < ?", overdue_at.isoformat())
    return _page(
        db,
        CASE_LIST_COLUMNS + ", o.name AS station_name",
        "cases c JOIN grid_nodes g ON g.id = c.node_id JOIN grid_nodes o ON o.id = c.origin_node_id",
        where,
        "c.deadline, c.id",
        limit,
        offset,
    )


def list_gaps(
    db: Database, user: User, *, station: str | None, open_only: bool, limit: int, offset: int
) -> Page:
    where = _Where.scoped(user, "s.node_id")
    if station is not None:
        where.add("q.station = ?", station)
    if open_only:
        where.add("q.closed_at IS NULL")
    return _page(
        db,
        "q.id, q.station, q.first_seq, q.last_seq, q.detected_at, q.closed_at",
        "seq_gaps q JOIN stations s ON s.id = q.station",
        where,
        "q.id DESC",
        limit,
        offset,
    )


def list_dead_letters(
    db: Database, *, station: str | None, reason: str | None, limit: int, offset: int
) -> Page:
    """Admin only (the caller checks): dead letters are not scoped because many have no known station."""
    where = _Where.unscoped()
    if station is not None:
        where.add("station = ?", station)
    if reason is not None:
        where.add("reason LIKE ? ESCAPE '\\'", like_contains(reason))
    return _page(
        db,
        "id, received_at, topic, payload, reason, station, result_id, sha256, stored_sha256",
        "dead_letters",
        where,
        "id DESC",
        limit,
        offset,
    )


def list_configs(db: Database, user: User, *, station: str | None, limit: int, offset: int) -> Page:
    where = _Where.scoped(user, "s.node_id")
    if station is not None:
        where.add("c.station = ?", station)
    page = _page(
        db,
        "c.id, c.station, c.version, c.issued_at, c.issued_by, g.code AS target, c.published_at, c.payload_json",
        "configs c JOIN stations s ON s.id = c.station JOIN grid_nodes g ON g.id = c.target_node_id",
        where,
        "c.id DESC",
        limit,
        offset,
    )
    for item in page.items:
        item["config"] = json.loads(item.pop("payload_json"))
    return page
