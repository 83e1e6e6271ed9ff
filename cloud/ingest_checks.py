"""Ingest's checks that need no lock (`cloud.ingest.process_batch` runs them before its transaction, so several
workers do this work in parallel whatever stations they hold): split each result-topic message into its items,
and check each item — the station's key, the HMAC over the received dict (`kuaijian_schema.check_payload`),
U+0000 in its text, the `kuaijian_schema.Result` schema, the payload's station against the topic's, the seq's
range. Also the received message itself (`Inbound`) and its topic (`parse_topics`).

Does not: write anything, decide what is new or a duplicate (that needs the batch's locks: cloud.ingest), MQTT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from cloud.db import Database
from kuaijian_schema import Result, check_payload, split_result_payload
from kuaijian_schema.wire import parse_topic

log = logging.getLogger("cloud.ingest")

SQLITE_MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class Inbound:
    """One received MQTT message. `mid`/`qos` are used for the manual PUBACK after the commit."""

    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 0
    session: int = 0
    """`MqttLink.session` when received: a PUBACK after a reconnect would hit another message's mid."""


NUL_ESCAPE = b"\\u0000"
"""The only way U+0000 gets into a decoded document: strict JSON refuses a raw NUL, so a payload without this
escape needs no walk through its strings (the walk cost a fifth of one-result-per-message ingest)."""


def has_nul(value: Any) -> bool:
    """True if any string in a decoded JSON document holds U+0000 (no text column of PostgreSQL can store it;
    no field of a result has a use for it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def schema_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or '<root>'}: {err.get('msg', 'invalid')}")
    return "schema: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Check:
    """What the checks that need no lock found about one received item: why it is rejected (with the hash of
    it as received once known), or the valid `Result` — neither for a verified sample registration."""

    reason: str | None = None
    result: Result | None = None
    digest: str | None = None


def check_item(item: dict[str, Any], station: str, keys: tuple[bytes, ...] | None, nul: bool) -> Check:
    if keys is None:
        return Check(f"unknown station {station}")
    if "sig" not in item:
        return Check("unsigned")
    verified, digest = check_payload(item, keys)
    if not verified:
        return Check("bad signature", digest=digest)
    if nul and has_nul(item):
        return Check("text contains U+0000", digest=digest)
    if item.get("kind") == "sample":
        return Check(digest=digest)  # validated and stored under the lock (rare, and it reads the database)
    try:
        result = Result.model_validate(item)
    except ValidationError as exc:
        return Check(schema_reason(exc), digest=digest)
    if result.station != station:
        return Check(f"station mismatch: payload says {result.station}, topic {station}", digest=digest)
    if result.seq > SQLITE_MAX_INT:
        return Check("seq out of range", digest=digest)
    return Check(result=result, digest=digest)


@dataclass
class Checked:
    """A batch decoded and checked before its transaction: `parsed` (by message index: the items, or why the
    payload cannot be decoded) and `checks` (by message index, one per item)."""

    parsed: dict[int, list[dict[str, Any]] | str] = field(default_factory=dict)
    checks: dict[int, list[Check]] = field(default_factory=dict)


def check_batch(
    db: Database, messages: Sequence[Inbound], topics: Sequence[tuple[str, str] | str], poison: dict[int, str]
) -> Checked:
    """Decode every result message and check every item as far as it can be checked without the batch's
    locks — station key, signature, U+0000, schema, station, seq range: most of a result's CPU cost, spent
    while other workers hold their locks. A message whose checking raises (a bug) goes to `poison`."""
    out = Checked()
    wanted = [n for n, t in enumerate(topics) if not isinstance(t, str) and t[1] == "result"]
    for n in wanted:
        try:
            out.parsed[n] = split_result_payload(messages[n].payload)
        except ValueError as exc:
            out.parsed[n] = str(exc)
        except RecursionError:
            out.parsed[n] = "payload nested too deeply"
    names = sorted({topics[n][0] for n in wanted if isinstance(out.parsed[n], list)})
    keys: dict[str, tuple[bytes, ...]] = {}
    if names:
        now = messages[0].received_at.isoformat()
        sql = "SELECT id, key, previous_key, previous_key_until FROM stations"
        for row in db.rows_in(sql, "id", names):
            keys[str(row[0])] = keys_now(row[1], row[2], row[3], now)
    for n in wanted:
        items = out.parsed[n]
        if isinstance(items, str):
            continue
        station = topics[n][0]
        nul = NUL_ESCAPE in messages[n].payload  # once per message: a search through all of it
        try:
            out.checks[n] = [check_item(item, station, keys.get(station), nul) for item in items]
        except Exception as exc:
            log.exception("ingest failed on a message on %s", messages[n].topic)
            poison[n] = f"internal error: {type(exc).__name__}: {exc}"
    return out


def keys_now(key: str, previous: str | None, until: str | None, now: str) -> tuple[bytes, ...]:
    """The keys that verify now: the station's key, plus the key replaced by the last rotation while its grace
    period lasts."""
    if previous and until and now < until:
        return bytes.fromhex(key), bytes.fromhex(previous)
    return (bytes.fromhex(key),)


def parse_topics(messages: Sequence[Inbound]) -> list[tuple[str, str] | str]:
    """Each message's (station, kind), or the reason its topic is not a station topic."""
    out: list[tuple[str, str] | str] = []
    for msg in messages:
        try:
            out.append(parse_topic(msg.topic))
        except ValueError as exc:
            out.append(str(exc))
    return out
