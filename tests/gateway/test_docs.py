"""Every station TOML key (including each instrument driver's keys) has a row in docs/config.md, and
every gateway CLI verb and topic is described in the gateway docs."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from gateway.config import GatewayConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models(get_args(annotation)[0])
        return
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in get_args(annotation):
            yield from _models(arg)


def station_keys(model: type[BaseModel] = GatewayConfig, prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key
        for sub in _models(field.annotation):
            yield from station_keys(sub, f"{key}.")


def test_every_station_key_is_documented() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\|\s*`([^`]+)`", text, re.M))
    keys = sorted(set(station_keys()))
    assert "instruments.port" in keys
    assert "instruments.timeouts.response_s" in keys
    missing = [k for k in keys if k not in documented]
    assert not missing, f"station TOML keys without a row in docs/config.md: {missing}"


def test_gateway_guide_mentions_verbs_and_topics() -> None:
    guide = (DOCS / "gateway.md").read_text(encoding="utf-8")
    for verb in ("run", "status", "check-config", "rejected"):
        assert f"kuaijian gateway {verb}" in guide
    for kind in ("result", "ack", "status", "config"):
        assert f"kj/v1/{{station}}/{kind}" in guide
