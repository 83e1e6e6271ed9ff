"""Public surfaces are documented: a test fails when a CLI verb, an MQTT topic or a config key has no docs."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

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


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        yield key
        for arg in (field.annotation, *get_args(field.annotation)):
            inner: Any = arg
            for a in get_args(arg) or (arg,):
                if isinstance(a, type) and issubclass(a, BaseModel):
                    inner = a
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _keys(inner, f"{key}.")


@pytest.mark.parametrize(("module", "model", "prefix"), CONFIG_MODELS)
def test_every_config_key_is_documented(module: str, model: str, prefix: str) -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\|\s*`([^`]+)`", text, re.M))
    cls = getattr(importlib.import_module(module), model)
    missing = [k for k in _keys(cls, prefix) if k not in documented]
    assert not missing, f"{module}.{model}: keys without a row in docs/config.md: {sorted(set(missing))}"
