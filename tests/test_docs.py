"""Public surfaces are documented: a test fails when a CLI verb, an MQTT topic or a config key has no docs."""

from __future__ import annotations

import argparse
import importlib
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from kuaijian.cli import build_parser
from kuaijian_schema.wire import TopicKind

DOCS = Path(__file__).resolve().parent.parent / "docs"

# (module, model, prefix) of every configuration model whose keys users set (TOML files, env, pushed
# config); docs/config.md must have a table row for each dotted key, written `prefix + key`.
CONFIG_MODELS: list[tuple[str, str, str]] = [
    ("kuaijian_schema.wire", "StationConfig", "config."),
    ("cloud.settings", "Settings", "cloud."),
    ("gateway.config", "GatewayConfig", ""),  # the station TOML (every instrument driver's keys too)
]


def _verbs(parser: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}"
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                if nested:
                    yield from _verbs(sub, path)
                else:
                    yield path


def test_every_cli_verb_is_documented() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = {m.group(1).strip() for m in re.finditer(r"^##+ `?(kuaijian [^`\n]*?)`?\s*$", text, re.M)}
    verbs = list(_verbs(build_parser(), "kuaijian"))
    assert verbs, "the CLI has no verbs?"
    missing = [v for v in verbs if not any(h == v or h.startswith(v + " ") for h in headings)]
    assert not missing, f"CLI verbs without a '## {{verb}}' section in docs/cli.md: {missing}"


def test_every_topic_is_documented() -> None:
    mqtt_md = (DOCS / "mqtt.md").read_text(encoding="utf-8")
    asyncapi = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    addresses = {ch["address"] for ch in asyncapi["channels"].values()}
    for kind in get_args(TopicKind):
        t = f"kj/v1/{{station}}/{kind}"
        assert f"`{t}`" in mqtt_md, f"topic {t} is not documented in docs/mqtt.md"
        assert t in addresses, f"topic {t} is missing from docs/asyncapi.yaml"


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models inside an annotation (through Optional, unions, tuples and Annotated)."""
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


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted keys of `model`; a list/union of models contributes the keys of each member."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        yield key
        for sub in _models(field.annotation):
            yield from _keys(sub, f"{key}.")


@pytest.mark.parametrize(("module", "model", "prefix"), CONFIG_MODELS)
def test_every_config_key_is_documented(module: str, model: str, prefix: str) -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\|\s*`([^`]+)`", text, re.M))
    cls = getattr(importlib.import_module(module), model)
    keys = set(_keys(cls, prefix))
    missing = [k for k in keys if k not in documented]
    assert not missing, f"{module}.{model}: keys without a row in docs/config.md: {sorted(set(missing))}"


def test_key_walker_reaches_nested_and_union_models() -> None:
    from gateway.config import GatewayConfig

    keys = set(_keys(GatewayConfig))
    # instrument tables are a discriminated union of driver models, each with a nested timeouts table
    assert {
        "instruments.port",
        "instruments.host",
        "instruments.factory",
        "instruments.timeouts.response_s",
    } <= keys
    assert "config.gold_kits.lines.calibration.a" in set(
        _keys(__import__("kuaijian_schema").StationConfig, "config.")
    )
