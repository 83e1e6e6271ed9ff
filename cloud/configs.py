"""Station configuration push: versioned `StationConfig` documents stored per station and published
retained on ``kj/v1/{station}/config``.

Does: `push_config` stores one row per station of the target (a station, or every enrolled station in a
node's subtree) under a new global version number; `publish_pending` publishes every station's latest
unpublished config (retained, QoS 1) through a publisher and marks it published once the broker has it.
A newer push supersedes older unpublished ones, so a station never receives an outdated config.

Every station's document also carries the producers (生产主体) of its village and its sampling tasks;
`push_producers` / `push_tasks` re-issue the stations whose producer or task list changed, keeping their kits
and profiles.

Does not: HTTP or MQTT connection management (the caller passes a `Publisher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from cloud.auth import User, scoped_node
from cloud.db import Database, transaction
from cloud.errors import Forbidden, Invalid
from cloud.producers import station_producers, stations_of_villages
from cloud.tasks import station_tasks, stations_under
from kuaijian_schema import EnzymeSpec, StationConfig, StripSpec, topic

PUSH_ROLES = ("admin", "county", "town")
GRID_TZ = ZoneInfo("Asia/Shanghai")


class Publisher(Protocol):
    def publish_retained(self, topic_name: str, payload: bytes, timeout: float) -> bool:
        """Publish retained at QoS 1; True once the broker acknowledged it within `timeout` s."""
        ...


@dataclass(frozen=True)
class Push:
    version: str
    issued_at: datetime
    target: str
    stations: tuple[str, ...]
    config: StationConfig


def push_config(
    db: Database,
    user: User,
    target: str,
    gold_kits: Sequence[StripSpec],
    enzyme_profiles: Sequence[EnzymeSpec],
    now: datetime,
) -> Push:
    """Store a new config version for every station under `target` (a station id or a node code)."""
    if user.role not in PUSH_ROLES:
        raise Forbidden("only admin, county and town users push configuration")
    node = scoped_node(db, user, target)
    with transaction(db):
        stations = stations_under(db, node.path)
        if not stations:
            raise Invalid(f"no enrolled station under {target}")
        version, config = _issue(
            db, stations, user.name, node.row_id, now, tuple(gold_kits), tuple(enzyme_profiles)
        )
    return Push(version=version, issued_at=now, target=target, stations=tuple(stations), config=config)


def _issue(
    db: Database,
    stations: Sequence[str],
    issued_by: str,
    target_node_id: int,
    now: datetime,
    gold_kits: tuple[StripSpec, ...] | None,
    enzyme_profiles: tuple[EnzymeSpec, ...] | None,
) -> tuple[str, StationConfig]:
    """Store one new config version for each of `stations` (inside the caller's transaction).

    Each station's document carries the producers of its village; kits / profiles given as None keep the
    station's last pushed ones, so a producer-list push never drops kits and a kit push never drops producers.
    Returns the version and the last document stored.
    """
    last = db.execute("SELECT COALESCE(MAX(CAST(version AS INTEGER)), 0) FROM configs").fetchone()[0]
    version = str(int(last) + 1)
    config = StationConfig(version=version, issued_at=now)
    for station in stations:
        kits, profiles = gold_kits, enzyme_profiles
        if kits is None or profiles is None:
            prev = db.execute(
                "SELECT payload_json FROM configs WHERE station = ? ORDER BY id DESC LIMIT 1", [station]
            ).fetchone()
            old = (
                StationConfig(version="0", issued_at=now)
                if prev is None
                else StationConfig.model_validate_json(prev[0])
            )
            kits = old.gold_kits if kits is None else kits
            profiles = old.enzyme_profiles if profiles is None else profiles
        config = StationConfig(
            version=version,
            issued_at=now,
            gold_kits=kits,
            enzyme_profiles=profiles,
            producers=station_producers(db, station),
            tasks=station_tasks(db, station, now.astimezone(GRID_TZ).date()),
        )
        db.execute(
            "INSERT INTO configs (station, version, issued_at, issued_by, target_node_id, payload_json)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [station, version, now.isoformat(), issued_by, target_node_id, config.model_dump_json()],
        )
    return version, config


def push_producers(db: Database, village_ids: Sequence[int], issued_by: str, now: datetime) -> list[str]:
    """Issue a new config (same kits, fresh producer list) to every enrolled station of these villages."""
    with transaction(db):
        stations = stations_of_villages(db, village_ids)
        for village_id in village_ids:
            group = stations_of_villages(db, [village_id])
            if group:
                _issue(db, group, issued_by, village_id, now, None, None)
    return stations


def push_tasks(db: Database, node_id: int, node_path: str, issued_by: str, now: datetime) -> list[str]:
    """Issue a new config (same kits and producers, fresh task list) to every enrolled station under a node."""
    with transaction(db):
        stations = stations_under(db, node_path)
        if stations:
            _issue(db, stations, issued_by, node_id, now, None, None)
    return stations


def publish_pending(db: Database, publisher: Publisher, now: datetime, timeout: float = 5.0) -> int:
    """Publish each station's newest unpublished config; returns how many were published."""
    rows = db.execute(
        "SELECT c.id, c.station, c.payload_json FROM configs c WHERE c.published_at IS NULL"
        " AND c.id = (SELECT MAX(id) FROM configs WHERE station = c.station) ORDER BY c.id"
    ).fetchall()
    published = 0
    for config_id, station, payload in rows:
        if not publisher.publish_retained(topic(station, "config"), payload.encode(), timeout):
            break  # broker not reachable: try again on the next tick
        with transaction(db):
            db.execute(
                "UPDATE configs SET published_at = ? WHERE station = ? AND id <= ? AND published_at IS NULL",
                [now.isoformat(), station, config_id],
            )
        published += 1
    return published
