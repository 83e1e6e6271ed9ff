"""The one place that turns user text and grid paths into SQL ``LIKE`` filters.

Does: escape ``%``, ``_`` and the escape character itself so user text matches literally (`like_prefix`,
`like_contains`, used with ``LIKE ? ESCAPE '\\'``), and build the subtree condition that scopes a query to a
grid node and everything under it (`subtree_sql`, on the materialized ``grid_nodes.path`` "/1/4/9/").

Does not: run queries, or decide who may see what (cloud.auth decides the path; this only writes the SQL).
"""

from __future__ import annotations

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
