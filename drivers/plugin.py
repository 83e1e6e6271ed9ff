"""The `plugin` driver family: any `drivers.readings.Analyzer` built by a factory named in the config.

Does: declare the `[[instruments]]` table `driver = "plugin"` (`factory = "package.module:callable"`,
`params = {…}`) and import the factory once when the gateway starts (an unloadable factory is a
`DriverConfigError` then, not a failing worker later).

Does not: probe anything (a plugin has no known wire protocol) or sandbox the imported code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from drivers.errors import DriverConfigError
from drivers.readings import Analyzer
from drivers.registry import DriverFamily, InstrumentSettings
from drivers.timeouts import Timeouts


class PluginInstrument(InstrumentSettings):
    """Any `drivers.readings.Analyzer` built by `factory` ("package.module:callable")."""

    driver: Literal["plugin"]
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = Field(default_factory=dict)


def make(settings: PluginInstrument, timeouts: Timeouts) -> Callable[[], Analyzer]:
    module_name, _, attr = settings.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DriverConfigError(
            f"instruments.{settings.name}.factory: cannot load {settings.factory!r}: {exc}"
        ) from exc
    params = dict(settings.params)

    def plugin() -> Analyzer:
        analyzer: Analyzer = factory(params, timeouts)
        return analyzer

    return plugin


FAMILY: DriverFamily[PluginInstrument] = DriverFamily(
    name="plugin",
    settings=PluginInstrument,
    factory=make,
    probe_order=1000,
    doc="any Analyzer from a factory",
)
