"""The grid: county/district → town → village → station nodes with their responsible people.

Does: the one grid-node type (`Node`; `WHOLE_GRID` stands for everything, the scope of an admin or an
operator), look nodes up (by code or id, children, subtree, ancestors), import/update them from CSV
(`import_grid_csv`), create station nodes, and maintain each node's materialized `path` ("/1/4/9/"). A node
scopes a query to itself and everything under it through `cloud.sqlfilter.subtree_sql(column, node.path)`,
the one function that writes that condition.

CSV columns (header row required, UTF-8, optional BOM; extra columns are ignored):
    level                county | town | village | station
    code                 unique code (administrative division code; stations: village code + "-NN")
    name                 display name
    parent_code          code of the parent (empty for a county; town → county, village → town,
                         station → village)
    grid_head            网格长 (free text, e.g. "王强 13800000000"), optional
    information_officer  信息员, optional
    co_manager           协管员, optional
    lat, lon             WGS-84 latitude / longitude in degrees, optional (the dashboard's offline map; a
                         station without them is drawn at its village's or town's point)
Rows may come in any order; re-importing updates names, people and parents (moving a subtree).

Does not: enrol stations' credentials (cloud.enrol) or authorise anything (cloud.auth resolves the node a
user may see).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.db import Database, transaction
from cloud.errors import GridImportError, Invalid, NotFound
from cloud.settings import LEVELS
from cloud.sqlfilter import subtree_sql

PARENT_LEVEL: dict[str, str | None] = {
    "county": None,
    "town": "county",
    "village": "town",
    "station": "village",
}
CHILD_LEVEL: dict[str, str | None] = {
    "county": "town",
    "town": "village",
    "village": "station",
    "station": None,
}
PEOPLE = ("grid_head", "information_officer", "co_manager")
CSV_COLUMNS = ("level", "code", "name", "parent_code", *PEOPLE)
STATION_RE = re.compile(r"^\d{12}-\d{2}$")
_SELECT = "SELECT id, level, code, name, parent_id, path, grid_head, information_officer, co_manager"


class Node(BaseModel):
    """A grid node, or the whole grid (`WHOLE_GRID`: no id or code, level "all", path "/"): what a query,
    a report or the dashboard covers — the node and everything under it.

    Serialized (report JSON, API models) it names the node only (id, code, name, level, path): its parent
    and its people are left out."""

    model_config = ConfigDict(frozen=True)

    id: int | None
    code: str | None
    name: str
    level: str
    path: str
    parent_id: int | None = Field(default=None, exclude=True)
    grid_head: str | None = Field(default=None, exclude=True)
    information_officer: str | None = Field(default=None, exclude=True)
    co_manager: str | None = Field(default=None, exclude=True)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Node:
        """A node from a `_SELECT` row."""
        return cls(
            id=row[0],
            level=row[1],
            code=row[2],
            name=row[3],
            parent_id=row[4],
            path=row[5],
            grid_head=row[6],
            information_officer=row[7],
            co_manager=row[8],
        )

    @property
    def is_whole_grid(self) -> bool:
        return self.id is None

    @property
    def row_id(self) -> int:
        """The grid_nodes.id of a stored node. Raises NotFound for the whole grid, which is no row."""
        if self.id is None:
            raise NotFound("the whole grid is not a grid node")
        return self.id


WHOLE_GRID = Node(id=None, code=None, name="全部", level="all", path="/")
"""Everything: the scope of an admin, of an operator at the CLI, and of tables no grid node owns."""


@dataclass(frozen=True)
class ImportReport:
    created: int
    updated: int


def node_by_code(db: Database, code: str) -> Node | None:
    row = db.execute(_SELECT + " FROM grid_nodes WHERE code = ?", [code]).fetchone()
    return None if row is None else Node.from_row(row)


def node_by_id(db: Database, node_id: int) -> Node | None:
    row = db.execute(_SELECT + " FROM grid_nodes WHERE id = ?", [node_id]).fetchone()
    return None if row is None else Node.from_row(row)


def children(db: Database, node_id: int | None) -> list[Node]:
    """The nodes just below `node_id`, by code; None (the whole grid): the counties."""
    if node_id is None:
        rows = db.execute(_SELECT + " FROM grid_nodes WHERE parent_id IS NULL ORDER BY code")
    else:
        rows = db.execute(_SELECT + " FROM grid_nodes WHERE parent_id = ? ORDER BY code", [node_id])
    return [Node.from_row(r) for r in rows.fetchall()]


def subtree(db: Database, path: str) -> list[Node]:
    """All nodes whose path starts with `path` ("/" = everything), parents before children."""
    clause, params = subtree_sql("id", path)
    rows = db.execute(
        _SELECT + f" FROM grid_nodes WHERE {clause} ORDER BY length(path), code", params
    ).fetchall()
    return [Node.from_row(r) for r in rows]


def ancestors(db: Database, node: Node) -> list[Node]:
    """The nodes from the root down to `node` (inclusive); [WHOLE_GRID] for the whole grid."""
    if node.is_whole_grid:
        return [WHOLE_GRID]
    ids = [int(p) for p in node.path.strip("/").split("/") if p]
    marks = ",".join("?" for _ in ids)
    rows = db.execute(_SELECT + f" FROM grid_nodes WHERE id IN ({marks})", ids).fetchall()
    by_id = {int(r[0]): Node.from_row(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


def node_or_whole_grid(db: Database, code: str | None) -> Node:
    """Unscoped lookup for operators (CLI): the node with `code`, or the whole grid when there is none.
    Raises NotFound for an unknown code."""
    if not code:
        return WHOLE_GRID
    node = node_by_code(db, code)
    if node is None:
        raise NotFound(f"grid node {code!r} not found")
    return node


def upsert_node(
    db: Database,
    level: str,
    code: str,
    name: str,
    parent_code: str | None,
    people: dict[str, str | None] | None = None,
) -> tuple[Node, bool]:
    """Create or update one node; returns (node, created). Raises Invalid / NotFound."""
    if level not in LEVELS:
        raise Invalid(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    if not code or not name:
        raise Invalid("code and name are required")
    if level == "station" and not STATION_RE.match(code):
        raise Invalid(f"station code {code!r} must be a 12-digit village code + '-' + 2 digits")
    want_parent = PARENT_LEVEL[level]
    parent: Node | None = None
    if want_parent is None:
        if parent_code:
            raise Invalid(f"a county has no parent (got {parent_code!r})")
    else:
        if not parent_code:
            raise Invalid(f"a {level} needs a parent {want_parent}")
        parent = node_by_code(db, parent_code)
        if parent is None:
            raise NotFound(f"parent {parent_code!r} not found")
        if parent.level != want_parent:
            raise Invalid(f"parent of a {level} must be a {want_parent}, {parent_code} is a {parent.level}")
    if level == "station" and parent is not None and not code.startswith(f"{parent.code}-"):
        raise Invalid(f"station {code} does not belong to village {parent.code}")
    ppl = {k: (people or {}).get(k) or None for k in PEOPLE}
    with transaction(db):
        existing = node_by_code(db, code)
        if existing is None:
            cur = db.execute(
                "INSERT INTO grid_nodes (level, code, name, parent_id, path, grid_head, information_officer,"
                " co_manager) VALUES (?, ?, ?, ?, '', ?, ?, ?) RETURNING id",
                [level, code, name, None if parent is None else parent.id, *ppl.values()],
            )
            node_id = int(cur.fetchone()[0])
            path = (parent.path if parent else "/") + f"{node_id}/"
            db.execute("UPDATE grid_nodes SET path = ? WHERE id = ?", [path, node_id])
            created = True
        else:
            if existing.level != level:
                raise Invalid(f"{code} is a {existing.level}; cannot change it to a {level}")
            node_id = existing.row_id
            path = (parent.path if parent else "/") + f"{node_id}/"
            if parent is not None and parent.path.startswith(existing.path):
                raise Invalid(f"moving {code} under {parent.code} would make a cycle")
            db.execute(
                "UPDATE grid_nodes SET name = ?, parent_id = ?, grid_head = ?, information_officer = ?,"
                " co_manager = ? WHERE id = ?",
                [name, None if parent is None else parent.id, *ppl.values(), node_id],
            )
            if path != existing.path:  # moved: re-root the whole subtree
                db.execute(
                    "UPDATE grid_nodes SET path = ? || substr(path, ?) WHERE substr(path, 1, ?) = ?",
                    [path, len(existing.path) + 1, len(existing.path), existing.path],
                )
            created = False
    node = node_by_id(db, node_id)
    if node is None:  # pragma: no cover - inserted above in this transaction
        raise NotFound(code)
    return node, created


def _set_point(db: Database, code: str, lat_text: str, lon_text: str) -> None:
    """Store a node's coordinates from CSV text (both empty: keep what is stored). Raises Invalid."""
    if not lat_text and not lon_text:
        return
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError as exc:
        raise Invalid("lat and lon must both be numbers (degrees)") from exc
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise Invalid("lat must be within ±90 and lon within ±180 degrees")
    db.execute("UPDATE grid_nodes SET lat = ?, lon = ? WHERE code = ?", [lat, lon, code])


def import_grid_csv(db: Database, text: str) -> ImportReport:
    """Import grid rows (see module docstring) in one transaction: all rows or none."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("level", "code", "name", "parent_code") if c not in header]
    if missing:
        raise GridImportError(1, f"missing column(s): {', '.join(missing)}")
    rows: list[tuple[int, dict[str, str]]] = []
    for line_no, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
        if not any(row.values()):
            continue
        if row.get("level") not in LEVELS:
            raise GridImportError(line_no, f"level must be one of {', '.join(LEVELS)}")
        rows.append((line_no, row))
    rows.sort(key=lambda item: LEVELS.index(item[1]["level"]))  # parents before children
    created = updated = 0
    with transaction(db):
        for line_no, row in rows:
            try:
                _, was_created = upsert_node(
                    db,
                    row["level"],
                    row.get("code", ""),
                    row.get("name", ""),
                    row.get("parent_code") or None,
                    {k: row.get(k) for k in PEOPLE},
                )
                _set_point(db, row.get("code", ""), row.get("lat", ""), row.get("lon", ""))
            except (Invalid, NotFound) as exc:
                raise GridImportError(line_no, str(exc)) from exc
            created += was_created
            updated += not was_created
    return ImportReport(created=created, updated=updated)
