"""MQTT ingest: validate, verify, store idempotently, then acknowledge.

`process_batch(db, messages, settings)` is the pure-ish core. Before its transaction (so several workers do
this in parallel, whatever stations they hold) it splits each result-topic message's payload
(`kuaijian_schema.split_result_payload`) and per result looks up the station key (station from the topic),
verifies the HMAC on the received dict, validates it as `kuaijian_schema.Result` and checks that the
payload's station is the topic's station; then, in ONE transaction holding its stations' locks, it
stores it once by id (a redelivery is a no-op but is acknowledged again; the same id with other validly signed
content — in any spelling of the UUID — is a conflicting duplicate: dead-lettered with both hashes, never acked
as stored). Rejected results go to ``dead_letters`` with the reason and are listed in the ack's `rejected` with
the SHA-256 of the item as received (when it carries an id and an integer seq): the gateway applies such a
rejection only to a stored result with exactly that content, so nothing unverified changes a result's fate.
Times are stored in UTC; an implausible measured_at is flagged and replaced by the receive time (the sent
one is kept). New results advance the station's seq high-water mark: a jump records a gap in ``seq_gaps``; a
late result shrinks/closes the gap it fills; a seq beyond `max_seq_jump` is flagged and moves nothing. New positives and
suspects go through `cloud.cases.on_result` (these effects of a batch live in `cloud.ingest_effects`). An item with ``"kind": "sample"`` is a signed
`SampleRegistration` (same verification, idempotence, seq tracking and ack); it is stored by
`cloud.samples.store_registration` or rejected with the reason (unknown producer, producer of another village,
duplicate code). After the batch, `cloud.samples.decide` re-decides every batch a new result or registration
touches (可上市 + certificate / 暂停上市 / 需复检). Status messages update the station row (online, backlog,
oldest unsent age, …) in arrival order.

Per-message cost does not grow with the batch: stations and already-stored ids are looked up once per batch
(under the batch's station locks, so the lookup is the truth for those stations), the new rows go in with one
COPY (PostgreSQL; SQLite: a few multi-row INSERTs, `Database.insert_rows`), and there is no savepoint or
snapshot per message, nor a pass of the cyclic garbage collector over the batch's objects (`cloud.gcpause`)
— a message that raises rolls the batch back to one savepoint and the batch runs again with it dead-lettered.
An id that another worker stored meanwhile under another station's topic makes the insert fail in the unique
index; the batch then runs again and finds it (`RACE_RERUNS`).

The MQTT side (receiving, batching, PUBACK and publishing the acks) is `cloud.ingest_worker`.

Never crashes on input: every failure of one message or one result becomes a dead letter.

Does not: MQTT, HTTP, or open the database for anybody else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from cloud import gcpause, ingest_effects, samples
from cloud.clock import utc_iso
from cloud.db import Database, transaction
from cloud.errors import DatabaseError, IntegrityViolation, Invalid
from cloud.ingest_checks import (
    NUL_ESCAPE,
    SQLITE_MAX_INT,
    Check,
    Checked,
    Inbound,
    check_batch,
    has_nul,
    keys_now,
    parse_topics,
    schema_reason,
)
from cloud.ingest_effects import Stored
from cloud.ingest_outcome import BatchOutcome, StationAck, dead_letter, item_sha256, item_text, payload_text
from cloud.settings import Settings
from kuaijian_schema import Rejection, SampleRegistration, Status
from kuaijian_schema.wire import loads

log = logging.getLogger(__name__)

__all__ = ["RACE_RERUNS", "BatchOutcome", "Inbound", "StationAck", "process_batch"]
"""`Inbound` (cloud.ingest_checks), `BatchOutcome` and `StationAck` (cloud.ingest_outcome) are part of this
module's surface: what `process_batch` takes and returns."""

_RESULT_COLUMNS = (
    "id", "seq", "station", "node_id", "instrument_serial", "instrument_model", "instrument_driver",
    "sample_id", "product", "producer", "sampled_at", "method", "analyte", "channel", "measured_at", "verdict",
    "values_json", "qc_json", "algorithm", "config_version", "raw_json", "operator", "sig", "received_at",
    "sha256", "ingest_flags", "measured_at_sent",
)  # fmt: skip
RACE_RERUNS = 3
"""Times a batch runs again, within its transaction, after another worker stored one of its new ids first."""


class _Batch:
    """State of one `process_batch` run inside its transaction (station lookups cached for the batch)."""

    def __init__(self, db: Database, settings: Settings, checked: Checked) -> None:
        self.db = db
        self.settings = settings
        self.checked = checked
        self.out = BatchOutcome()
        self._stations: dict[str, tuple[tuple[bytes, ...], int] | None] = {}
        self.new: list[Stored] = []
        self._high: dict[str, int] = {}
        self._high_start: dict[str, int] = {}  # high_seq as stored when the batch began
        self._existing: dict[str, tuple[str | None, str]] = {}  # stored before the batch: id -> (sha256, sig)
        self._queued: dict[str, tuple[str | None, str]] = {}  # new in this batch: id -> (sha256, sig)
        self._rows: list[tuple[Any, ...]] = []  # their rows, inserted by _flush
        self.new_samples: list[tuple[SampleRegistration, datetime]] = []
        self._past = timedelta(days=settings.plausible_past_days)
        self._future = timedelta(seconds=settings.plausible_future_s)

    def _prefetch(self, messages: Sequence[Inbound], topics: Sequence[tuple[str, str] | str]) -> None:
        """Look up every station the batch names and every result id it carries in one query each (instead
        of one per station and one per result), under the batch's locks."""
        parsed = self.checked.parsed
        ids = sorted(
            {
                i["id"]
                for v in parsed.values()
                if isinstance(v, list)
                for i in v
                if isinstance(i.get("id"), str)
            }
        )
        for rid, sha, sig in self.db.rows_in("SELECT id, sha256, sig FROM results", "id", ids):
            self._existing[str(rid)] = (sha, str(sig))
        if not messages:
            return
        now = messages[0].received_at.isoformat()
        names = sorted({t[0] for t in topics if not isinstance(t, str)})
        sql = "SELECT id, key, node_id, previous_key, previous_key_until, high_seq FROM stations"
        for row in self.db.rows_in(sql, "id", names):
            self._remember(str(row[0]), row[1:], now)

    def _look_up(self, rid: str) -> None:
        row = self.db.execute("SELECT sha256, sig FROM results WHERE id = ?", [rid]).fetchone()
        if row is not None:
            self._existing[rid] = (row[0], str(row[1]))

    def _remember(self, station: str, row: Sequence[Any], now: str) -> None:
        self._stations[station] = (keys_now(row[0], row[2], row[3], now), int(row[1]))
        self._high_start[station] = self._high[station] = int(row[4])

    def station(self, station: str, now: datetime) -> tuple[tuple[bytes, ...], int] | None:
        """(keys that verify now, grid node) of an enrolled station: its key, plus the key replaced by the
        last rotation while its grace period lasts."""
        if station not in self._stations:
            row = self.db.execute(
                "SELECT key, node_id, previous_key, previous_key_until, high_seq FROM stations WHERE id = ?",
                [station],
            ).fetchone()
            if row is None:
                self._stations[station] = None
            else:
                self._remember(station, row, now.isoformat())
        return self._stations[station]

    def run(
        self, messages: Sequence[Inbound], topics: Sequence[tuple[str, str] | str], poison: dict[int, str]
    ) -> bool:
        """Process `messages` (`topics`: each one's (station, kind) or why its topic is not one; those in
        `poison` are dead-lettered with their recorded error instead). False when one raised: its error is
        added to `poison` and the caller rolls this run back."""
        self._prefetch(messages, topics)
        parsed = self.checked.parsed
        for n, msg in enumerate(messages):
            topic = topics[n]
            if isinstance(topic, str):
                dead_letter(self.db, msg, payload_text(msg.payload), topic)
                self.out.dead_letters += 1
                continue
            station, kind = topic
            if kind not in ("result", "status"):
                dead_letter(
                    self.db, msg, payload_text(msg.payload), f"unexpected topic kind {kind!r}", station
                )
                self.out.dead_letters += 1
                continue
            if n in poison:
                dead_letter(self.db, msg, payload_text(msg.payload), poison[n], station)
                self.out.dead_letters += 1
                continue
            try:
                if kind == "result":
                    self.result_message(msg, station, parsed[n], self.checked.checks.get(n, []))
                else:
                    self.status_message(msg, station)
            except DatabaseError:
                raise
            except Exception as exc:
                # A bug must not stop ingest: the message is dead-lettered with the error (and acked).
                log.exception("ingest failed on a message on %s", msg.topic)
                poison[n] = f"internal error: {type(exc).__name__}: {exc}"
                return False
        self._flush()
        return True

    def _flush(self) -> None:
        """Insert the batch's new results in one COPY (PostgreSQL; SQLite: a few multi-row INSERTs). They are
        new: every id was looked up under the batch's station locks (SQLite: the file lock); only a result
        stored meanwhile under another station's topic raises IntegrityViolation (`process_batch` runs the
        batch again)."""
        if self._rows:
            self.db.lock_rowid_order()  # rowids visible in the order given: the live feed skips none
            self.db.insert_rows("results", _RESULT_COLUMNS, self._rows)
            self._rows.clear()

    def ack(self, station: str) -> StationAck:
        return self.out.acks.setdefault(station, StationAck())

    def reject(
        self, msg: Inbound, station: str, item: dict[str, Any], reason: str, digest: str | None = None
    ) -> None:
        """Dead-letter `item` and, when it names an id and a seq, tell the station in its ack — with the
        SHA-256 of the item as received, so the gateway applies it only to a stored result with exactly this
        content (a message forged under a real id/seq changes nothing there)."""
        rid = item.get("id")
        seq = item.get("seq")
        rid_s = rid if isinstance(rid, str) and len(rid) <= 64 else None
        seq_i = (
            seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= SQLITE_MAX_INT else None
        )
        digest = digest or item_sha256(item)
        dead_letter(self.db, msg, item_text(item), reason, station, rid_s, digest)
        self.out.rejected += 1
        self.out.dead_letters += 1
        if rid_s is not None and seq_i is not None and digest is not None:
            self.ack(station).rejected.append(Rejection(id=rid_s, seq=seq_i, reason=reason, sha256=digest))

    def result_message(
        self, msg: Inbound, station: str, items: list[dict[str, Any]] | str, checks: list[Check]
    ) -> None:
        if isinstance(items, str):  # could not be decoded: the reason
            dead_letter(self.db, msg, payload_text(msg.payload), items, station)
            self.out.dead_letters += 1
            return
        received = msg.received_at.isoformat()
        for item, check in zip(items, checks, strict=True):
            self.result_item(msg, received, station, item, check)

    def result_item(
        self, msg: Inbound, received: str, station: str, item: dict[str, Any], check: Check
    ) -> None:
        """`received`: the message's receive time as stored (ISO 8601); `check`: what `check_item` found
        before the transaction."""
        known = self.station(station, msg.received_at)
        if known is None:
            self.reject(msg, station, item, f"unknown station {station}")
            return
        node_id = known[1]
        digest = check.digest
        if check.reason is not None:
            self.reject(msg, station, item, check.reason, digest)
            return
        if check.result is None:  # a verified sample registration
            self.sample_item(msg, station, item, node_id)
            return
        result = check.result
        rid = str(result.id)
        flags: list[str] = []
        measured_at = result.measured_at
        if not msg.received_at - self._past <= measured_at <= msg.received_at + self._future:
            flags.append("implausible_time")
            measured_at = msg.received_at  # reported by receive time; the station's time is kept as sent
        if result.seq > self.high_seq(station) + self.settings.max_seq_jump:
            flags.append("seq_jump")
        if rid != item["id"] and rid not in self._existing:  # sent in another spelling than the stored one
            self._look_up(rid)
        prior = self._queued.get(rid) or self._existing.get(rid)
        if prior is None:
            self._rows.append(
                (
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
                    orjson.dumps(result.values).decode(),  # verified, validated: finite floats, strings
                    orjson.dumps(result.qc).decode() if result.qc else "[]",
                    result.algorithm,
                    result.config_version,
                    None if result.raw is None else result.raw.model_dump_json(),
                    result.operator,
                    result.sig,
                    received,
                    digest,
                    orjson.dumps(flags).decode() if flags else "[]",
                    result.measured_at.isoformat() if "implausible_time" in flags else None,
                )
            )
            self._queued[rid] = (digest, result.sig)
            self.out.stored += 1
            self.new.append(Stored(result, node_id, msg.received_at, measured_at, "seq_jump" in flags))
            if "seq_jump" not in flags:
                self._high[station] = max(self._high[station], result.seq)
        else:
            stored_sha, stored_sig = prior
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
        dead_letter(self.db, msg, item_text(item), reason, station, rid, digest, stored)
        self.out.rejected += 1
        self.out.dead_letters += 1
        seq = item.get("seq")
        if digest is not None and isinstance(seq, int):
            self.ack(station).rejected.append(Rejection(id=rid, seq=seq, reason=reason, sha256=digest))

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
            self.reject(msg, station, item, schema_reason(exc))
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
            doc = loads(msg.payload)
            status = Status.model_validate(doc)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._status_dead(msg, station, f"status is not UTF-8 JSON: {exc}")
            return
        except ValidationError as exc:
            self._status_dead(msg, station, "status " + schema_reason(exc))
            return
        except RecursionError:
            self._status_dead(msg, station, "status nested too deeply")
            return
        if NUL_ESCAPE in msg.payload and has_nul(doc):
            self._status_dead(msg, station, "status text contains U+0000")
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
            " last_seen = CASE WHEN ? = 1 AND (last_seen IS NULL OR last_seen < ?) THEN ? ELSE last_seen END"
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
        dead_letter(self.db, msg, payload_text(msg.payload), reason, station)
        self.out.dead_letters += 1

    def finish(self) -> None:
        """Seq tracking, station last_seen, case rules and pre-market decisions for what this batch stored."""
        self.out.cases_touched |= ingest_effects.apply(
            self.db, self.settings, self.new, self.new_samples, self._high_start, self.high_seq
        )


def process_batch(db: Database, messages: Sequence[Inbound], settings: Settings) -> BatchOutcome:
    """Store a batch of received messages in ONE transaction; returns what to acknowledge.

    The batch runs without a savepoint per message: nothing in it is expected to fail. If a message does
    raise (a bug), what the batch did so far is rolled back to one savepoint and the batch runs again with that
    message dead-lettered with the error instead of processed — one bad message undoes only itself, at the cost
    of one more run, and the common case pays no per-message snapshot or savepoint.

    The cyclic garbage collector is paused meanwhile (`cloud.gcpause`): the batch's objects die with it.

    Raises only DatabaseError (the database itself failed: nothing was committed, retry the batch).
    """
    with gcpause.paused():
        return _process(db, messages, settings)


def _process(db: Database, messages: Sequence[Inbound], settings: Settings) -> BatchOutcome:
    poison: dict[int, str] = {}
    races = 0
    topics = parse_topics(messages)
    # on PostgreSQL the transaction locks the rows of the stations the batch writes for, so two workers holding
    # results of one station apply them one after the other (seq tracking stays right) while workers holding
    # different stations commit in parallel
    stations = sorted({t[0] for t in topics if not isinstance(t, str)})
    checked = check_batch(db, messages, topics, poison)  # before the locks: in parallel with other workers
    with transaction(db, stations=stations):
        while True:
            db.execute("SAVEPOINT kj_batch")
            batch = _Batch(db, settings, checked)
            try:
                done = batch.run(messages, topics, poison)
            except IntegrityViolation:
                # another worker committed one of our new ids first (under another station's topic, so not
                # behind our station locks): run again, and the lookup sees it
                if races == RACE_RERUNS:
                    raise
                races += 1
                done = False
            if done:
                batch.finish()
                db.execute("RELEASE kj_batch")
                return batch.out
            db.execute("ROLLBACK TO kj_batch")
            db.execute("RELEASE kj_batch")
