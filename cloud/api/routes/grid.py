"""Grid: GET /api/grid/tree, GET /api/grid/nodes/{code}, GET /api/grid/rollup (tests, positives, rate)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from cloud import grid_queries
from cloud.api.deps import CurrentUserDep, DbDep
from cloud.api.models import NodeOut, Rollup, TreeNode
from cloud.auth import scoped_node

router = APIRouter(prefix="/api/grid", tags=["grid"])

NodeCode = Annotated[
    str | None,
    Query(max_length=64, description="grid node code (default: your own node; admin: all counties)"),
]


@router.get("/tree")
def tree(db: DbDep, user: CurrentUserDep, node: NodeCode = None) -> list[TreeNode]:
    return [TreeNode.model_validate(n) for n in grid_queries.grid_tree(db, user, node)]


@router.get("/nodes/{code}")
def get_node(db: DbDep, user: CurrentUserDep, code: str) -> NodeOut:
    return NodeOut.model_validate(grid_queries.node_item(scoped_node(db, user, code)))


@router.get("/rollup")
def rollup(
    db: DbDep,
    user: CurrentUserDep,
    node: NodeCode = None,
    since: Annotated[AwareDatetime | None, Query(description="measured_at ≥ since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="measured_at < until")] = None,
) -> Rollup:
    """Roll-up of a node and each of its children: tests, positives, suspects, positive rate, open cases."""
    return Rollup.model_validate(grid_queries.rollup(db, user, node, since=since, until=until))
