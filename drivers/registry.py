"""The driver registry: every analyzer family as data — name → config model, factory, probes.

Does: define what a family declares (`DriverFamily`: the `driver = "…"` name, the pydantic model of its
`[[instruments]]` table, a factory that turns a validated table into a zero-argument `Analyzer`
constructor, and optional serial / TCP probes for `kuaijian gateway scan`), the base of every instrument
table (`InstrumentSettings`, with the shared `[instruments.timeouts]` table) and the discovery of the
families: every module of the `drivers` package that defines a module-level `FAMILY`. The gateway's
config model, its service and `gateway scan` read this registry alone, so adding a family is a new
module that declares its `FAMILY` — no list to extend, never a change under `gateway/`.

Does not: open devices (factories are lazy: the returned constructor builds the driver in the worker
thread, `open()` is the worker's), validate whole station files (`gateway.config`) or retry anything.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Self, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.errors import DriverConfigError
from drivers.readings import Analyzer, DeviceInfo
from drivers.timeouts import Timeouts

FAMILY_ATTRIBUTE = "FAMILY"  # a module of the `drivers` package that defines this declares a family


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeoutsConfig(_Strict):
    """`[instruments.timeouts]`: the driver session's `drivers.timeouts.Timeouts`."""

    response_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=0)
    inter_byte_s: float = Field(default=0.2, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError("reconnect_initial_s must not exceed reconnect_max_s")
        return self

    def to_timeouts(self) -> Timeouts:
        return Timeouts(
            response_s=self.response_s,
            retries=self.retries,
            inter_byte_s=self.inter_byte_s,
            reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s,
        )


class InstrumentSettings(_Strict):
    """Keys every `[[instruments]]` table has; a family's model adds `driver: Literal["its-name"]` and
    its own keys."""

    driver: str
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    poll_interval_s: float | None = Field(default=None, gt=0)
    timeouts: TimeoutsConfig = TimeoutsConfig()

    def default_kit_name(self) -> str | None:
        """Gold kit assumed when a reading names none (families with a `default_kit` key override)."""
        return None

    def default_profile_name(self) -> str | None:
        """Enzyme profile assumed when a reading names none (families with `default_profile` override)."""
        return None


S = TypeVar("S", bound=InstrumentSettings)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """What `gateway scan` was asked for: per-request timeout, Modbus unit and RTU baud rate."""

    timeout_s: float = 0.3
    unit: int = 1
    baudrate: int = 19200

    def timeouts(self) -> Timeouts:
        return Timeouts(response_s=self.timeout_s, retries=1, reconnect_initial_s=0.05, reconnect_max_s=0.1)


@dataclass(frozen=True, slots=True)
class Probed:
    """An analyzer that answered a probe: who it is, over what, and its `[[instruments]]` keys.

    `port_key` names the key in `settings` holding the probed serial path (scan replaces it with the
    stable /dev/serial/by-id/… name when one exists).
    """

    info: DeviceInfo
    transport: str  # "serial", "modbus-rtu", "modbus-tcp", "astm-serial", …
    settings: Mapping[str, Any]
    port_key: str | None = None


SerialProbe = Callable[[str, ProbeOptions], Probed]
TcpProbe = Callable[[str, int, ProbeOptions], Probed]


@dataclass(frozen=True, slots=True)
class DriverFamily(Generic[S]):
    """One analyzer family. `factory(settings, timeouts)` returns the analyzer's constructor; it may
    raise `DriverConfigError` (e.g. a plugin that cannot be imported). Probes raise `DeviceNotFound`."""

    name: str
    settings: type[S]
    factory: Callable[[S, Timeouts], Callable[[], Analyzer]]
    probe_serial: SerialProbe | None = None
    probe_tcp: TcpProbe | None = None
    probe_order: int = 100  # `gateway scan` tries families on one endpoint in this order (lowest first)
    doc: str = field(default="", compare=False)

    def constructor(self, settings: InstrumentSettings) -> Callable[[], Analyzer]:
        if not isinstance(settings, self.settings):
            raise DriverConfigError(
                f"{settings.name}: settings of {type(settings).__name__}, not {self.name}"
            )
        return self.factory(settings, settings.timeouts.to_timeouts())


def _discover() -> list[DriverFamily[Any]]:
    import drivers

    found: list[DriverFamily[Any]] = []
    for mod in pkgutil.iter_modules(drivers.__path__, "drivers."):
        fam = getattr(importlib.import_module(mod.name), FAMILY_ATTRIBUTE, None)
        if fam is None:
            continue
        if not isinstance(fam, DriverFamily):
            raise TypeError(f"{mod.name}.{FAMILY_ATTRIBUTE} is not a DriverFamily")
        found.append(fam)
    return found


@functools.cache
def families() -> tuple[DriverFamily[Any], ...]:
    """Every family the `drivers` package declares (a module-level `FAMILY`), in probing order."""
    loaded = tuple(sorted(_discover(), key=lambda f: (f.probe_order, f.name)))
    names = [f.name for f in loaded]
    if len(set(names)) != len(names):
        raise TypeError(f"duplicate driver family names: {names}")
    return loaded


def family(name: str) -> DriverFamily[Any]:
    for fam in families():
        if fam.name == name:
            return fam
    raise DriverConfigError(f"unknown driver {name!r} (known: {', '.join(f.name for f in families())})")


def names() -> tuple[str, ...]:
    return tuple(f.name for f in families())


def settings_union() -> Any:
    """The discriminated union (on `driver`) of every family's settings model, for pydantic."""
    models = tuple(f.settings for f in families())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="driver")]  # noqa: UP007 — built at run time


def constructor(settings: InstrumentSettings) -> Callable[[], Analyzer]:
    """The zero-argument analyzer constructor for a validated instrument table."""
    return family(settings.driver).constructor(settings)
