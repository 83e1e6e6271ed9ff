"""The one place that turns user text and grid paths into SQL ``LIKE`` filters.

Does: escape ``%``, ``_`` and the escape character itself so user text matches literally (`like_prefix`,
`like_contains`, used with ``LIKE ? ESCAPE '\\'``), and build the subtree condition that scopes a query to a
grid node and everything under it (`subtree_sql`, on the materialized ``grid_nodes.path`` "/1/4/9/").

The few spots where the two engines' SQL differs are here too: the local calendar day/month of a stored UTC
timestamp (`local_time_sql`), the minutes between two timestamps (`minutes_between_sql`).

Does not: run queries, or decide who may see what (cloud.auth decides the path; this only writes the SQL).
"""

from __future__ import annotations

from typing import Literal

LocalUnit = Literal["day", "month"]

ESCAPE = "\\"
"""The LIKE escape character; every pattern here is meant for ``LIKE ? ESCAPE '\\'``."""


def like_escape(text: str) -> str:
    """`text` with LIKE's wildcards (``%``, ``_``) and the escape character escaped: it matches itself only."""
    return text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")


def like_prefix(text: str) -> str:
    """A LIKE pattern matching every string that starts with `text` (taken literally)."""
    return like_escape(text) + "%"


def like_contains(text: str) -> str:
    """A LIKE pattern matching every string that contains `text` (taken literally)."""
    return "%" + like_escape(text) + "%"


def subtree_sql(column: str, path: str) -> tuple[str, list[object]]:
    """SQL condition keeping rows whose grid-node id `column` lies in the subtree of materialized `path`
    ("/" = the whole grid). `column` is ours (never user input); the path is a bound parameter."""
    if path == "/":
        return "1=1", []
    return (
        f"{column} IN (SELECT id FROM grid_nodes WHERE path LIKE ? ESCAPE '\\')",  # noqa: S608 - column is ours
        [like_prefix(path)],
    )


_SQLITE_FORMAT: dict[LocalUnit, str] = {"day": "%Y-%m-%d", "month": "%Y-%m"}
_PG_FORMAT: dict[LocalUnit, str] = {"day": "YYYY-MM-DD", "month": "YYYY-MM"}


def local_time_sql(dialect: str, column: str, unit: LocalUnit) -> str:
    """SQL giving the local day ("2026-11-02") or month ("2026-11") of the UTC timestamp text in `column`; it
    takes one bound parameter, the UTC offset as "+480 minutes". ``substr(…, 1, 19)`` drops fractions and the
    +00:00 suffix (every stored value is UTC), so rounding can never push a result into the next day."""
    if dialect == "postgresql":
        return (
            f"to_char(CAST(substr({column}, 1, 19) AS timestamp) + CAST(? AS interval), '{_PG_FORMAT[unit]}')"
        )
    return f"strftime('{_SQLITE_FORMAT[unit]}', substr({column}, 1, 19), ?)"


def minutes_between_sql(dialect: str, start: str, end: str) -> str:
    """SQL giving the minutes from timestamp text `start` to `end` (both columns; ISO-8601 with offset)."""
    if dialect == "postgresql":
        return f"(EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz))) / 60.0)"
    return f"((julianday({end}) - julianday({start})) * 1440.0)"
