"""Read-side queries of the grid for the API, every one restricted to the caller's scope.

Does: a node in API shape (`node_item`: code, level, name and its people), the nested node tree under a node
(`grid_tree`), and the roll-up of a node and each of its children (`rollup`: tests, positives, suspects,
positive rate, open cases, stations and stations online; result counts through
`cloud.rollup.range_counts_by_node`). Without a node: the user's own node, or for an admin every county.
Does not: write anything, or HTTP; paged lists and counts of results, stations, cases, … are in
cloud.queries, the dashboard's overview in cloud.dashboard, reports in cloud.reports.
"""

# ruff: noqa: S608 - SQL text here is assembled only from this module's constants; values are bound.
from __future__ import annotations

from datetime import datetime
from typing import Any

from cloud.auth import User, resolve_scope, scoped_node
from cloud.db import Database
from cloud.grid import Node, subtree
from cloud.rollup import range_counts_by_node
from cloud.sqlfilter import subtree_sql


def node_item(node: Node) -> dict[str, Any]:
    return {
        "code": node.code,
        "level": node.level,
        "name": node.name,
        "people": {
            "grid_head": node.grid_head,
            "information_officer": node.information_officer,
            "co_manager": node.co_manager,
        },
    }


def _roots(db: Database, user: User, code: str | None) -> list[Node]:
    if code is not None:
        return [scoped_node(db, user, code)]
    scope = resolve_scope(db, user, None)
    if scope.is_whole_grid:
        return [n for n in subtree(db, "/") if n.parent_id is None]
    return [scope]


def grid_tree(db: Database, user: User, code: str | None = None) -> list[dict[str, Any]]:
    """Nested nodes under `code` (default: the user's own node; admin: every county)."""
    out: list[dict[str, Any]] = []
    for root in _roots(db, user, code):
        items: dict[int, dict[str, Any]] = {}
        for node in subtree(db, root.path):
            item = {**node_item(node), "children": []}
            items[node.row_id] = item
            if node.id == root.id:
                out.append(item)
            elif node.parent_id in items:
                items[node.parent_id]["children"].append(item)
    return out


def rollup(
    db: Database,
    user: User,
    code: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Tests, positives, suspects, positive rate, open cases and stations online for a node and each child."""
    roots = _roots(db, user, code)
    if code is None and len(roots) != 1:
        # admin without a node: a virtual root whose children are the counties
        parent: dict[str, Any] = {"code": None, "level": "root", "name": "all", "people": None}
        kids = roots
        parent_path = "/"
    else:
        node = roots[0]
        parent = node_item(node)
        parent_path = node.path
        kids = [n for n in subtree(db, node.path) if n.parent_id == node.id]

    def under(alias: str) -> tuple[str, list[Any]]:
        sql, params = subtree_sql(f"{alias}.node_id", parent_path)
        return sql, list(params)

    # one grouped query per source for the node and all its children, summed here by subtree
    paths = {n.id: n.path for n in subtree(db, parent_path)}
    by_node = range_counts_by_node(db, under, since, until)
    csql, cparams = subtree_sql("origin_node_id", parent_path)
    open_by_node = dict(
        db.execute(
            f"SELECT origin_node_id, COUNT(*) FROM cases WHERE status != 'closed' AND {csql} GROUP BY origin_node_id",
            cparams,
        ).fetchall()
    )
    ssql, sparams = subtree_sql("node_id", parent_path)
    stations_by_node = {
        r[0]: (r[1], r[2])
        for r in db.execute(
            f"SELECT node_id, COUNT(*), COALESCE(SUM(online), 0) FROM stations WHERE {ssql} GROUP BY node_id",
            sparams,
        ).fetchall()
    }

    def stats(path: str) -> dict[str, Any]:
        inside = [nid for nid, p in paths.items() if p.startswith(path)]
        tests = sum(by_node[n][0] for n in inside if n in by_node)
        positives = sum(by_node[n][2] for n in inside if n in by_node)
        suspects = sum(by_node[n][3] for n in inside if n in by_node)
        open_cases = sum(int(open_by_node.get(n, 0)) for n in inside)
        stations = sum(int(stations_by_node[n][0]) for n in inside if n in stations_by_node)
        online = sum(int(stations_by_node[n][1]) for n in inside if n in stations_by_node)
        return {
            "tests": tests,
            "positives": positives,
            "suspects": suspects,
            "positive_rate": (positives / tests) if tests else 0.0,
            "open_cases": open_cases,
            "stations": stations,
            "stations_online": online,
        }

    return {
        "node": {**parent, **stats(parent_path)},
        "children": [{**node_item(k), **stats(k.path)} for k in kids],
    }
