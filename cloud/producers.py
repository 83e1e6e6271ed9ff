"""Producers (生产主体): enterprises, cooperatives, family farms, large growers and individuals.

Does: validate a producer's identity — a unified social credit code (统一社会信用代码, GB 32100-2015: 18
characters, check character verified) for organisations, a resident ID number (GB 11643-1999, check digit
verified) for individuals — store producers under their village (upsert by identity code), import them
from CSV or Excel (.xlsx, openpyxl) with a per-row error report (a row is stored whole or not at all), list
them within the caller's scope, and give each station the `ProducerInfo` list of its village for the
retained config push (`station_producers`, `push_producers`).

Does not: HTTP, MQTT (cloud.configs publishes), or samples and batches (cloud.samples).

Import columns (header row required; Chinese or English names): 类型/type (企业, 合作社, 家庭农场, 种养大户,
个人), 名称/name, 代码/code (credit code, or ID number for 个人), 村/village (village grid code),
联系人/contact, 电话/phone, 品种/products and 地块/plots (separated by ";", "；" or "、").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from cloud.auth import User
from cloud.db import Database, transaction
from cloud.errors import CloudError, Forbidden, Invalid, NotFound
from cloud.grid import node_by_code
from cloud.sqlfilter import like_contains, subtree_sql
from kuaijian_schema.wire import ProducerInfo, ProducerKind

KINDS: tuple[str, ...] = get_args(ProducerKind)
EDIT_ROLES = ("admin", "county", "town", "village")

_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_SPLIT = re.compile(r"[;；、,，]")

COLUMNS: dict[str, str] = {
    "类型": "kind",
    "type": "kind",
    "名称": "name",
    "name": "name",
    "代码": "code",
    "统一社会信用代码": "code",
    "code": "code",
    "村": "village",
    "village": "village",
    "联系人": "contact",
    "contact": "contact",
    "电话": "phone",
    "phone": "phone",
    "品种": "products",
    "products": "products",
    "地块": "plots",
    "plots": "plots",
}
REQUIRED = ("kind", "name", "code", "village")


def uscc_check(body: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters of a unified social credit code."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(body, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - total % 31) % 31]


def uscc_valid(code: str) -> bool:
    """True if `code` is a GB 32100-2015 unified social credit code with a correct check character."""
    if len(code) != 18 or any(c not in _USCC_CHARS for c in code):
        return False
    return uscc_check(code[:17]) == code[17]


def id_check(body: str) -> str:
    """The GB 11643-1999 check digit (or X) of the first 17 digits of a citizen ID number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]


def id_number_valid(code: str) -> bool:
    """True if `code` is an 18-character GB 11643-1999 citizen ID number with a correct check digit."""
    if len(code) != 18 or not code[:17].isdigit():
        return False
    return id_check(code[:17]) == code[17]


def check_identity(kind: str, code: str) -> str:
    """The normalised identity code of a producer of `kind`; Invalid with a Chinese-first reason otherwise."""
    code = code.strip().upper()
    if kind == "个人":
        if not id_number_valid(code):
            raise Invalid(
                f"身份证号无效 (invalid ID number: 18 characters, check digit per GB 11643): {code!r}"
            )
    elif not uscc_valid(code):
        raise Invalid(
            "统一社会信用代码无效 (invalid unified social credit code: 18 characters, check character per"
            f" GB 32100-2015): {code!r}"
        )
    return code


def ref_of(producer_id: int) -> str:
    """The public producer reference stations use ("P" + number)."""
    return f"P{producer_id}"


def id_of_ref(ref: str) -> int | None:
    return int(ref[1:]) if re.fullmatch(r"P\d{1,12}", ref) else None


@dataclass(frozen=True)
class ProducerIn:
    kind: str
    name: str
    code: str
    village: str
    contact: str | None = None
    phone: str | None = None
    products: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowError:
    row: int
    """Row number in the file (the header is row 1)."""
    error: str


@dataclass(frozen=True)
class ImportReport:
    created: int
    updated: int
    errors: tuple[RowError, ...]
    villages: tuple[int, ...]
    """Grid node ids of the villages whose producer lists changed (their stations get a config push)."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in _SPLIT.split(value or "") if p.strip())


def upsert(db: Database, user: User, item: ProducerIn, now: datetime) -> tuple[int, int, bool]:
    """Create or update (by identity code) one producer; returns (producer id, village node id, created).

    Raises Forbidden (role), Invalid (kind, name, identity), NotFound (village unknown or out of scope).
    """
    if user.role not in EDIT_ROLES:
        raise Forbidden(
            "只有区县、乡镇、村级用户可以登记生产主体 (only county, town and village users edit producers)"
        )
    if item.kind not in KINDS:
        raise Invalid(f"类型必须是 {'、'.join(KINDS)} 之一 (unknown producer type {item.kind!r})")
    name = item.name.strip()
    if not name or len(name) > 128:
        raise Invalid("名称不能为空 (name is required, at most 128 characters)")
    code = check_identity(item.kind, item.code)
    village = node_by_code(db, item.village.strip())
    if village is None or not user.sees(village.path):
        raise NotFound(f"村 {item.village!r} 不在您的辖区 (village not found in your scope)")
    if village.level != "village":
        raise Invalid(f"{item.village} 不是行政村 (is a {village.level}, not a village)")
    with transaction(db):
        row = db.execute("SELECT id, village_node_id FROM producers WHERE code = ?", [code]).fetchone()
        values = [
            item.kind,
            name,
            village.id,
            (item.contact or "").strip() or None,
            (item.phone or "").strip() or None,
            json.dumps(list(item.products), ensure_ascii=False),
            json.dumps(list(item.plots), ensure_ascii=False),
            now.isoformat(),
        ]
        if row is None:
            cur = db.execute(
                "INSERT INTO producers (kind, name, village_node_id, contact, phone, products_json, plots_json,"
                " updated_at, code, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [*values, code, now.isoformat()],
            )
            return int(cur.fetchone()[0]), village.row_id, True
        old_village = db.execute("SELECT path FROM grid_nodes WHERE id = ?", [row[1]]).fetchone()
        if old_village is None or not user.sees(str(old_village[0])):
            raise NotFound(
                "该生产主体属于您辖区以外的村 (this producer belongs to a village outside your scope)"
            )
        db.execute(
            "UPDATE producers SET kind = ?, name = ?, village_node_id = ?, contact = ?, phone = ?,"
            " products_json = ?, plots_json = ?, updated_at = ? WHERE id = ?",
            [*values, row[0]],
        )
        return int(row[0]), village.row_id, False


def parse_table(data: bytes, filename: str) -> list[tuple[int, dict[str, str]]]:
    """(row number, {field: text}) of a CSV (UTF-8, optional BOM) or .xlsx file; Invalid if unreadable."""
    rows: list[list[str]]
    if filename.lower().endswith(".xlsx") or data[:2] == b"PK":
        rows = _xlsx_rows(data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise Invalid(f"文件不是 UTF-8 编码的 CSV (not a UTF-8 CSV file): {exc}") from exc
        rows = [list(r) for r in csv.reader(io.StringIO(text))]
    if not rows:
        raise Invalid("文件为空 (the file is empty)")
    header = [COLUMNS.get(h.strip().lower() if h.strip().isascii() else h.strip(), "") for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise Invalid(f"缺少列 (missing columns): {', '.join(missing)}")
    out: list[tuple[int, dict[str, str]]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        out.append((number, {k: v.strip() for k, v in zip(header, row, strict=False) if k}))
    return out


def _xlsx_rows(data: bytes) -> list[list[str]]:
    from openpyxl import load_workbook  # imported here: only Excel imports need it

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise Invalid(f"无法读取 Excel 文件 (cannot read the .xlsx file): {exc}") from exc
    try:
        sheet = book.worksheets[0]
        return [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def import_rows(
    db: Database, user: User, rows: Iterable[tuple[int, dict[str, str]]], now: datetime
) -> ImportReport:
    """Store every valid row (each in its own transaction); report every invalid one with its row number."""
    created = updated = 0
    errors: list[RowError] = []
    villages: set[int] = set()
    for number, row in rows:
        item = ProducerIn(
            kind=row.get("kind", ""),
            name=row.get("name", ""),
            code=row.get("code", ""),
            village=row.get("village", ""),
            contact=row.get("contact") or None,
            phone=row.get("phone") or None,
            products=_split(row.get("products")),
            plots=_split(row.get("plots")),
        )
        try:
            _, village_id, was_created = upsert(db, user, item, now)
        except Forbidden:
            raise
        except CloudError as exc:
            errors.append(RowError(number, str(exc)))
            continue
        villages.add(village_id)
        if was_created:
            created += 1
        else:
            updated += 1
    return ImportReport(created, updated, tuple(errors), tuple(sorted(villages)))


_SELECT = (
    "SELECT p.id, p.kind, p.name, p.code, g.code AS village, g.name AS village_name, p.contact, p.phone,"
    " p.products_json, p.plots_json, p.created_at, p.updated_at,"
    " (SELECT COUNT(*) FROM samples s WHERE s.producer_id = p.id) AS samples,"
    " (SELECT COUNT(*) FROM samples s WHERE s.producer_id = p.id AND s.code = s.root_code"
    " AND s.status = 'held') AS held_batches FROM producers p"
    " JOIN grid_nodes g ON g.id = p.village_node_id"
)


def _item(row: dict[str, Any], *, reveal_id: bool) -> dict[str, Any]:
    code = str(row["code"])
    if row["kind"] == "个人" and not reveal_id:
        code = code[:4] + "*" * 10 + code[-4:]
    return {
        "ref": ref_of(int(row["id"])),
        "id": int(row["id"]),
        "kind": row["kind"],
        "name": row["name"],
        "code": code,
        "village": row["village"],
        "village_name": row["village_name"],
        "contact": row["contact"],
        "phone": row["phone"],
        "products": json.loads(row["products_json"]),
        "plots": json.loads(row["plots_json"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "samples": int(row["samples"]),
        "held_batches": int(row["held_batches"]),
    }


def scope_path(user: User) -> str:
    """Grid path whose producers `user` sees: its subtree; a station sees the producers of its village."""
    if user.role == "station":
        return user.node_path[: user.node_path.rstrip("/").rindex("/") + 1]
    return user.node_path


def list_producers(
    db: Database,
    user: User,
    *,
    village: str | None = None,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of the producers in the caller's scope; individuals' ID numbers are masked."""
    clause, params = subtree_sql("p.village_node_id", scope_path(user))
    where, args = [clause], list(params)
    if village:
        node = node_by_code(db, village)
        if node is None or not node.path.startswith(scope_path(user)):
            raise NotFound(f"村 {village} 不在您的辖区 (village not found in your scope)")
        sub, sub_params = subtree_sql("p.village_node_id", node.path)
        where.append(sub)
        args.extend(sub_params)
    if q:
        where.append("(p.name LIKE ? ESCAPE '\\' OR p.code LIKE ? ESCAPE '\\')")
        args.extend([like_contains(q), like_contains(q.upper())])
    sql_where = " AND ".join(f"({w})" for w in where)
    total = int(db.execute(f"SELECT COUNT(*) FROM producers p WHERE {sql_where}", args).fetchone()[0])  # noqa: S608
    cur = db.execute(f"{_SELECT} WHERE {sql_where} ORDER BY p.id LIMIT ? OFFSET ?", [*args, limit, offset])
    names = [d[0] for d in cur.description]
    return total, [_item(dict(zip(names, r, strict=True)), reveal_id=False) for r in cur.fetchall()]


def get_producer(db: Database, user: User, ref: str) -> dict[str, Any]:
    """One producer in scope by reference ("P12"); NotFound otherwise."""
    pid = id_of_ref(ref)
    cur = db.execute(f"{_SELECT} WHERE p.id = ?", [pid])
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"生产主体 {ref} 不存在 (producer not found)")
    item = dict(zip([d[0] for d in cur.description], row, strict=True))
    path = db.execute(
        "SELECT g.path FROM producers p JOIN grid_nodes g ON g.id = p.village_node_id WHERE p.id = ?", [pid]
    ).fetchone()[0]
    if not str(path).startswith(scope_path(user)):
        raise NotFound(f"生产主体 {ref} 不存在 (producer not found)")
    return _item(item, reveal_id=False)


def station_producers(db: Database, station: str) -> tuple[ProducerInfo, ...]:
    """The producers of a station's village, as pushed to it."""
    rows = db.execute(
        "SELECT p.id, p.kind, p.name, g.code, p.contact, p.products_json, p.plots_json FROM producers p"
        " JOIN grid_nodes g ON g.id = p.village_node_id"
        " JOIN grid_nodes s ON s.parent_id = g.id JOIN stations st ON st.node_id = s.id"
        " WHERE st.id = ? ORDER BY p.id",
        [station],
    ).fetchall()
    return tuple(
        ProducerInfo(
            ref=ref_of(int(r[0])),
            kind=r[1],
            name=r[2],
            village=r[3],
            contact=r[4],
            products=tuple(json.loads(r[5])),
            plots=tuple(json.loads(r[6])),
        )
        for r in rows
    )


def stations_of_villages(db: Database, village_ids: Sequence[int]) -> list[str]:
    if not village_ids:
        return []
    marks = ",".join("?" * len(village_ids))
    sql = (
        f"SELECT st.id FROM stations st JOIN grid_nodes s ON s.id = st.node_id WHERE s.parent_id IN ({marks})"  # noqa: S608 - placeholders only
    )
    return [
        str(r[0])
        for r in db.execute(
            sql + " ORDER BY st.id",
            list(village_ids),
        ).fetchall()
    ]
