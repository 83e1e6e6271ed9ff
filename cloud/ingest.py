"""MQTT ingest: validate, verify, store idempotently, then acknowledge.

`process_batch(db, messages, settings)` is the pure-ish core (one transaction over the database):
for each result-topic message it splits the payload (`kuaijian_schema.split_result_payload`), and per
result looks up the station key (station from the topic), verifies the HMAC on the received dict,
validates it as `kuaijian_schema.Result`, checks that the payload's station is the topic's station, and
stores it with INSERT OR IGNORE by id (a redelivery is a no-op but is acknowledged again; the same id with
other validly signed content is a conflicting duplicate: dead-lettered with both hashes, never acked as
stored). Rejected results go to ``dead_letters`` with the reason and are listed in the ack's `rejected` with
the SHA-256 of the item as received (when it carries an id and an integer seq): the gateway applies such a
rejection only to a stored result with exactly that content, so nothing unverified changes a result's fate.
Times are stored in UTC; an implausible measured_at is flagged and replaced by the receive time (the sent
one is kept). New results advance the station's seq high-water mark: a jump records a gap in ``seq_gaps``; a
late result shrinks/closes the gap it fills; a seq beyond `max_seq_jump` is flagged and moves nothing. New positives and
suspects go through `cloud.cases.on_result`. An item with ``"kind": "sample"`` is a signed
`SampleRegistration` (same verification, idempotence, seq tracking and ack); it is stored by
`cloud.samples.store_registration` or rejected with the reason (unknown producer, producer of another village,
duplicate code). After the batch, `cloud.samples.decide` re-decides every batch a new result or registration
touches (可上市 + certificate / 暂停上市 / 需复检). Status messages update the station row (online, backlog,
oldest unsent age, …) in arrival order.

`IngestWorker` connects with paho-mqtt 2 (MQTT 5 by default), subscribes to
``$share/{group}/kj/v1/+/result`` (or the plain topic when no group is configured / MQTT 3.1.1) and
``kj/v1/+/status``, collects messages into batches, commits a batch, and only then PUBACKs the MQTT
messages (manual acks) and publishes one `Ack` per station on ``kj/v1/{station}/ack`` (QoS 1). If the
commit fails the batch is retried; nothing is acknowledged that is not durably stored.

Never crashes on input: every failure of one message or one result becomes a dead letter.

Does not: HTTP, or open the database for anybody else.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import sqlite_utils
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from cloud import cases, samples
from cloud.clock import Clock, utc_iso
from cloud.db import connect, transaction
from cloud.errors import Invalid
from cloud.metrics import CloudMetrics
from cloud.settings import Settings
from kuaijian_schema import (
    Ack,
    Rejection,
    Result,
    SampleRegistration,
    Status,
    payload_sha256,
    split_result_payload,
    verify_payload,
)
from kuaijian_schema.mqtt_client import set_tcp_nodelay
from kuaijian_schema.wire import parse_topic

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_CHARS = 256 * 1024
SQLITE_MAX_INT = 2**63 - 1
IDLE_S = 0.005  # a pause this long in the incoming stream ends a batch early
RESULT_FILTER = "kj/v1/+/result"
STATUS_FILTER = "kj/v1/+/status"


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


@dataclass
class StationAck:
    ids: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def to_ack(self) -> Ack:
        return Ack.model_validate({"ids": self.ids, "seqs": self.seqs, "rejected": self.rejected})


@dataclass
class BatchOutcome:
    acks: dict[str, StationAck] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    dead_letters: int = 0
    cases_touched: set[int] = field(default_factory=set)


def _payload_text(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = "hex:" + payload.hex()
    if len(text) > MAX_DEAD_LETTER_CHARS:
        text = text[:MAX_DEAD_LETTER_CHARS] + "…[truncated]"
    return text


def _item_text(item: dict[str, Any]) -> str:
    try:
        text = json.dumps(item, ensure_ascii=True, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - json.loads output always re-serialises
        text = repr(item)
    return text[:MAX_DEAD_LETTER_CHARS]


def _dead_letter(
    db: sqlite_utils.Database,
    msg: Inbound,
    payload: str,
    reason: str,
    station: str | None = None,
    result_id: str | None = None,
    sha256: str | None = None,
    stored_sha256: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, station, result_id, sha256,"
        " stored_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            msg.received_at.isoformat(),
            msg.topic[:1024],
            payload,
            reason[:2000],
            station,
            result_id,
            sha256,
            stored_sha256,
        ],
    )


def _item_sha256(item: dict[str, Any]) -> str | None:
    """`payload_sha256` of a received item; None when canonical JSON cannot encode it (NaN, …)."""
    try:
        return payload_sha256(item)
    except (TypeError, ValueError, RecursionError):
        return None


def _schema_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or '<root>'}: {err.get('msg', 'invalid')}")
    return "schema: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class _New:
    """A result newly stored by this batch."""

    result: Result
    node_id: int
    received_at: datetime
    measured_at: datetime
    """The instant it is reported by: its measured_at, or its receive time when that was implausible."""
    seq_jump: bool
    """Its seq lay beyond `max_seq_jump` past the station's highest: it does not move the high-water mark."""


class _Batch:
    """State of one `process_batch` call (station lookups cached for the batch)."""

    def __init__(self, db: sqlite_utils.Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.out = BatchOutcome()
        self._stations: dict[str, tuple[tuple[bytes, ...], int] | None] = {}
        self.new: list[_New] = []
        self._high: dict[str, int] = {}
        self.new_samples: list[tuple[SampleRegistration, datetime]] = []

    def station(self, station: str, now: datetime) -> tuple[tuple[bytes, ...], int] | None:
        """(keys that verify now, grid node) of an enrolled station: its key, plus the key replaced by the
        last rotation while its grace period lasts."""
        if station not in self._stations:
            row = self.db.execute(
                "SELECT key, node_id, previous_key, previous_key_until FROM stations WHERE id = ?", [station]
            ).fetchone()
            if row is None:
                self._stations[station] = None
            else:
                keys = [bytes.fromhex(row[0])]
                if row[2] and row[3] and now.isoformat() < row[3]:
                    keys.append(bytes.fromhex(row[2]))
                self._stations[station] = (tuple(keys), int(row[1]))
        return self._stations[station]

    def snapshot(self) -> tuple[dict[str, tuple[int, int, int]], int, int, int, int, int]:
        """Counters to undo one message's effects on the outcome if its savepoint is rolled back."""
        acks = {k: (len(a.ids), len(a.seqs), len(a.rejected)) for k, a in self.out.acks.items()}
        return (
            acks,
            len(self.new),
            self.out.stored,
            self.out.duplicates,
            self.out.rejected,
            len(self.new_samples),
        )

    def restore(self, snap: tuple[dict[str, tuple[int, int, int]], int, int, int, int, int]) -> None:
        acks, n_new, stored, duplicates, rejected, n_samples = snap
        del self.new_samples[n_samples:]
        for station, ack in list(self.out.acks.items()):
            if station not in acks:
                del self.out.acks[station]
                continue
            n_ids, n_seqs, n_rej = acks[station]
            del ack.ids[n_ids:], ack.seqs[n_seqs:], ack.rejected[n_rej:]
        del self.new[n_new:]
        self.out.stored, self.out.duplicates, self.out.rejected = stored, duplicates, rejected

    def ack(self, station: str) -> StationAck:
        return self.out.acks.setdefault(station, StationAck())

    def reject(self, msg: Inbound, station: str, item: dict[str, Any], reason: str) -> None:
        """Dead-letter `item` and, when it names an id and a seq, tell the station in its ack — with the
        SHA-256 of the item as received, so the gateway applies it only to a stored result with exactly this
        content (a message forged under a real id/seq changes nothing there)."""
        rid = item.get("id")
        seq = item.get("seq")
        rid_s = rid if isinstance(rid, str) and len(rid) <= 64 else None
        seq_i = (
            seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= SQLITE_MAX_INT else None
        )
        digest = _item_sha256(item)
        _dead_letter(self.db, msg, _item_text(item), reason, station, rid_s, digest)
        self.out.rejected += 1
        self.out.dead_letters += 1
        if rid_s is not None and seq_i is not None and digest is not None:
            self.ack(station).rejected.append(Rejection(id=rid_s, seq=seq_i, reason=reason, sha256=digest))

    def result_message(self, msg: Inbound, station: str) -> None:
        try:
            items = split_result_payload(msg.payload)
        except ValueError as exc:
            _dead_letter(self.db, msg, _payload_text(msg.payload), str(exc), station)
            self.out.dead_letters += 1
            return
        except RecursionError:
            _dead_letter(self.db, msg, _payload_text(msg.payload), "payload nested too deeply", station)
            self.out.dead_letters += 1
            return
        for item in items:
            self.result_item(msg, station, item)

    def result_item(self, msg: Inbound, station: str, item: dict[str, Any]) -> None:
        known = self.station(station, msg.received_at)
        if known is None:
            self.reject(msg, station, item, f"unknown station {station}")
            return
        keys, node_id = known
        if "sig" not in item:
            self.reject(msg, station, item, "unsigned")
            return
        if not any(verify_payload(item, key) for key in keys):
            self.reject(msg, station, item, "bad signature")
            return
        if item.get("kind") == "sample":
            self.sample_item(msg, station, item, node_id)
            return
        try:
            result = Result.model_validate(item)
        except ValidationError as exc:
            self.reject(msg, station, item, _schema_reason(exc))
            return
        if result.station != station:
            self.reject(
                msg, station, item, f"station mismatch: payload says {result.station}, topic {station}"
            )
            return
        if result.seq > SQLITE_MAX_INT:
            self.reject(msg, station, item, "seq out of range")
            return
        rid = str(result.id)
        digest = _item_sha256(item)
        flags: list[str] = []
        measured_at = result.measured_at
        if not self._plausible(measured_at, msg.received_at):
            flags.append("implausible_time")
            measured_at = msg.received_at  # reported by receive time; the station's time is kept as sent
        if result.seq > self.high_seq(station) + self.settings.max_seq_jump:
            flags.append("seq_jump")
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results (id, seq, station, node_id, instrument_serial, instrument_model,"
            " instrument_driver, sample_id, product, producer, sampled_at, method, analyte, channel,"
            " measured_at, verdict, values_json, qc_json, algorithm, config_version, raw_json, operator,"
            " sig, received_at, sha256, ingest_flags, measured_at_sent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                rid,
                result.seq,
                station,
                node_id,
                result.instrument.serial,
                result.instrument.model,
                result.instrument.driver,
                result.sample.id,
                result.sample.product,
                result.sample.producer,
                None if result.sample.sampled_at is None else utc_iso(result.sample.sampled_at),
                result.method,
                result.analyte,
                result.channel,
                utc_iso(measured_at),
                result.verdict,
                json.dumps(result.values, allow_nan=False),
                json.dumps(list(result.qc), ensure_ascii=False),
                result.algorithm,
                result.config_version,
                None if result.raw is None else result.raw.model_dump_json(),
                result.operator,
                result.sig,
                msg.received_at.isoformat(),
                digest,
                json.dumps(flags),
                result.measured_at.isoformat() if flags and "implausible_time" in flags else None,
            ],
        )
        if cur.rowcount == 1:
            self.out.stored += 1
            self.new.append(_New(result, node_id, msg.received_at, measured_at, "seq_jump" in flags))
            if "seq_jump" not in flags:
                self._high[station] = max(self._high[station], result.seq)
        else:
            stored_sha, stored_sig = self.db.execute(
                "SELECT sha256, sig FROM results WHERE id = ?", [rid]
            ).fetchone()
            same = stored_sha == digest if stored_sha is not None else stored_sig == result.sig
            if not same:
                self.conflict(msg, station, item, rid, digest, stored_sha or f"sig:{stored_sig}")
                return
            self.out.duplicates += 1
        ack = self.ack(station)
        ack.ids.append(rid)
        ack.seqs.append(result.seq)

    def conflict(
        self, msg: Inbound, station: str, item: dict[str, Any], rid: str, digest: str | None, stored: str
    ) -> None:
        """A validly signed result under an id already stored with other content: never acked as stored.
        Dead-lettered with both hashes (admin: GET /api/dead-letters) and rejected to the station, which moves
        its row aside only if it holds exactly this content."""
        reason = f"conflicting duplicate: id {rid} is stored with other content (stored sha256 {stored})"
        _dead_letter(self.db, msg, _item_text(item), reason, station, rid, digest, stored)
        self.out.rejected += 1
        self.out.dead_letters += 1
        seq = item.get("seq")
        if digest is not None and isinstance(seq, int):
            self.ack(station).rejected.append(Rejection(id=rid, seq=seq, reason=reason, sha256=digest))

    def _plausible(self, measured_at: datetime, received_at: datetime) -> bool:
        lo = received_at - timedelta(days=self.settings.plausible_past_days)
        hi = received_at + timedelta(seconds=self.settings.plausible_future_s)
        return lo <= measured_at <= hi

    def high_seq(self, station: str) -> int:
        """The station's seq high-water mark: stored, plus what this batch accepted so far."""
        if station not in self._high:
            row = self.db.execute("SELECT high_seq FROM stations WHERE id = ?", [station]).fetchone()
            self._high[station] = int(row[0]) if row else 0
        return self._high[station]

    def sample_item(self, msg: Inbound, station: str, item: dict[str, Any], node_id: int) -> None:
        """A signed sample registration: stored once by id; a bad one is rejected with the reason."""
        try:
            reg = SampleRegistration.model_validate(item)
        except ValidationError as exc:
            self.reject(msg, station, item, _schema_reason(exc))
            return
        if reg.station != station:
            self.reject(msg, station, item, f"station mismatch: payload says {reg.station}, topic {station}")
            return
        if reg.seq > SQLITE_MAX_INT:
            self.reject(msg, station, item, "seq out of range")
            return
        try:
            with self.db.atomic():
                stored = samples.store_registration(self.db, reg, node_id, msg.received_at)
        except Invalid as exc:
            self.reject(msg, station, item, str(exc))
            return
        if stored:
            self.out.stored += 1
            self.new_samples.append((reg, msg.received_at))
        else:
            self.out.duplicates += 1
        ack = self.ack(station)
        ack.ids.append(str(reg.id))
        ack.seqs.append(reg.seq)

    def status_message(self, msg: Inbound, station: str) -> None:
        try:
            doc = json.loads(msg.payload.decode("utf-8"))
            status = Status.model_validate(doc)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._status_dead(msg, station, f"status is not UTF-8 JSON: {exc}")
            return
        except ValidationError as exc:
            self._status_dead(msg, station, "status " + _schema_reason(exc))
            return
        except RecursionError:
            self._status_dead(msg, station, "status nested too deeply")
            return
        if status.station != station:
            self._status_dead(
                msg, station, f"station mismatch: payload says {status.station}, topic {station}"
            )
            return
        if self.station(station, msg.received_at) is None:
            self._status_dead(msg, station, f"unknown station {station}")
            return
        # Statuses apply in arrival order (MQTT keeps per-topic order), NOT by their `at`: the last will
        # ("offline") is composed when the gateway connects, so its `at` is older than the births after it.
        # A status without depth/age/disk figures (the will) keeps the last known ones.
        online = 1 if status.state == "online" else 0
        self.db.execute(
            "UPDATE stations SET online = ?, status_at = ?, status_json = ?, backlog = COALESCE(?, backlog),"
            " oldest_unsent_age_s = COALESCE(?, oldest_unsent_age_s),"
            " free_disk_bytes = COALESCE(?, free_disk_bytes), config_version = COALESCE(?, config_version),"
            " last_seen = CASE WHEN ? AND (last_seen IS NULL OR last_seen < ?) THEN ? ELSE last_seen END"
            " WHERE id = ?",
            [
                online,
                status.at.isoformat(),
                status.model_dump_json(),
                status.outbox_depth,
                status.oldest_unsent_age_s,
                status.free_disk_bytes,
                status.config_version,
                online,
                msg.received_at.isoformat(),
                msg.received_at.isoformat(),
                station,
            ],
        )
        self.out.statuses += 1

    def _status_dead(self, msg: Inbound, station: str, reason: str) -> None:
        _dead_letter(self.db, msg, _payload_text(msg.payload), reason, station)
        self.out.dead_letters += 1

    def finish(self) -> None:
        """Seq tracking, station last_seen and case rules for the results stored in this batch."""
        by_station: dict[str, list[_New]] = {}
        for entry in self.new:
            by_station.setdefault(entry.result.station, []).append(entry)
        regs_by_station: dict[str, list[tuple[SampleRegistration, datetime]]] = {}
        for reg_entry in self.new_samples:
            regs_by_station.setdefault(reg_entry[0].station, []).append(reg_entry)
        for station in sorted(set(by_station) | set(regs_by_station)):
            entries = sorted(by_station.get(station, []), key=lambda e: e.result.seq)
            regs = regs_by_station.get(station, [])
            bound = self.high_seq(station) + self.settings.max_seq_jump
            seqs = sorted(
                [e.result.seq for e in entries if not e.seq_jump] + [r.seq for r, _ in regs if r.seq <= bound]
            )
            times = [e.received_at for e in entries] + [t for _, t in regs]
            _track_seqs(self.db, station, seqs, max(times))
            latest = max(times).isoformat()
            self.db.execute(
                "UPDATE stations SET last_seen = CASE WHEN last_seen IS NULL OR last_seen < ? THEN ?"
                " ELSE last_seen END WHERE id = ?",
                [latest, latest, station],
            )
            for entry in entries:
                result, node_id, received_at = entry.result, entry.node_id, entry.received_at
                new = cases.NewResult(
                    id=str(result.id),
                    station=station,
                    node_id=node_id,
                    product=result.sample.product,
                    analyte=result.analyte,
                    verdict=result.verdict,
                    measured_at=entry.measured_at,
                    sample_id=result.sample.id,
                )
                try:
                    with self.db.atomic():
                        case_id = cases.on_result(self.db, new, self.settings, received_at)
                except sqlite3.Error:
                    raise
                except Exception:
                    # The result is stored and acked; a bug in the case rules must not lose it.
                    log.exception("case rules failed for result %s", new.id)
                    continue
                if case_id is not None:
                    self.out.cases_touched.add(case_id)
            # the pre-market decision of every batch these results or registrations touch
            codes = {e.result.sample.id for e in entries} | {r.code for r, _ in regs}
            now = max(times)
            for code in sorted(codes):
                try:
                    with self.db.atomic():
                        samples.decide(self.db, station, code, now)
                except sqlite3.Error:
                    raise
                except Exception:
                    log.exception("pre-market decision failed for sample %s at %s", code, station)


def _track_seqs(db: sqlite_utils.Database, station: str, seqs: list[int], now: datetime) -> None:
    """Advance the station's high-water mark over sorted new `seqs`; record and fill gaps."""
    high = int(db.execute("SELECT high_seq FROM stations WHERE id = ?", [station]).fetchone()[0])
    stamp = now.isoformat()
    for seq in seqs:
        if seq > high:
            if seq > high + 1:
                db.execute(
                    "INSERT INTO seq_gaps (station, first_seq, last_seq, detected_at) VALUES (?, ?, ?, ?)",
                    [station, high + 1, seq - 1, stamp],
                )
            high = seq
            continue
        gap = db.execute(
            "SELECT id, first_seq, last_seq, detected_at FROM seq_gaps WHERE station = ? AND closed_at IS NULL"
            " AND first_seq <= ? AND last_seq >= ?",
            [station, seq, seq],
        ).fetchone()
        if gap is None:
            continue  # a seq seen before under another id: nothing to fill
        gap_id, first, last, detected = gap
        if first == last:
            db.execute("UPDATE seq_gaps SET closed_at = ? WHERE id = ?", [stamp, gap_id])
        elif seq == first:
            db.execute("UPDATE seq_gaps SET first_seq = ? WHERE id = ?", [seq + 1, gap_id])
        elif seq == last:
            db.execute("UPDATE seq_gaps SET last_seq = ? WHERE id = ?", [seq - 1, gap_id])
        else:
            db.execute("UPDATE seq_gaps SET last_seq = ? WHERE id = ?", [seq - 1, gap_id])
            db.execute(
                "INSERT INTO seq_gaps (station, first_seq, last_seq, detected_at) VALUES (?, ?, ?, ?)",
                [station, seq + 1, last, detected],
            )
    db.execute("UPDATE stations SET high_seq = ? WHERE id = ?", [high, station])


def process_batch(db: sqlite_utils.Database, messages: Sequence[Inbound], settings: Settings) -> BatchOutcome:
    """Store a batch of received messages in ONE transaction; returns what to acknowledge.

    Raises only sqlite3.Error (the database itself failed: nothing was committed, retry the batch).
    """
    with transaction(db):
        batch = _Batch(db, settings)
        for msg in messages:
            try:
                station, kind = parse_topic(msg.topic)
            except ValueError as exc:
                _dead_letter(db, msg, _payload_text(msg.payload), str(exc))
                batch.out.dead_letters += 1
                continue
            if kind not in ("result", "status"):
                _dead_letter(db, msg, _payload_text(msg.payload), f"unexpected topic kind {kind!r}", station)
                batch.out.dead_letters += 1
                continue
            snap = batch.snapshot()
            try:
                with db.atomic():  # a savepoint per message: a failure undoes only this message
                    if kind == "result":
                        batch.result_message(msg, station)
                    else:
                        batch.status_message(msg, station)
            except sqlite3.Error:
                raise
            except Exception as exc:
                # A bug must not stop ingest: the message is dead-lettered with the error and acked.
                log.exception("ingest failed on a message on %s", msg.topic)
                batch.restore(snap)
                _dead_letter(
                    db,
                    msg,
                    _payload_text(msg.payload),
                    f"internal error: {type(exc).__name__}: {exc}",
                    station,
                )
                batch.out.dead_letters += 1
        batch.finish()
    return batch.out


def _broker(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an mqtt:// (1883) or mqtts:// (8883, TLS) broker URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker url must look like mqtt://host:port or mqtts://host:port, not {url!r}")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


class MqttLink:
    """A paho client that connects, (re)subscribes on every connect, and publishes. Thread-safe publish."""

    def __init__(
        self,
        settings: Settings,
        subscriptions: Sequence[str] = (),
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        *,
        manual_ack: bool = False,
        name: str = "link",
    ) -> None:
        self.settings = settings
        self.subscriptions = tuple(subscriptions)
        v5 = settings.mqtt_protocol == "5"
        # A persistent session (the ingest worker's stable client id): the broker keeps its subscriptions
        # and queues QoS 1 results while it is down, instead of dropping them until gateways re-send.
        self.persistent = name == "ingest" and bool(settings.ingest_client_id)
        client_id = (
            str(settings.ingest_client_id)
            if self.persistent
            else f"{settings.mqtt_client_id}-{name}-{uuid.uuid4().hex[:8]}"
        )
        if v5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=not self.persistent,
                protocol=mqtt.MQTTv311,
                manual_ack=manual_ack,
            )
        set_tcp_nodelay(self.client)
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self.connected = threading.Event()
        """Set once connected AND (if any) subscribed; cleared on disconnect."""
        self._suback_mid: int | None = None
        self.session = 0
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *_args: self.connected.clear()
        if on_message is not None:
            handler = on_message
            self.client.on_message = lambda _c, _u, message: handler(message)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        self.session += 1  # clean start: message ids of the previous connection are void
        if not self.subscriptions:
            self.connected.set()
            return
        _, mid = client.subscribe([(sub, 1) for sub in self.subscriptions])
        self._suback_mid = mid

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._suback_mid:
            return
        for sub, rc in zip(self.subscriptions, reason_codes, strict=False):
            if rc.is_failure:
                log.error("broker refused subscription %s: %s", sub, rc)
        self.connected.set()  # ready: connected and subscribed

    def start(self) -> None:
        host, port, tls = _broker(self.settings.broker_url or "")
        if tls:
            ca = self.settings.mqtt_ca_file
            self.client.tls_set(ca_certs=str(ca) if ca is not None else None)
        if self.persistent and self.settings.mqtt_protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.ingest_session_expiry_s
            self.client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_retained(self, topic_name: str, payload: bytes, timeout: float) -> bool:
        """Publish retained at QoS 1 and wait for the broker's PUBACK (the `configs.Publisher` protocol)."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic_name, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def publish(
        self, topic_name: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic_name, payload, qos=qos, retain=retain)


def result_subscription(settings: Settings) -> str:
    group = settings.ingest_shared_group
    if group and settings.mqtt_protocol == "5":
        return f"$share/{group}/{RESULT_FILTER}"
    return RESULT_FILTER


class IngestWorker:
    """Receives from the broker, commits in batches, then acks (MQTT PUBACK + application Ack)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        on_commit: Callable[[], None] | None = None,
        metrics: CloudMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit
        self.metrics = metrics
        self._queue: queue.Queue[Inbound] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.link = MqttLink(
            settings,
            (result_subscription(settings), STATUS_FILTER),
            self._on_message,
            manual_ack=True,
            name="ingest",
        )
        self.committed_batches = 0
        self.last_outcome: BatchOutcome | None = None

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            Inbound(
                topic=message.topic if isinstance(message.topic, str) else str(message.topic),
                payload=bytes(message.payload),
                received_at=self.clock.now(),
                mid=message.mid,
                qos=message.qos,
                session=self.link.session,
            )
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kj-ingest", daemon=True)
        self._thread.start()
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _next_batch(self) -> list[Inbound]:
        """Up to `ingest_batch_size` messages: wait at most `ingest_batch_wait_s` for the batch to fill, but
        stop early when the stream pauses for `IDLE_S` (the broker's in-flight window is full or the burst
        is over — waiting longer would only add latency)."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.ingest_batch_wait_s
        while len(batch) < self.settings.ingest_batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=min(remaining, IDLE_S)))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        db = connect(self.settings.db_path)
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if batch:
                    self._commit_and_ack(db, batch)
        finally:
            db.close()

    def _puback(self, batch: list[Inbound]) -> None:
        for msg in batch:
            if msg.qos > 0 and msg.session == self.link.session:
                self.link.client.ack(msg.mid, msg.qos)

    def _commit_and_ack(self, db: sqlite_utils.Database, batch: list[Inbound]) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                outcome = process_batch(db, batch, self.settings)
                break
            except sqlite3.Error:
                log.exception("ingest commit failed; retrying the batch of %d", len(batch))
                if self._stop.wait(delay):
                    return  # shutting down: unacked messages are redelivered / re-sent by gateways
                delay = min(delay * 2, 5.0)
            except Exception:
                # Cannot happen by design (process_batch contains per-message failures); if it does,
                # keep the worker alive and let the gateways re-send after their ack timeout.
                log.exception("ingest batch failed; %d messages not acknowledged to gateways", len(batch))
                self._puback(batch)  # free the broker's in-flight window; gateways re-send later
                return
        self._puback(batch)
        for station, ack in outcome.acks.items():
            self.link.publish(f"kj/v1/{station}/ack", ack.to_ack().model_dump_json(), qos=1)
        self.committed_batches += 1
        self.last_outcome = outcome
        if self.metrics is not None:
            self.metrics.batch_done(
                len(batch),
                time.monotonic() - started,
                stored=outcome.stored,
                duplicates=outcome.duplicates,
                rejected=outcome.rejected,
                dead=outcome.dead_letters,
                statuses=outcome.statuses,
            )
        if self.on_commit is not None and (outcome.stored or outcome.statuses):
            self.on_commit()
