"""Shared list-endpoint parameters: `PageParams` (limit/offset) as an Annotated dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from cloud.api.deps import SettingsDep


@dataclass(frozen=True)
class PageArgs:
    limit: int
    offset: int


def page_args(
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="page size (capped by max_page_size)")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="rows to skip")] = 0,
) -> PageArgs:
    return PageArgs(limit=min(limit, settings.max_page_size), offset=offset)


PageDep = Annotated[PageArgs, Depends(page_args)]
