"""What an ingest batch answers and records besides the rows it stores (used by `cloud.ingest.process_batch`):
each station's application ack (`StationAck`: the ids and seqs stored, the items rejected with the hash of each
as received), the batch's counts (`BatchOutcome`), and the dead letters — a refused message or item kept as
received (UTF-8 text, else hex; truncated past `MAX_DEAD_LETTER_CHARS`) with the reason, the station, the id
and the hashes.

Does not: decide what is refused or stored (cloud.ingest, cloud.ingest_checks), publish acks
(cloud.ingest_worker), or read dead letters back (cloud.queries.list_dead_letters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloud.db import Database
from cloud.ingest_checks import Inbound
from kuaijian_schema import Ack, Rejection, payload_sha256

MAX_DEAD_LETTER_CHARS = 256 * 1024
_TEXT_JSON = json.JSONEncoder(ensure_ascii=False)
"""Made once: json.dumps with options builds a new encoder on every call."""


@dataclass
class StationAck:
    ids: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def to_ack(self) -> Ack:
        return Ack.model_validate({"ids": self.ids, "seqs": self.seqs, "rejected": self.rejected})

    def to_json(self) -> str:
        """The `Ack` as JSON, built directly (ids are already canonical UUID strings): no per-id parsing."""
        return _TEXT_JSON.encode(
            {"ids": self.ids, "seqs": self.seqs, "rejected": [r.model_dump() for r in self.rejected]}
        )


@dataclass
class BatchOutcome:
    acks: dict[str, StationAck] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    dead_letters: int = 0
    cases_touched: set[int] = field(default_factory=set)


def payload_text(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = "hex:" + payload.hex()
    if len(text) > MAX_DEAD_LETTER_CHARS:
        text = text[:MAX_DEAD_LETTER_CHARS] + "…[truncated]"
    return text


def item_text(item: dict[str, Any]) -> str:
    try:
        text = json.dumps(item, ensure_ascii=True, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - json.loads output always re-serialises
        text = repr(item)
    return text[:MAX_DEAD_LETTER_CHARS]


def dead_letter(
    db: Database,
    msg: Inbound,
    payload: str,
    reason: str,
    station: str | None = None,
    result_id: str | None = None,
    sha256: str | None = None,
    stored_sha256: str | None = None,
) -> None:
    # U+0000 cannot be stored as PostgreSQL text (and the data layer refuses it): escaped, as JSON would
    texts = [msg.topic[:1024], payload, reason[:2000], station, result_id]
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, station, result_id, sha256,"
        " stored_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            msg.received_at.isoformat(),
            *(None if t is None else t.replace("\x00", "\\u0000") for t in texts),
            sha256,
            stored_sha256,
        ],
    )


def item_sha256(item: dict[str, Any]) -> str | None:
    """`payload_sha256` of a received item; None when canonical JSON cannot encode it (NaN, …)."""
    try:
        return payload_sha256(item)
    except (TypeError, ValueError, RecursionError):
        return None
