"""Station enrolment: a station's grid node, MQTT credentials and HMAC key.

Does: `enrol_station` creates (or, with rotate, re-issues) a station's MQTT credentials and HMAC key and
its grid node under a village; `broker_users` lists the stations' MQTT users for the broker's access
control (rendered by cloud.mosquitto).

Only the hash of a station's MQTT password is stored; the password is shown once at enrolment.
The HMAC key is a shared secret and is stored (the cloud needs it to verify signatures).

Does not: talk to the broker or write its files (cloud.mosquitto).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud.db import Database, open_db, transaction
from cloud.errors import Conflict, Invalid, NotFound
from cloud.grid import STATION_RE, node_by_code, upsert_node
from cloud.mosquitto import BrokerUser, mosquitto_hash


@dataclass(frozen=True)
class Enrolment:
    station: str
    mqtt_username: str
    mqtt_password: str
    key_hex: str

    def station_toml(self, broker_url: str = "mqtt://broker.example:1883") -> str:
        """A station.toml snippet for the gateway."""
        return (
            "[station]\n"
            f'id = "{self.station}"\n'
            f'key = "{self.key_hex}"\n'
            "\n[mqtt]\n"
            f'url = "{broker_url}"\n'
            f'username = "{self.mqtt_username}"\n'
            f'password = "{self.mqtt_password}"\n'
        )


def enrol_station(
    db: Database,
    station: str,
    village_code: str,
    now: datetime,
    *,
    name: str | None = None,
    rotate: bool = False,
    key: bytes | None = None,
    grace: timedelta = timedelta(days=30),
) -> Enrolment:
    """Enrol `station` under village `village_code`: grid node, MQTT username/password, HMAC key.

    `key` (≥ 16 bytes) is used as the HMAC key instead of a fresh random one (load simulators derive keys).
    With `rotate`, the replaced key still verifies for `grace` (results already signed and queued).
    Raises Invalid (bad id / not under that village), NotFound (no such village) or Conflict (already
    enrolled and not `rotate`).
    """
    if key is not None and len(key) < 16:
        raise Invalid("an HMAC key must be at least 16 bytes")
    if not STATION_RE.match(station):
        raise Invalid(f"station id {station!r} must be a 12-digit village code + '-' + 2 digits")
    village = node_by_code(db, village_code)
    if village is None or village.level != "village":
        raise NotFound(f"no village with code {village_code!r}")
    password = secrets.token_urlsafe(24)
    key_hex = key.hex() if key is not None else secrets.token_hex(32)
    with transaction(db):
        existing = db.execute("SELECT node_id FROM stations WHERE id = ?", [station]).fetchone()
        if existing is not None and not rotate:
            raise Conflict(f"station {station} is already enrolled (use --rotate to re-issue credentials)")
        current = node_by_code(db, station)
        node, _ = upsert_node(
            db,
            "station",
            station,
            name or (current.name if current else f"{village.name} {station[-2:]}号站"),
            village.code,
            None
            if current is None
            else {
                "grid_head": current.grid_head,
                "information_officer": current.information_officer,
                "co_manager": current.co_manager,
            },
        )
        if existing is None:
            db.execute(
                "INSERT INTO stations (id, node_id, key, mqtt_username, mqtt_password_hash, enrolled_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [station, node.id, key_hex, station, mosquitto_hash(password), now.isoformat()],
            )
        else:
            db.execute(
                # the replaced key keeps verifying for `grace`: results the gateway signed before it got
                # the new key (already in its outbox) are still accepted
                "UPDATE stations SET previous_key = key, previous_key_until = ?, key = ?,"
                " mqtt_password_hash = ?, enrolled_at = ? WHERE id = ?",
                [(now + grace).isoformat(), key_hex, mosquitto_hash(password), now.isoformat(), station],
            )
    return Enrolment(station=station, mqtt_username=station, mqtt_password=password, key_hex=key_hex)


def enrol_fleet(db_path: Path | str, stations: Sequence[str], keys: Sequence[bytes]) -> None:
    """Enrol simulated stations (`kuaijian fleet --enrol-db`) with the given keys, creating the county, town
    and village nodes implied by their ids (6/9/12-digit prefixes). Re-enrolling replaces the key."""
    if len(stations) != len(keys):
        raise Invalid("one key per station")
    db = open_db(db_path)
    try:
        now = datetime.now(UTC)
        with transaction(db):
            for station, key in zip(stations, keys, strict=True):
                if not STATION_RE.match(station):
                    raise Invalid(f"station id {station!r} must be a 12-digit village code + '-' + 2 digits")
                county, town, village = station[:6], station[:9], station[:12]
                for level, code, parent in (
                    ("county", county, None),
                    ("town", town, county),
                    ("village", village, town),
                ):
                    if node_by_code(db, code) is None:
                        upsert_node(db, level, code, f"{level} {code}", parent)
                enrol_station(db, station, village, now, key=key, rotate=True)
    finally:
        db.close()


def station_key(db: Database, station: str) -> bytes | None:
    row = db.execute("SELECT key FROM stations WHERE id = ?", [station]).fetchone()
    return None if row is None else bytes.fromhex(row[0])


def broker_users(db: Database) -> list[BrokerUser]:
    """Every enrolled station's MQTT user name and password hash, for the broker's access control."""
    rows = db.execute("SELECT mqtt_username, mqtt_password_hash FROM stations ORDER BY id").fetchall()
    return [BrokerUser(str(u), str(h)) for u, h in rows]
