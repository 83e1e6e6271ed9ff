"""The values the outbox takes and gives (frozen dataclasses) and its policy constants.

Does: describe results to enqueue (`Draft`, `RecordDrafts`; `Sealed` and `SealedBatch` for a draft sealed
where it was made), what enqueueing and acks did (`Enqueued`,
`AckOutcome`), the acquisition bookkeeping (`Cursor`, `MemoryReset`) and the figures for the status
(`OutboxStats`, `RejectedRow`); `PRIORITY` (send order by verdict), `KEEP_RECORD_KEYS` (default of
`storage.keep_record_keys`) and the bounds of the outbox's history tables (`KEEP_CONFIGS`,
`KEEP_MEMORY_RESETS`, `KEEP_SKIPPED`). `gateway.outbox` re-exports all of them.

Does not: touch the database (`gateway.outbox`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from kuaijian_schema.wire import BodyParts, ResultBody, Signer, parts_wire

KEEP_RECORD_KEYS = 32
"""Default number of records per instrument, behind its cursor, whose de-duplication keys are kept."""
KEEP_CONFIGS = 20
"""Pushed station configs kept in `configs` besides the one in force (the newest stored): storing a config
deletes the older ones in the same transaction."""
KEEP_MEMORY_RESETS = 1000
"""Rows kept in `memory_resets` (the newest added): recording a memory reset deletes the older ones in the same
transaction."""
KEEP_SKIPPED = 1000
"""Rows kept in `skipped` (the newest added): skipping a record deletes the older ones in the same transaction;
`OutboxStats.skipped_total` counts every record ever skipped all the same (the `skipped` counter)."""
PRIORITY = {"positive": 3, "suspect": 2, "invalid": 1, "negative": 0}
"""Send priority by verdict: positives first (higher is sooner)."""


class SealedBatch(Protocol):
    """The batch of drafts a `Sealed` draft was sealed in, and where it was sealed (`gateway.offload`)."""

    @property
    def sign(self) -> Signer:
        """The signer it was sealed with: the outbox takes its payload only from an enqueue given this one."""
        ...

    def settled(self, guessed_next: int, actual_next: int) -> None:
        """Told by the enqueue that stored the batch's last draft, after its commit: the seq its sealer
        guessed would come next (the last draft's guess + 1) and the one that does — so that the sealer's
        next guesses are right again after another enqueue came first."""
        ...


class Sealed(NamedTuple):
    """A draft sealed where it was made, with the id and the seq it would get: its signed `payload` (as
    `kuaijian_schema.wire.seal_parts` makes it from the draft's parts). The outbox stores it as it is only
    when `seq` is the one the enqueue gives it and `batch.sign` the enqueue's signer; it seals the draft
    again (under the same `id`) otherwise."""

    id: str
    seq: int
    payload: bytes
    batch: SealedBatch


class Draft:
    """One result to enqueue: its line key within the record, send priority, and body in wire form.

    `wire` is the JSON object of a `kuaijian_schema.ResultBody` — every `Result` field except `id`, `seq`
    and `sig`, which the outbox adds — exactly as `ResultBody.wire()` gives it (`ResultBody.wire_of`
    makes it without validating a model per result; `body` is the typed, validated view). Its values are
    finite or None, as the model's are: the outbox seals it without looking for a NaN
    (`kuaijian_schema.wire.seal(..., finite=True)`).

    A draft may come already encoded instead (`parts`: the body's canonical JSON cut where the id, the seq
    and the signature go, `kuaijian_schema.wire.body_parts` — the interpretation process makes them): the
    outbox then seals it without encoding it again (`seal_parts`), and `wire` is decoded from them only if
    asked for. An encoded draft may come sealed too (`sealed`: the interpretation process seals it with the
    seq it guesses; the outbox checks the guess).
    """

    __slots__ = ("_wire", "line", "parts", "priority", "sealed")

    def __init__(
        self,
        line: str,
        priority: int,
        wire: dict[str, Any] | None = None,
        parts: BodyParts | None = None,
        sealed: Sealed | None = None,
    ) -> None:
        if wire is None and parts is None:
            raise ValueError("a draft needs its wire object or its encoded parts")
        if sealed is not None and parts is None:
            raise ValueError("a sealed draft needs its encoded parts (to be sealed again under another seq)")
        self.line = line
        self.priority = priority
        self._wire = wire
        self.parts = parts
        self.sealed = sealed

    @property
    def wire(self) -> dict[str, Any]:
        wire = self._wire
        if wire is None:
            if self.parts is None:  # __init__ keeps one or the other
                raise ValueError("a draft without its wire object or its parts")
            wire = self._wire = parts_wire(self.parts)
        return wire

    @classmethod
    def of(cls, line: str, priority: int, body: ResultBody) -> Draft:
        """The draft of a typed body."""
        return cls(line, priority, body.wire())

    @property
    def body(self) -> ResultBody:
        """`wire` as a validated `ResultBody` (made on each call: for inspection, not the hot path)."""
        return ResultBody.model_validate(self.wire)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Draft):
            return NotImplemented
        return (self.line, self.priority, self.wire) == (other.line, other.priority, other.wire)

    __hash__ = None  # type: ignore[assignment]  # mutable contents, like the dataclass it was

    def __repr__(self) -> str:
        return f"Draft(line={self.line!r}, priority={self.priority!r}, wire={self.wire!r})"


@dataclass(frozen=True, slots=True)
class RecordDrafts:
    """All results of one instrument record (they are committed together)."""

    record_no: int
    drafts: tuple[Draft, ...]


@dataclass(frozen=True, slots=True)
class Enqueued:
    seq: int
    id: str
    priority: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """Last record persisted from an instrument; `epoch` grows when its record memory restarts (counter
    went back, or the record at the cursor is no longer the one read: `identity`, see
    `drivers.readings.record_identity`; None when unknown, e.g. a skipped record)."""

    epoch: int
    last_record: int
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class MemoryReset:
    """An instrument whose memory was found cleared or replaced: a new cursor epoch was started."""

    instrument: str
    old_epoch: int
    new_epoch: int
    old_last_record: int
    latest: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class AckOutcome:
    acked: tuple[int, ...]  # seqs deleted now
    rejected: tuple[int, ...]  # seqs moved to the rejected table now
    unknown: int  # ack entries matching no outbox row (already acked: redelivered ack)
    ignored: int = 0  # rejections not naming exactly a pending row (id + seq + payload hash): nothing changed


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    oldest_enqueued_at: float | None
    last_seq: int
    enqueued_total: int
    acked_total: int
    rejected_total: int
    skipped_total: int  # records skipped as unreadable, ever (the `skipped` table keeps the newest only)
    config_version: str | None
    record_keys: int = 0  # de-duplication keys held in `records`
    record_keys_pruned: int = 0  # keys deleted behind the cursors, ever (their records stay known)

    def oldest_age_s(self, now: float | None = None) -> float | None:
        if self.oldest_enqueued_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_enqueued_at)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    seq: int
    id: str
    reason: str
    rejected_at: float
