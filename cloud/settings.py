"""Cloud settings (pydantic-settings, environment prefix ``KJ_CLOUD_``).

Does: declare every configuration key of the cloud service with its default; built once by the app
factory or a CLI verb (never at import time). Nested values (e.g. ``case_deadline_hours``) are JSON in
the environment: ``KJ_CLOUD_CASE_DEADLINE_HOURS='{"station": 12, "village": 24, ...}'``.

Does not: read files other than the environment and, if `mqtt_password_file` is set, that one file; or open
the database / broker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.assessment import DEFAULT_WEIGHTS, AssessmentConfig

Level = Literal["county", "town", "village", "station"]
LEVELS: tuple[Level, ...] = ("county", "town", "village", "station")


def _default_deadlines() -> dict[str, float]:
    return {"station": 24.0, "village": 24.0, "town": 48.0, "county": 72.0}


class Settings(BaseSettings):
    """All cloud configuration keys (documented in docs/config.md, section "cloud")."""

    model_config = SettingsConfigDict(env_prefix="KJ_CLOUD_", extra="ignore")

    db_path: Path = Field(
        default=Path("kuaijian-cloud.db"), description="SQLite database file (the default engine)"
    )
    db_url: str | None = Field(
        default=None,
        description="database URL instead of db_path: postgresql://user@host:port/db (PostgreSQL, psycopg 3) "
        "or sqlite:///path",
    )
    broker_url: str | None = Field(
        default=None,
        description="mqtt://host:port or mqtts://host:port (TLS) of the broker; None = no ingest / no config publish",
    )
    mqtt_username: str | None = Field(default=None, description="broker user of the ingest worker")
    mqtt_password: str | None = Field(default=None, description="broker password of the ingest worker")
    mqtt_password_file: Path | None = Field(
        default=None,
        description="file holding the broker password (first line), instead of mqtt_password: keeps it out "
        "of the environment and the command line",
    )
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle verifying an mqtts:// broker (default: the system CAs)"
    )
    mqtt_client_id: str = Field(
        default="kj-cloud",
        description="client id prefix: the ingest's derived id and, with a random suffix, other links'",
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version")
    ingest_enabled: bool = Field(default=True, description="run MQTT ingest inside the web app")
    ingest_shared_group: str | None = Field(
        default="kj-ingest",
        description="MQTT 5 shared-subscription group for results; None/'' = plain subscription",
    )
    ingest_client_id: str | None = Field(
        default=None,
        description="client id of this ingest worker's persistent session (the broker queues results while it "
        "is down; give each extra worker its own); None = derived from this configuration, stable across restarts",
    )
    ingest_session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="MQTT 5 session expiry of a persistent ingest session"
    )
    ingest_heartbeat_s: float = Field(
        default=30.0,
        gt=0,
        description="how often a running ingest worker records that it is alive; a worker silent for "
        "INGEST_DEAD_AFTER (3) beats counts as crashed and another worker ends its broker session",
    )
    ingest_batch_size: int = Field(default=500, gt=0, description="max MQTT messages per commit")
    ingest_batch_wait_s: float = Field(default=0.05, ge=0, description="max wait to fill a batch")
    max_seq_jump: int = Field(
        default=1_000_000,
        gt=0,
        description="a result whose seq lies further than this beyond the station's highest is stored but flagged "
        "`seq_jump`, and neither moves the high-water mark nor records a gap",
    )
    plausible_past_days: float = Field(
        default=366.0,
        gt=0,
        description="a measured_at older than this before receipt is implausible: flagged `implausible_time`, "
        "reported by its receive time",
    )
    plausible_future_s: float = Field(
        default=86400.0,
        ge=0,
        description="a measured_at later than this after receipt is implausible (flagged, reported by receive time)",
    )
    scheduler_enabled: bool = Field(default=True, description="run the case scheduler inside the web app")
    scheduler_interval_s: float = Field(default=60.0, gt=0, description="seconds between scheduler ticks")
    suspect_threshold: int = Field(default=2, ge=1, description="suspects that open a case")
    suspect_window_days: float = Field(default=7.0, gt=0, description="window for counting suspects")
    case_deadline_hours: dict[str, float] = Field(
        default_factory=_default_deadlines, description="case deadline per level, hours"
    )
    remind_before_hours: float = Field(default=4.0, ge=0, description="remind this long before a deadline")
    key_rotation_grace_days: float = Field(
        default=30.0, ge=0, description="after a key rotation, the old station key still verifies this long"
    )
    assessment_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="weights of the assessment parts (coverage, tasks, timeliness, cases, quality, "
        "registration); see docs/reports.md",
    )
    assessment_timely_minutes: float = Field(
        default=60.0, gt=0, description="an upload within this many minutes of the measurement is timely"
    )
    risk_scan_interval_s: float = Field(default=3600.0, gt=0, description="seconds between risk scans")
    risk_place_level: Literal["county", "town", "village"] = Field(
        default="town", description="the place of a positivity-rise cell (analyte × product × place)"
    )
    risk_alpha: float = Field(
        default=0.001, gt=0, lt=1, description="binomial tail below which a rise alerts"
    )
    notify_enabled: bool = Field(default=True, description="send notifications from the web app")
    notify_interval_s: float = Field(default=5.0, gt=0, description="seconds between notification passes")
    metrics_token: str | None = Field(
        default=None,
        description="bearer token a Prometheus server sends to read GET /metrics (admins' tokens work too); "
        "None = admins only",
    )
    max_page_size: int = Field(default=1000, gt=0, description="upper bound of `limit` on list endpoints")
    max_request_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="larger request bodies are refused with 413 before they are read",
    )

    access_token_minutes: float = Field(
        default=15.0, gt=0, description="a login's access token is valid this long (the page refreshes it)"
    )
    refresh_token_hours: float = Field(
        default=12.0, gt=0, description="a login's refresh token is valid this long: then log in again"
    )
    machine_token_days: float = Field(
        default=365.0, gt=0, description="validity of a machine token (`kuaijian cloud create-user`)"
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="consecutive wrong passwords that lock an account"
    )
    login_lockout_minutes: float = Field(
        default=15.0, gt=0, description="how long a locked account stays locked"
    )
    password_min_length: int = Field(default=8, ge=6, description="shortest password accepted")
    timezone: str = Field(
        default="Asia/Shanghai",
        description="the grid's time zone: local days of reports, tasks and risk weeks, the times the "
        "dashboard and notifications show",
    )

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _read_password_file(self) -> Settings:
        if self.mqtt_password_file is None:
            return self
        if self.mqtt_password is not None:
            raise ValueError("set mqtt_password or mqtt_password_file, not both")
        self.mqtt_password = read_secret_file(self.mqtt_password_file)
        return self

    @field_validator("case_deadline_hours")
    @classmethod
    def _check_deadlines(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown level(s) {sorted(unknown)}; levels are {', '.join(LEVELS)}")
        if any(hours <= 0 for hours in value.values()):
            raise ValueError("deadlines must be positive hours")
        return {**_default_deadlines(), **value}

    @field_validator("assessment_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"unknown assessment part(s) {sorted(unknown)}; parts are {', '.join(DEFAULT_WEIGHTS)}"
            )
        if any(w < 0 for w in value.values()) or not any(w > 0 for w in value.values()):
            raise ValueError("weights must be non-negative and at least one positive")
        return {**{k: 0.0 for k in DEFAULT_WEIGHTS}, **value}

    @property
    def tz(self) -> ZoneInfo:
        """The grid's time zone (`timezone`) as a ZoneInfo."""
        return ZoneInfo(self.timezone)

    @property
    def assessment(self) -> AssessmentConfig:
        return AssessmentConfig(dict(self.assessment_weights), self.assessment_timely_minutes)

    def ingest_session_id(self) -> str:
        """The ingest's MQTT client id: `ingest_client_id`, or one derived from the ingest user and the database
        file — the same on every restart of this configuration, so the worker resumes its own session."""
        if self.ingest_client_id:
            return self.ingest_client_id
        basis = f"{self.mqtt_username or ''}|{self.db_url or Path(self.db_path).resolve()}"
        return f"{self.mqtt_client_id}-ingest-{hashlib.sha256(basis.encode()).hexdigest()[:10]}"

    @property
    def database(self) -> str:
        """Where the database is: `db_url` if set, else the SQLite file `db_path` (what cloud.db.connect takes)."""
        return self.db_url or str(self.db_path)

    def deadline_hours(self, level: str) -> float:
        return float(self.case_deadline_hours.get(level, _default_deadlines().get(level, 24.0)))


def db_setting(value: str | Path) -> dict[str, Any]:
    """The settings key a ``--db`` value sets: `db_url` for a URL (postgresql://…, sqlite:///…), else the
    SQLite file `db_path` — one rule for every CLI verb."""
    text = str(value)
    return {"db_url": text} if "://" in text else {"db_path": Path(text)}


def read_secret_file(path: Path) -> str:
    """The first line of `path` (a password file), without its line end; ValueError if unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc}") from exc
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ValueError(f"the secret file {path} is empty")
    return secret
