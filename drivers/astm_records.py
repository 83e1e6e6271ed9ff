"""ASTM E1394 (CLSI LIS2-A2) records: H, P, O, R, Q, L ⇄ record text — pure.

Does: typed, frozen records and their text (`encode_record(rec) -> bytes` ending in CR,
`decode_record(text) -> Record`), with the delimiters the header declares (field ``|``, repeat ``\\``,
component ``^``, escape ``&``) and the escape sequences ``&F& &S& &R& &E&`` for text that holds a
delimiter. Text is UTF-8 (product names are Chinese; LIS2-A2 leaves the character set to agreement).
`check_message(records)` checks a message's shape (H first, L last, sequence numbers 1, 2, … per type
level). Field positions: docs/protocols/astm.md.

Does not: frame, checksum or transmit (`drivers.astm_framing`, `drivers.astm_serial`), or decide what
a gold reader's values mean (`drivers.astm_serial` maps records to `GoldReading`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.errors import FrameError, ProtocolError

FIELD: Final = "|"
REPEAT: Final = "\\"
COMPONENT: Final = "^"
ESCAPE: Final = "&"
DELIMITER_DEF: Final = REPEAT + COMPONENT + ESCAPE  # H field 2
_ESCAPES: Final = ((ESCAPE, "&E&"), (FIELD, "&F&"), (REPEAT, "&R&"), (COMPONENT, "&S&"))


def escape(text: str) -> str:
    """Text as a field/component value: delimiters replaced by their escape sequences; no CR allowed."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"record values cannot hold CR/LF: {text!r}")
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    return text


def unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    table = {esc: raw for raw, esc in _ESCAPES}
    while i < len(text):
        if text[i] == ESCAPE:
            seq = text[i : i + 3]
            if seq not in table:
                raise FrameError(f"unknown escape sequence {seq!r}")
            out.append(table[seq])
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def components(*parts: str) -> str:
    """One field made of components (each escaped); trailing empty components dropped."""
    items = [escape(p) for p in parts]
    while items and not items[-1]:
        items.pop()
    return COMPONENT.join(items)


def split_components(field: str) -> tuple[str, ...]:
    return tuple(unescape(p) for p in field.split(COMPONENT))


def _component(field: str, index: int) -> str:
    parts = split_components(field)
    return parts[index] if index < len(parts) else ""


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise ProtocolError(f"{what} {text!r} is not a number")
    return int(text)


@dataclass(frozen=True, slots=True)
class Header:
    """H: who sends (`sender` = vendor ^ model ^ firmware ^ serial), to whom, when (YYYYMMDDHHMMSS)."""

    sender: tuple[str, ...] = ()
    receiver: str = ""
    timestamp: str = ""
    processing_id: str = "P"
    version: str = "LIS2-A2"


@dataclass(frozen=True, slots=True)
class Patient:
    """P: here the producer (生产主体) the sample came from, when the analyzer knows it."""

    seq: int = 1
    patient_id: str = ""


@dataclass(frozen=True, slots=True)
class Order:
    """O: the sample (specimen id), the analyzer's record number ^ channel, the test (kit), the
    product (specimen descriptor) and the operator (collector id)."""

    seq: int
    specimen_id: str
    record_no: int
    channel: int
    test: str
    product: str = ""
    operator: str = ""
    report_type: str = "F"


@dataclass(frozen=True, slots=True)
class Result:
    """R: one measured value of the order's test; `kind` names it (component 4 of the test id)."""

    seq: int
    test: str
    kind: str
    value: str
    units: str = ""
    status: str = "F"
    completed_at: str = ""  # YYYYMMDDHHMMSS


@dataclass(frozen=True, slots=True)
class Query:
    """Q: the host asks for record `record` (a number, or "LAST" for the newest)."""

    seq: int
    record: str
    status: str = "F"


@dataclass(frozen=True, slots=True)
class Terminator:
    """L: end of message; code N normal, I no information for the last query, Q error in the query."""

    seq: int = 1
    code: str = "N"


Record = Header | Patient | Order | Result | Query | Terminator


def _fields(rec: Record) -> list[str]:
    match rec:
        case Header():
            return [
                "H",
                DELIMITER_DEF,
                "",
                "",
                components(*rec.sender),
                "",
                "",
                "",
                "",
                escape(rec.receiver),
                "",
                escape(rec.processing_id),
                escape(rec.version),
                escape(rec.timestamp),
            ]
        case Patient():
            return ["P", str(rec.seq), escape(rec.patient_id)]
        case Order():
            f = ["O", str(rec.seq), escape(rec.specimen_id), f"{rec.record_no}^{rec.channel}"]
            f += [components("", "", "", rec.test), "R"] + [""] * 4
            f += [escape(rec.operator)] + [""] * 4 + [escape(rec.product)] + [""] * 9 + [rec.report_type]
            return f
        case Result():
            return [
                "R",
                str(rec.seq),
                components("", "", "", rec.test, rec.kind),
                rec.value,  # a number or a repeat list of numbers: never escaped text
                escape(rec.units),
                "",
                "",
                "",
                escape(rec.status),
                "",
                "",
                "",
                escape(rec.completed_at),
            ]
        case Query():
            return ["Q", str(rec.seq), components("", rec.record), "", "^^^ALL"] + [""] * 7 + [rec.status]
        case Terminator():
            return ["L", str(rec.seq), rec.code]
    raise TypeError(f"not a record: {rec!r}")


def encode_record(rec: Record) -> bytes:
    """Record text (UTF-8) ending with CR; trailing empty fields are not sent."""
    fields = _fields(rec)
    while fields and not fields[-1]:
        fields.pop()
    return (FIELD.join(fields) + "\r").encode("utf-8")


def decode_record(text: bytes) -> Record:
    """Inverse of `encode_record`. Malformed text raises FrameError, impossible values ProtocolError."""
    try:
        line = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"record is not UTF-8: {text[:40]!r}") from exc
    line = line.removesuffix("\r")
    if "\r" in line or not line:
        raise FrameError(f"not one record: {line[:40]!r}")
    if line.startswith("H"):
        if line[1:5] != FIELD + DELIMITER_DEF:
            raise FrameError(f"header does not declare the delimiters |\\^&: {line[:8]!r}")
        f = line.split(FIELD)
    else:
        f = line.split(FIELD)
    f += [""] * (30 - len(f))

    def seq() -> int:
        return _int(f[1], f"{f[0]} sequence number")

    kind = f[0]
    if kind == "H":
        return Header(
            sender=split_components(f[4]) if f[4] else (),
            receiver=unescape(f[9]),
            timestamp=unescape(f[13]),
            processing_id=unescape(f[11]),
            version=unescape(f[12]),
        )
    if kind == "P":
        return Patient(seq(), unescape(f[2]))
    if kind == "O":
        rec_no, _, channel = f[3].partition(COMPONENT)
        return Order(
            seq=seq(),
            specimen_id=unescape(f[2]),
            record_no=_int(rec_no, "O record number"),
            channel=_int(channel, "O channel"),
            test=_component(f[4], 3),
            operator=unescape(f[10]),
            product=unescape(f[15]),
            report_type=f[25],
        )
    if kind == "R":
        return Result(
            seq=seq(),
            test=_component(f[2], 3),
            kind=_component(f[2], 4),
            value=f[3],
            units=unescape(f[4]),
            status=unescape(f[8]),
            completed_at=unescape(f[12]),
        )
    if kind == "Q":
        return Query(seq(), _component(f[2], 1), f[12])
    if kind == "L":
        return Terminator(seq(), f[2])
    raise FrameError(f"unknown record type {kind!r}")


def check_message(records: list[Record]) -> None:
    """A message is H … L; P, O, R, Q sequence numbers count from 1 at their level (E1394 7.1.2)."""
    if len(records) < 2 or not isinstance(records[0], Header) or not isinstance(records[-1], Terminator):
        raise ProtocolError("a message must start with H and end with L")
    counters: dict[type, int] = {}
    for rec in records[1:-1]:
        if isinstance(rec, Header | Terminator):
            raise ProtocolError(f"{type(rec).__name__} inside a message")
        t = type(rec)
        if t is Patient:
            counters = {Patient: counters.get(Patient, 0)}
        elif t is Order:
            counters = {Patient: counters.get(Patient, 0), Order: counters.get(Order, 0)}
        want = counters.get(t, 0) + 1
        if rec.seq != want:
            raise ProtocolError(f"{t.__name__} record with sequence number {rec.seq}, expected {want}")
        counters[t] = want
