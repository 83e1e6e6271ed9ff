"""Sampling tasks (抽检任务): the county or town sets how many samples of which products and analytes a station
(or a village / town) must test in a period; progress fills in from registered, measured samples.

Does: create tasks (`create_task`, county/town/admin users, inside their subtree), generate them from the risk
view (`generate_from_risk`: the highest-risk analyte × product cells of each place become that place's task),
list them with progress (`list_tasks`: tasks on nodes in the user's subtree and on the user's ancestors — a
station sees the tasks set for its town), cancel them, and give each station its active tasks for the
retained config (`station_tasks`).

Progress of a task = registered samples (抽样登记) on stations under the task's node, registered within the
task's local days [start, due], whose product is one of the task's products (any, if none given) and that have
at least one valid (not invalid) result of one of the task's analytes (any, if none given). Unregistered
measurements do not count: the task asks for samples whose producer and batch are known.

Does not: HTTP, or push configs itself (the route calls cloud.configs.push_tasks after a change).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cloud import risk_feed
from cloud.auth import User, scoped_node
from cloud.db import Database, transaction
from cloud.errors import Forbidden, Invalid, NotFound
from cloud.sqlfilter import subtree_sql
from kuaijian_schema.labels import zh
from kuaijian_schema.wire import TaskInfo

SET_ROLES = ("admin", "county", "town")
TASK_LEVELS = ("town", "village", "station")
MAX_TARGET = 100_000


def _bounds(start: date, due: date, tz: ZoneInfo) -> tuple[str, str]:
    lo = datetime.combine(start, time(), tz).astimezone(UTC).isoformat()
    hi = datetime.combine(due + timedelta(days=1), time(), tz).astimezone(UTC).isoformat()
    return lo, hi


def _clean_list(values: list[str] | None, what: str) -> list[str]:
    out = sorted({v.strip() for v in values or [] if v and v.strip()})
    if any(len(v) > 64 for v in out):
        raise Invalid(f"{what} names are at most 64 characters")
    return out


def create_task(
    db: Database,
    user: User,
    now: datetime,
    *,
    node: str,
    title: str,
    start: date,
    due: date,
    target: int,
    products: list[str] | None = None,
    analytes: list[str] | None = None,
    note: str | None = None,
    source: str = "manual",
) -> dict[str, Any]:
    """Create one task on grid node `node` (a town, village or station in the user's subtree)."""
    if user.role not in SET_ROLES:
        raise Forbidden("only county and town users (and admins) set sampling tasks")
    if not title.strip():
        raise Invalid("a task needs a title")
    if due < start:
        raise Invalid("the due date is before the start date")
    if not 1 <= target <= MAX_TARGET:
        raise Invalid(f"target must be between 1 and {MAX_TARGET}")
    target_node = scoped_node(db, user, node)
    if target_node.level not in TASK_LEVELS:
        raise Invalid(f"tasks are set on a town, village or station, not a {target_node.level}")
    with transaction(db):
        cur = db.execute(
            """INSERT INTO tasks (node_id, title, start_date, due_date, target, products_json, analytes_json,
                   note, source, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [
                target_node.id,
                title.strip()[:200],
                start.isoformat(),
                due.isoformat(),
                target,
                json.dumps(_clean_list(products, "product"), ensure_ascii=False),
                json.dumps(_clean_list(analytes, "analyte"), ensure_ascii=False),
                note,
                source,
                user.name,
                now.isoformat(),
            ],
        )
        task_id = int(cur.fetchone()[0])
    return get_task(db, user, task_id)


def cancel_task(db: Database, user: User, task_id: int, now: datetime) -> dict[str, Any]:
    if user.role not in SET_ROLES:
        raise Forbidden("only county and town users (and admins) cancel sampling tasks")
    task = get_task(db, user, task_id)
    if not user.sees(task["node_path"]):
        raise Forbidden("a task set above your level cannot be cancelled here")
    with transaction(db):
        db.execute(
            "UPDATE tasks SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL",
            [now.isoformat(), task_id],
        )
    return get_task(db, user, task_id)


def _progress(db: Database, row: dict[str, Any], tz: ZoneInfo) -> int:
    lo, hi = _bounds(date.fromisoformat(row["start_date"]), date.fromisoformat(row["due_date"]), tz)
    where, params = subtree_sql("s.node_id", row["node_path"])
    clauses = [where, "s.registered_at >= ?", "s.registered_at < ?"]
    params += [lo, hi]
    products = json.loads(row["products_json"])
    analytes = json.loads(row["analytes_json"])
    if products:
        clauses.append(f"s.product IN ({', '.join('?' for _ in products)})")
        params += products
    analyte_sql = ""
    if analytes:
        analyte_sql = f" AND r.analyte IN ({', '.join('?' for _ in analytes)})"
        params += analytes
    sql = f"""SELECT COUNT(*) FROM samples s WHERE {" AND ".join(clauses)} AND EXISTS (
                  SELECT 1 FROM results r WHERE r.station = s.station AND r.sample_id = s.code
                  AND r.verdict != 'invalid'{analyte_sql})"""  # noqa: S608 - placeholders only
    return int(db.execute(sql, params).fetchone()[0])


def _item(db: Database, row: dict[str, Any], now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    done = _progress(db, row, tz)
    today = now.astimezone(tz).date()
    due = date.fromisoformat(row["due_date"])
    if row["cancelled_at"]:
        state = "cancelled"
    elif done >= row["target"]:
        state = "done"
    elif today > due:
        state = "overdue"
    elif today < date.fromisoformat(row["start_date"]):
        state = "planned"
    else:
        state = "active"
    item = {k: v for k, v in row.items() if not k.endswith("_json")}
    item["products"] = json.loads(row["products_json"])
    item["analytes"] = json.loads(row["analytes_json"])
    item["done"] = done
    item["completion"] = round(min(done, row["target"]) / row["target"], 4)
    item["state"] = state
    return item


_SELECT = """SELECT t.id, t.node_id, g.code AS node_code, g.name AS node_name, g.level AS node_level,
                    g.path AS node_path, t.title, t.start_date, t.due_date, t.target, t.products_json,
                    t.analytes_json, t.note, t.source, t.created_by, t.created_at, t.cancelled_at
             FROM tasks t JOIN grid_nodes g ON g.id = t.node_id"""


def _rows(db: Database, where: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = db.execute(f"{_SELECT} WHERE {where} ORDER BY t.due_date, t.id", params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _visible_where(user: User) -> tuple[str, list[Any]]:
    """Tasks on nodes in the user's subtree, and on the user's own ancestors (set for them from above)."""
    if user.is_admin:
        return "1=1", []
    ancestors = [int(p) for p in user.node_path.strip("/").split("/") if p]
    sub, params = subtree_sql("t.node_id", user.node_path)
    marks = ", ".join("?" for _ in ancestors) or "NULL"
    return f"({sub} OR t.node_id IN ({marks}))", [*params, *ancestors]


def get_task(
    db: Database,
    user: User,
    task_id: int,
    now: datetime | None = None,
    tz: ZoneInfo | None = None,
) -> dict[str, Any]:
    where, params = _visible_where(user)
    rows = _rows(db, f"t.id = ? AND {where}", [task_id, *params])
    if not rows:
        raise NotFound(f"task {task_id} not found in your scope")
    return _item(db, rows[0], now or datetime.now(UTC), tz or ZoneInfo("Asia/Shanghai"))


def task_by_id(db: Database, task_id: int, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """A task with its progress, unscoped (for assessment; callers have scoped the unit already)."""
    rows = _rows(db, "t.id = ?", [task_id])
    if not rows:
        raise NotFound(f"task {task_id} not found")
    return _item(db, rows[0], now, tz)


def list_tasks(
    db: Database,
    user: User,
    now: datetime,
    tz: ZoneInfo,
    *,
    node: str | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """Tasks the user sees (optionally only those on `node` and below), with progress and state."""
    where, params = _visible_where(user)
    clauses = [where]
    if node is not None:
        row = db.execute("SELECT path FROM grid_nodes WHERE code = ?", [node]).fetchone()
        if row is None or not (user.sees(str(row[0])) or user.node_path.startswith(str(row[0]))):
            raise NotFound(f"grid node {node!r} not found in your scope")
        sub, extra = subtree_sql("t.node_id", str(row[0]))
        clauses.append(sub)
        params += extra
    items = [_item(db, r, now, tz) for r in _rows(db, " AND ".join(clauses), params)]
    if state is not None:
        items = [i for i in items if i["state"] == state]
    return items


def station_tasks(db: Database, station: str, today: date) -> tuple[TaskInfo, ...]:
    """Active and planned tasks a station works on (set on it or on one of its ancestors), for its config."""
    row = db.execute(
        "SELECT g.path FROM stations s JOIN grid_nodes g ON g.id = s.node_id WHERE s.id = ?", [station]
    ).fetchone()
    if row is None:
        return ()
    ids = [int(p) for p in str(row[0]).strip("/").split("/") if p]
    marks = ", ".join("?" for _ in ids)
    rows = db.execute(
        f"""SELECT t.id, t.title, t.start_date, t.due_date, t.target, t.products_json, t.analytes_json,
                   g.level, g.name
            FROM tasks t JOIN grid_nodes g ON g.id = t.node_id
            WHERE t.node_id IN ({marks}) AND t.cancelled_at IS NULL AND t.due_date >= ?
            ORDER BY t.due_date, t.id""",  # noqa: S608 - placeholders only
        [*ids, today.isoformat()],
    ).fetchall()
    return tuple(
        TaskInfo(
            id=int(r[0]),
            title=str(r[1]),
            start=date.fromisoformat(r[2]),
            due=date.fromisoformat(r[3]),
            target=int(r[4]),
            products=tuple(json.loads(r[5])),
            analytes=tuple(json.loads(r[6])),
            unit=f"{r[8]}",
            shared=r[7] != "station",
        )
        for r in rows
    )


def stations_under(db: Database, node_path: str) -> list[str]:
    where, params = subtree_sql("s.node_id", node_path)
    return [str(r[0]) for r in db.execute(f"SELECT s.id FROM stations s WHERE {where} ORDER BY s.id", params)]  # noqa: S608


def generate_from_risk(
    db: Database,
    user: User,
    now: datetime,
    *,
    start: date,
    due: date,
    per_place: int,
    places: int = 5,
    cells_per_place: int = 3,
    days: int = 90,
) -> list[dict[str, Any]]:
    """One task per place among the `places` highest-risk places of the risk view: its top cells' products
    and analytes, `per_place` samples, titled after them. Returns the created tasks."""
    ranked = risk_feed.priorities(db, user, now, days=days, limit=10_000)
    chosen: dict[str, list[risk_feed.Priority]] = {}
    for cell in ranked:
        group = (
            chosen.setdefault(cell.place_code, [])
            if (cell.place_code in chosen or len(chosen) < places)
            else None
        )
        if group is not None and len(group) < cells_per_place:
            group.append(cell)
    if not chosen:
        raise Invalid("no results in your scope over the risk window: nothing to plan from")
    created = []
    for code, cells in chosen.items():
        pairs = "、".join(f"{c.product}·{zh(c.analyte)}" for c in cells)
        created.append(
            create_task(
                db,
                user,
                now,
                node=code,
                title=f"风险导向抽检：{pairs}",
                start=start,
                due=due,
                target=per_place,
                products=[c.product for c in cells],
                analytes=[c.analyte for c in cells],
                note=f"由风险视图生成（近 {days} 天估计阳性率最高的品种 × 项目）",
                source="risk",
            )
        )
    return created
