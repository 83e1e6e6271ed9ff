"""Station configuration: the TOML file a station runs with (`kuaijian gateway run --config station.toml`).

Does: parse TOML (tomllib), validate with pydantic (unknown keys refused), resolve relative paths against
the file's directory, read the station key / broker password from files, and raise `ConfigError` whose
message names the offending key (e.g. ``instruments[1].port: Field required``).

The `[[instruments]]` tables are the driver families' own models, read from `drivers.registry`
(a new analyzer family adds its keys there, not here).

Secrets on disk: `load_config` logs a warning (logger `gateway.config`) when the station TOML holds the
station key or the broker password and others can read it, or when a `key_file`, `password_file` or TLS
`key_file` it names is readable by others — the station key signs results, the password is the station's
broker identity. It warns and goes on: refusing to start would stop a station's measurements over a mode bit.

Does not: open devices, databases or sockets. Interpretation specs (kits, enzyme profiles) are NOT here:
they come from the built-in defaults (`gateway.defaults`) and the cloud's retained config push.

Every key is documented in docs/config.md (section "Station gateway").
"""

from __future__ import annotations

import logging
import re
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers import registry
from drivers.registry import InstrumentSettings
from gateway.errors import ConfigError
from gateway.outbox_types import KEEP_RECORD_KEYS
from kuaijian_schema.mqtt_client import BrokerUrl, parse_broker_url
from kuaijian_schema.wire import STATION_PATTERN

HEX_KEY_PATTERN = r"^(?:[0-9a-fA-F]{2}){16,}$"

log = logging.getLogger("gateway.config")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


if TYPE_CHECKING:
    InstrumentConfig: TypeAlias = InstrumentSettings
else:
    # every registered family's `[[instruments]]` model, discriminated by `driver` (drivers.registry)
    InstrumentConfig = registry.settings_union()


class BrokerConfig(_Strict):
    """`[mqtt]`: where and how the MQTT link connects."""

    url: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = Field(default=None, max_length=64)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)
    unreachable_log_s: float = Field(
        default=60.0,
        gt=0,
        description="while the broker is unreachable, repeat the warning at most this often",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        parse_broker_url(self.url)  # ValueError for anything but mqtt(s)://host[:port]
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def broker(self) -> BrokerUrl:
        return parse_broker_url(self.url)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def tls(self) -> bool:
        return self.broker.tls

    @property
    def endpoint(self) -> str:
        """scheme://host:port — the broker as logged (never any credentials written into the URL)."""
        return self.broker.endpoint

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc}") from exc
        return self.password


class LinkConfig(_Strict):
    """`[link]`: delivery policy of the outbox over MQTT."""

    ack_timeout_s: float = Field(default=30.0, gt=0, description="re-send when no application ack by then")
    ack_timeout_max_s: float = Field(default=600.0, gt=0, description="cap of the doubling re-send timeout")
    batch_max: int = Field(default=50, ge=1, le=1000, description="results per message under load")
    max_messages_per_s: float = Field(default=20.0, gt=0, description="publish rate limit (drain)")
    max_unacked: int = Field(default=1000, ge=1, description="results in flight without an ack")
    status_interval_s: float = Field(default=60.0, gt=0)
    tick_s: float = Field(default=0.2, gt=0, description="sender wake-up interval")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ack_timeout_max_s < self.ack_timeout_s:
            raise ValueError("ack_timeout_max_s must not be below ack_timeout_s")
        return self


class AcquisitionConfig(_Strict):
    """`[acquisition]`: how workers pull records from the instruments."""

    poll_interval_s: float = Field(default=1.0, gt=0)
    read_batch: int = Field(default=32, ge=1, le=1000, description="records per outbox transaction")
    start_from: Literal["first", "latest"] = Field(
        default="first", description="new instrument: read its whole memory, or only new records"
    )
    full_retry_s: float = Field(default=5.0, gt=0, description="wait after disk full before retrying")
    include_raw: bool = Field(default=False, description="attach the compressed raw signal to results")
    gold_median: Literal[0, 3, 5] = Field(
        default=0,
        description="running median of 3 or 5 px over colloidal-gold line regions before interpretation (0 = off)",
    )
    interpret_process: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="interpret colloidal-gold batches in a child process, on another core than the outbox and"
        " the link (auto: when this process may use more than one CPU)",
    )
    max_clock_drift_s: float = Field(
        default=5.0, ge=0, description="set an analyzer's clock on connect when it is off by more; 0 = never"
    )
    skip_unreadable_after: int = Field(
        default=10, ge=0, description="skip a record after this many protocol failures (0 = never)"
    )


class StorageConfig(_Strict):
    """`[storage]`: the outbox database."""

    max_db_mb: float | None = Field(default=None, gt=0, description="cap of the outbox (database + WAL)")
    reserve_mb: float = Field(
        default=0.5, ge=0, description="disk kept in a reserve file so acks can be applied on a full disk"
    )
    keep_record_keys: int = Field(
        default=KEEP_RECORD_KEYS,
        ge=0,
        le=1_000_000,
        description="records per instrument, behind its cursor, whose de-duplication keys are kept",
    )


class StationSection(_Strict):
    """`[station]`: identity, HMAC key and local storage of this station."""

    id: str = Field(pattern=STATION_PATTERN, description="12-digit village code + '-' + 2-digit number")
    key: str | None = Field(default=None, pattern=HEX_KEY_PATTERN, description="HMAC key, hex")
    key_file: Path | None = None
    data_dir: Path = Field(default=Path("/var/lib/kuaijian"))
    operator: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.key is None) == (self.key_file is None):
            raise ValueError("set exactly one of key or key_file")
        return self


class WebConfig(_Strict):
    """`[web]`: the station's local sample-registration page (抽样登记) on the station LAN."""

    enabled: bool = Field(default=False, description="serve the page")
    host: str = Field(default="127.0.0.1", description="listen address (0.0.0.0 for the station LAN)")
    port: int = Field(default=8080, ge=0, lt=65536, description="listen port (0 = any free port)")
    metrics: bool = Field(
        default=True, description="also serve Prometheus metrics at /metrics (outbox, link, instruments)"
    )


class GatewayConfig(_Strict):
    """The whole station TOML."""

    station: StationSection
    mqtt: BrokerConfig
    link: LinkConfig = LinkConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    storage: StorageConfig = StorageConfig()
    web: WebConfig = WebConfig()
    instruments: tuple[InstrumentConfig, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [i.name for i in self.instruments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate instrument names: {', '.join(dupes)}")
        return self

    @property
    def station_id(self) -> str:
        return self.station.id

    @property
    def data_dir(self) -> Path:
        return self.station.data_dir

    @property
    def db_path(self) -> Path:
        return self.station.data_dir / "outbox.db"

    def station_key(self) -> bytes:
        """The HMAC-SHA256 key (hex in the config, as `kuaijian cloud enrol-station` prints it)."""
        if self.station.key is not None:
            return bytes.fromhex(self.station.key)
        if self.station.key_file is None:
            raise ConfigError("station: set key or key_file")
        path = self.station.key_file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"station.key_file: cannot read {path}: {exc}") from exc
        if not re.fullmatch(HEX_KEY_PATTERN, text):
            raise ConfigError(f"station.key_file: {path} must hold a hex key of at least 32 hex digits")
        return bytes.fromhex(text)


_PATH_KEYS = {
    ("station",): ("key_file", "data_dir"),
    ("mqtt",): ("password_file", "ca_file", "cert_file", "key_file"),
}


def _resolve_paths(doc: dict[str, Any], base: Path) -> None:
    for where, keys in _PATH_KEYS.items():
        section: Any = doc
        for part in where:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict):
            continue
        for key in keys:
            value = section.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                section[key] = str(base / value)
            elif isinstance(value, str):
                section[key] = str(Path(value).expanduser())


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            if isinstance(part, int):
                loc += f"[{part}]"
            elif part in registry.names():
                continue  # discriminator tag inserted by pydantic
            else:
                loc += f".{part}" if loc else str(part)
        lines.append(f"{loc or '(top level)'}: {err['msg']}")
    return f"{source}: invalid station config:\n  " + "\n  ".join(lines)


_FLAT_STATION_KEYS = {"key": "key", "key_file": "key_file", "data_dir": "data_dir", "operator": "operator"}


def _normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Accept the flat spelling (top-level `station = "…"`, `key`, `key_file`, `data_dir`, `operator`) and
    `[broker]` for `[mqtt]`; everything is validated (and reported) under the canonical names."""
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    if isinstance(doc.get("station"), str):
        station: dict[str, Any] = {"id": doc.pop("station")}
        for flat, key in _FLAT_STATION_KEYS.items():
            if flat in doc and not isinstance(doc[flat], dict):
                station[key] = doc.pop(flat)
        doc["station"] = station
    if "broker" in doc and "mqtt" not in doc:
        doc["mqtt"] = doc.pop("broker")
    return doc


def parse_config(doc: dict[str, Any], *, base_dir: Path, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed TOML document; relative paths are taken from `base_dir`."""
    doc = _normalise(doc)
    _resolve_paths(doc, base_dir)
    try:
        return GatewayConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a station TOML file; `ConfigError` names the file and the offending key."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    config = parse_config(doc, base_dir=path.resolve().parent, source=str(path))
    for warning in secret_warnings(path, config):
        log.warning("%s", warning)
    return config


def _others_can_read(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False  # missing/unreadable files are reported where they are read


def secret_warnings(path: Path, config: GatewayConfig) -> list[str]:
    """Warnings about secrets that other local users can read: the TOML itself when it holds the station key
    or the broker password, and every key / password file it names (Chinese first, then English)."""
    out: list[str] = []
    inline = [
        k for k, v in (("station.key", config.station.key), ("mqtt.password", config.mqtt.password)) if v
    ]
    if inline and _others_can_read(path):
        out.append(
            f"配置文件 {path} 含有密钥/密码 ({', '.join(inline)}) 且所有用户可读, 请执行 chmod 600 — "
            f"{path} holds {', '.join(inline)} and is world-readable; chmod 600 it (or move the secret to "
            "station.key_file / mqtt.password_file)"
        )
    files = (
        ("station.key_file", config.station.key_file),
        ("mqtt.password_file", config.mqtt.password_file),
        ("mqtt.key_file", config.mqtt.key_file),
    )
    for name, secret in files:
        if secret is not None and _others_can_read(secret):
            out.append(
                f"{name} {secret} 所有用户可读, 请执行 chmod 600 — {name} {secret} is world-readable; chmod 600 it"
            )
    return out
