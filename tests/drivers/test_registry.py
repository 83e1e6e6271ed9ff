"""The driver registry: families are data the gateway reads, never names it spells out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers import registry
from drivers.errors import DriverConfigError
from drivers.gold_serial import GoldSerialAnalyzer, GoldSerialInstrument
from drivers.plugin import PluginInstrument
from gateway.config import InstrumentConfig

ROOT = Path(__file__).resolve().parents[2]


def test_each_family_declares_its_own_discriminated_model() -> None:
    fams = registry.families()
    assert [f.name for f in fams][:2] == ["gold-serial", "enzyme-modbus"]
    for fam in fams:
        (literal,) = get_args(fam.settings.model_fields["driver"].annotation)
        assert literal == fam.name
        assert issubclass(fam.settings, registry.InstrumentSettings)


def test_station_config_accepts_every_registered_family_and_refuses_others() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(InstrumentConfig)
    gold = adapter.validate_python({"name": "g", "driver": "gold-serial", "port": "/dev/ttyUSB0"})
    assert isinstance(gold, GoldSerialInstrument)
    assert gold.default_kit_name() is None
    with pytest.raises(ValidationError, match="driver"):
        adapter.validate_python({"name": "x", "driver": "no-such-family"})


def test_constructor_is_lazy_and_errors_are_driver_errors() -> None:
    gold = GoldSerialInstrument(name="g", driver="gold-serial", port="/dev/serial/by-id/absent")
    make = registry.constructor(gold)  # builds nothing yet: no port is opened here
    analyzer = make()
    assert isinstance(analyzer, GoldSerialAnalyzer)
    assert not analyzer.session.transport.is_open
    bad = PluginInstrument(name="p", driver="plugin", factory="no_such_module:make")
    with pytest.raises(DriverConfigError, match="cannot load"):
        registry.constructor(bad)
    with pytest.raises(DriverConfigError, match="unknown driver"):
        registry.family("no-such-family")


def test_no_gateway_module_names_a_driver_family() -> None:
    """Adding a family touches no gateway file: config, service and scan read the registry alone."""
    names = registry.names()
    offenders = []
    for path in [*sorted((ROOT / "gateway").glob("*.py")), ROOT / "drivers" / "cli.py"]:
        text = path.read_text(encoding="utf-8")
        for name in names:
            if re.search(rf"[\"']{re.escape(name)}[\"']", text):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
        for cls in ("GoldSerialInstrument", "EnzymeModbusInstrument", "PluginInstrument", "isinstance(inst"):
            if cls in text:
                offenders.append(f"{path.relative_to(ROOT)}: {cls}")
    assert not offenders, offenders
