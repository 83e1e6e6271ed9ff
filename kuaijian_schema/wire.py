"""MQTT wire contract (JSON, UTF-8), version kj/v1.

Topics, per station id (12-digit village code + "-" + 2-digit station number, e.g. 370214101203-01):
- kj/v1/{station}/result  gateway → cloud, QoS 1: one `Result` object or {"results": [Result, ...]}; an item
  with ``"kind": "sample"`` is a `SampleRegistration` (same id/seq/sig/ack rules as a result).
- kj/v1/{station}/ack     cloud → gateway, QoS 1: `Ack` — ids/seqs durably committed, and rejections.
- kj/v1/{station}/status  gateway → cloud, retained: `Status` (birth; last will = state "offline").
- kj/v1/{station}/config  cloud → gateway, retained: `StationConfig`, versioned.

Signing: `sig` = hex HMAC-SHA256(station key, canonical_json(result without "sig")), where canonical
JSON is sorted keys, no whitespace, UTF-8. Verification works on the received dict, never on a
re-serialised model, so no normalisation can break a valid signature. `seal` signs and serialises a
document with each value encoded once: the bytes signed are the stored (and sent) payload but for its "sig".
`loads` decodes a received message with orjson where that gives exactly what ``json.loads`` gives.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, FiniteFloat, StrictInt, TypeAdapter

from kuaijian_schema.specs import EnzymeSpec, StripSpec

PROTOCOL_VERSION = "kj/v1"
STATION_PATTERN = r"^\d{12}-\d{2}$"
_STATION_RE = re.compile(STATION_PATTERN)
TopicKind = Literal["result", "ack", "status", "config"]
VerdictName = Literal["negative", "positive", "suspect", "invalid"]


def topic(station: str, kind: TopicKind) -> str:
    """Topic of `kind` for `station`; raises ValueError for a malformed station id."""
    if not _STATION_RE.match(station):
        raise ValueError(f"station id {station!r} is not 12 digits + '-' + 2 digits")
    return f"{PROTOCOL_VERSION}/{station}/{kind}"


def parse_topic(name: str) -> tuple[str, str]:
    """(station, kind) of a kj/v1 topic; ValueError if it is not one."""
    parts = name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PROTOCOL_VERSION or not _STATION_RE.match(parts[2]):
        raise ValueError(f"not a {PROTOCOL_VERSION} station topic: {name!r}")
    return parts[2], parts[3]


_LOW62 = (1 << 62) - 1
_LOW48 = (1 << 48) - 1


class _Uuid7Source:
    """UUIDv7 (RFC 9562): 48-bit Unix ms, version 7, then 74 bits that start random within each ms and grow
    by a random step per id (the RFC's monotonic random method), so ids made by one process are strictly
    increasing even within one millisecond. One `os.urandom` call per batch; the text formatted in one step
    per id (the ms part once per batch)."""

    _RAND_BITS = 74
    _STEP_BITS = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = -1
        self._rand = 0

    def reset(self) -> None:
        """Start afresh (a forked child: it must not go on from the parent's random state, which the parent
        goes on from too, nor wait on a lock another thread of the parent held at the fork)."""
        self._lock = threading.Lock()
        self._ms = -1
        self._rand = 0

    def take(self, n: int) -> list[str]:
        entropy = os.urandom(4 * n + 10)
        steps = struct.unpack(f">{n}I", entropy[: 4 * n])
        out: list[str] = []
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._ms:
                # fresh start: the top random bit clear leaves room for 2**41 steps in this ms
                self._ms = ms
                self._rand = int.from_bytes(entropy[-10:]) >> (80 - self._RAND_BITS + 1)
            ms = self._ms
            rand = self._rand
            top = 1 << self._RAND_BITS
            head = _uuid7_head(ms)
            for step in steps:
                rand += 1 + step
                if rand >= top:  # 2**41 ids in one ms (never in practice): go on in the next ms
                    ms += 1
                    head = _uuid7_head(ms)
                    rand = step  # < 2**32: room to grow again
                # version 7 over the top 12 random bits, variant 0b10 over the low 62
                low = rand & _LOW62
                out.append(f"{head}{0x7000 | rand >> 62:04x}-{0x8000 | low >> 48:04x}-{low & _LOW48:012x}")
            self._ms, self._rand = ms, rand
        return out


def _uuid7_head(ms: int) -> str:
    """The first two groups of a UUIDv7 text: its 48-bit Unix ms."""
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-"


_UUID7 = _Uuid7Source()
os.register_at_fork(after_in_child=_UUID7.reset)


def new_result_ids(n: int) -> list[str]:
    """`n` fresh UUIDv7 result ids (strictly increasing in this process), as canonical strings."""
    return _UUID7.take(n)


def new_result_id() -> UUID:
    """A fresh UUIDv7 (time-ordered) result id."""
    return UUID(_UUID7.take(1)[0])


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""The reference canonical encoder (made once: json.dumps with options builds a new encoder on every call)."""

_FAST_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""orjson, sorted keys, refusing (→ the reference) what `json` would encode differently or refuse: dates,
dataclasses, subclasses of str/int/dict/list; non-str keys, ints beyond 64 bits and nesting deeper than 254
make orjson raise by itself."""
_NUMBER_CHARS = frozenset(b"0123456789.-")
_VALUE_START = frozenset(b":,[")
_DIGITS = frozenset(b"0123456789")
_EXPONENT = re.compile(rb"e-[0-9](?![0-9])")
_E_MINUS = re.compile(rb"e-")


def _spelled_apart(out: bytes) -> bool:
    """Whether orjson's output may hold a float spelled otherwise than by `repr` (conservative: text in a
    string that reads like such a number counts too, and only costs the reference encoding).

    The only two spellings in which they differ (measured over every decade and 2**21 random doubles; the
    properties in tests/kuaijian_schema/test_canonical_json.py): 1e-5 ≤ |x| < 1e-4 written positionally
    ("0.00001" for "1e-05"), and a one-digit negative exponent ("1e-7" for "1e-07"). A number begins the
    output or follows ':', ',' or '['."""
    i = out.find(b"0.0000")
    while i >= 0:
        j = i - 1 if i > 0 and out[i - 1] == 0x2D else i  # after a minus sign
        if j == 0 or out[j - 1] in _VALUE_START:
            return True
        i = out.find(b"0.0000", i + 1)
    if _E_MINUS.search(out) is not None:  # (a regex finds these two bytes faster than `in`)
        for m in _EXPONENT.finditer(out):
            j = m.start()
            if j == 0 or out[j - 1] not in _DIGITS:
                continue  # not a mantissa before the "e"
            while j > 0 and out[j - 1] in _NUMBER_CHARS:
                j -= 1
            if j == 0 or out[j - 1] in _VALUE_START:
                return True
    return False


def _non_finite(obj: Any) -> bool:
    """Whether a dict, list or tuple holds a NaN or an infinity (orjson writes null for them, `json` refuses
    them). Exact types only: anything else orjson refused already."""
    for v in obj.values() if type(obj) is dict else obj if type(obj) in (list, tuple) else (obj,):
        t = type(v)
        if t is float:
            if v - v != 0.0:  # NaN for NaN and ±inf, 0.0 for every finite float
                return True
        elif (t is dict or t is list or t is tuple) and _non_finite(v):
            return True
    return False


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: byte for byte `json.dumps(obj, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()` (the form every signature is made
    and checked over, on the gateway and in the cloud), raising where that raises (ValueError / TypeError).

    Encoded by orjson (~20× faster); whatever orjson refuses, and every output that may differ — a float in
    one of the two spellings where orjson and `repr` disagree (`_spelled_apart`), a null that stands for a
    NaN or an infinity, a tuple holding a null — is encoded again by the reference encoder, so the result
    is always the reference's. For JSON values (dict, list, tuple, str, int, float, bool, None — everything
    `json.loads` gives and `model_dump(mode="json")` makes) the identity is a tested property; a UUID or an
    Enum member, which `json` refuses, orjson encodes."""
    return _canonical(obj, finite=False)


def canonical_finite(obj: Any) -> bytes:
    """`canonical_json(obj)` of a value the caller vouches holds no NaN or infinity (as `seal(finite=True)`):
    for encoding the members of a result body piece by piece."""
    return _canonical(obj, finite=True)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=64)
def _float_map_template(keys: tuple[str, ...]) -> bytes:
    """b'{"k0":%b,"k1":%b,…}' of sorted plain names (nothing in them to escape); ValueError otherwise."""
    if not keys or list(keys) != sorted(keys) or len(set(keys)) != len(keys):
        raise ValueError(f"keys must be distinct and sorted, got {keys!r}")
    if not all(_NAME.fullmatch(k) for k in keys):
        raise ValueError(f"keys must be plain names, got {keys!r}")
    return b"{" + b",".join(b'"' + k.encode() + b'":%b' for k in keys) + b"}"


def canonical_float_maps(keys: tuple[str, ...], rows: Any) -> list[bytes]:
    """`canonical_finite({keys[j]: row[j] if finite else None})` of every row of `rows` — a list of
    lists of floats, or a C-contiguous 2-D float64 numpy array — with NaN and ±inf standing for None
    (null). `keys`: distinct plain names in sorted order (canonical JSON's), one per column.

    The rows are encoded by one orjson call and cut apart (a number holds no comma): about a quarter of
    encoding a dict per row. Where the output may spell a float otherwise than `repr` (`_spelled_apart`)
    every row is encoded as its dict instead, so the bytes are always the reference's."""
    template = _float_map_template(keys)
    if len(rows) == 0:
        return []
    try:
        out = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # (a non-contiguous array, say)
        out = b""
    width = len(keys)
    if out and out.startswith(b"[[") and not _spelled_apart(out):
        texts = out[2:-2].split(b"],[")
        cells = [text.split(b",") for text in texts]
        if len(texts) == len(rows) and all(len(c) == width for c in cells):
            return [template % tuple(c) for c in cells]
    listed = rows.tolist() if hasattr(rows, "tolist") else rows
    return [
        canonical_finite({k: (v if v - v == 0.0 else None) for k, v in zip(keys, row, strict=True)})
        for row in listed
    ]


def canonical_strings(texts: list[str]) -> list[bytes]:
    """`canonical_finite(text)` of every string of `texts`, by one orjson call of the list cut into its
    strings at the '","' between them. Every quote inside a JSON string is escaped, so a '","' whose first
    quote has no backslash before it separates two strings (a string "," that begins right after one is
    passed by the cut before it); where a backslash stands before one ('\\","': an escaped quote, or a
    string ending in a backslash) — or orjson refuses the list (a lone surrogate) — each string is encoded
    on its own."""
    if not texts:
        return []
    try:
        out = orjson.dumps(texts)
    except orjson.JSONEncodeError:
        out = b""
    if out and b'\\","' not in out:
        cut = out[2:-2].split(b'","')
        if len(cut) == len(texts):
            return [b'"' + c + b'"' for c in cut]
    return [canonical_finite(t) for t in texts]


def canonical_datetimes(times: Iterable[datetime]) -> list[bytes]:
    """`canonical_finite(json_datetime(t))` of every aware datetime of `times` (ValueError for a naive one).

    A UTC time (`tzinfo` is `datetime.UTC`, as the drivers make them) is written as the text of its whole
    second — made once per second in the call — and its microseconds, the way `isoformat` writes them (six
    digits, none when there are none): about a quarter of the cost of `isoformat` a time. Any other time
    goes through `json_datetime`."""
    seconds: dict[tuple[int, int, int, int, int, int], bytes] = {}
    out: list[bytes] = []
    for dt in times:
        if dt.tzinfo is not UTC:
            out.append(canonical_finite(json_datetime(dt)))
            continue
        key = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        head = seconds.get(key)
        if head is None:
            head = seconds[key] = (
                b'"' + json_datetime(dt.replace(microsecond=0))[:-1].encode()
            )  # (its "Z" cut)
        us = dt.microsecond
        out.append(head + (b'.%06dZ"' % us if us else b'Z"'))
    return out


def _canonical(obj: Any, *, finite: bool) -> bytes:
    """`canonical_json(obj)`; `finite`: the caller vouches that `obj` holds no NaN or infinity, so a null in
    orjson's output is a None and the walk looking for them (`_non_finite`) is left out."""
    try:
        out = orjson.dumps(obj, option=_FAST_OPTIONS)
    except orjson.JSONEncodeError:
        return _CANONICAL.encode(obj).encode()
    if _spelled_apart(out) or (not finite and b"null" in out and _non_finite(obj)):
        return _CANONICAL.encode(obj).encode()
    return out


def _body_json(payload: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in payload.items() if k != "sig"})


Signer = Callable[[bytes], str]
"""Signs canonical JSON bytes: the hex HMAC-SHA256 with a station key (`hmac_signer`)."""


def hmac_signer(key: bytes) -> Signer:
    """The `Signer` of station key `key`: HMAC-SHA256 (RFC 2104) from the two SHA-256 states of the padded
    key, made once and copied per message — the same digest as `hmac.digest(key, data, "sha256")` in half
    the time, and without letting go of the GIL for a payload-sized message (the one-shot `hmac.digest`
    always does: in a gateway whose other threads hold the GIL, each signature then waits to get it back)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(padded.translate(hmac.trans_36))
    outer = hashlib.sha256(padded.translate(hmac.trans_5C))

    def sign(data: bytes) -> str:
        h = inner.copy()
        h.update(data)
        o = outer.copy()
        o.update(h.digest())
        return o.hexdigest()

    return sign


_SHA256_BLOCK = 64


def sign_payload(payload: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 hex digest over `payload` without its "sig" field."""
    return hmac.new(key, _body_json(payload), hashlib.sha256).hexdigest()


_SLOT = "~" * 64
"""Stands in for the signature while a document is encoded once for both signing and sending: no digit, no
dot and no "e-", so it can neither make nor hide a float spelling `_spelled_apart` looks for."""
_SLOT_MEMBER = b'"sig":"' + _SLOT.encode() + b'"'


def seal(doc: Mapping[str, Any], sign: Signer, *, finite: bool = False) -> tuple[bytes, str]:
    """(canonical JSON of `doc` with "sig" added, the sig), the sig made by `sign` over the canonical JSON of
    `doc` (which must not hold "sig"): equal to `canonical_json({**doc, "sig": sign_payload(doc, key)})`,
    with `doc` encoded once.

    `finite=True`: the caller vouches that `doc` holds no NaN and no infinity — true of a `ResultBody`'s wire
    object, whose values are finite or None — and the walk that looks for them is left out (it is most of
    the cost of a result with a null value). Were one there after all, it would be sealed as null (the
    value the cloud then receives, and verifies the signature over) where `canonical_json` refuses it.

    Canonical JSON is the sorted members joined by commas, so `doc` is encoded once with a stand-in "sig"
    member (`_SLOT`): without that member (and one comma) it is the signed text, with the signature in the
    stand-in's place the sealed one. The member is found as the only occurrence of its bytes (a raw quote
    only ever appears structurally in JSON, so the one occurrence is the top-level member put there); a
    document whose text holds it twice (a nested "sig" with the stand-in's value) is sealed the long way."""
    if "sig" in doc:
        raise ValueError('seal: the document already holds "sig"')
    full = dict(doc)
    full["sig"] = _SLOT
    out = _canonical(full, finite=finite)
    i = out.find(_SLOT_MEMBER)
    if i < 1 or out.find(_SLOT_MEMBER, i + 1) >= 0:
        return _seal_apart(doc, sign)
    j = i + len(_SLOT_MEMBER)  # the member is out[i:j]; out[i - 1] is "," or "{"
    if out[i - 1] == 0x2C:  # ",": drop the comma before it
        body = out[: i - 1] + out[j:]
    elif out[j] == 0x2C:  # the first member, others follow: drop the comma after it
        body = out[:i] + out[j + 1 :]
    else:  # the only member
        body = out[:i] + out[j:]
    sig = sign(body)
    return out[: i + 7] + _sig_text(sig) + out[j - 1 :], sig


def _sig_text(sig: str) -> bytes:
    """The JSON string body of `sig` (between its quotes): a hex digest as it is, anything else escaped as
    canonical JSON escapes it."""
    text = sig.encode()
    if text.isalnum():  # (bytes: ASCII letters and digits only)
        return text
    return _CANONICAL.encode(sig).encode()[1:-1]


BodyParts = tuple[bytes, bytes, bytes, bytes]
"""A result body's canonical JSON members (no braces, b"" for none) sorting before "id", between "id" and
"seq", between "seq" and "sig", and after "sig" (`body_parts`): where a result's id, seq and signature go."""


def body_parts(body: Mapping[str, Any]) -> BodyParts:
    """The canonical JSON of `body` — a result without "id", "seq" and "sig", holding no NaN or infinity
    (as `seal(finite=True)`) — cut where those three members go. Canonical JSON is the sorted members
    joined by commas, so each run of members is the canonical JSON of that part of `body` without its
    braces. ValueError when `body` holds one of the three."""
    runs: tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {}, {})
    for key, value in body.items():
        if key in ("id", "seq", "sig"):
            raise ValueError(f"body_parts: the body already holds {key!r}")
        runs[(key > "id") + (key > "seq") + (key > "sig")][key] = value
    p0, p1, p2, p3 = (_canonical(run, finite=True)[1:-1] if run else b"" for run in runs)
    return p0, p1, p2, p3


def _string(text: str) -> bytes:
    """The canonical JSON of the string `text` (an id or a hex digest as it is: nothing to escape)."""
    if text.isascii() and text.replace("-", "").isalnum():
        return b'"' + text.encode() + b'"'
    return _CANONICAL.encode(text).encode()


def seal_parts(parts: BodyParts, rid: str, seq: int, sign: Signer) -> tuple[bytes, str]:
    """`seal` of the body `parts` came from (`body_parts`) with "id" `rid` and "seq" `seq` added — the same
    bytes and signature — without encoding anything but the id, the seq and the signature (a result's
    parts — every run but the one between "seq" and "sig" there — in one formatting step each)."""
    if type(seq) is not int:
        raise TypeError(f"seq must be an int, not {type(seq).__name__}")
    p0, p1, p2, p3 = parts
    if p0 and p1 and p3 and not p2:  # a result's (members before "id", between it and "seq", after "sig")
        first = b'{%b,"id":%b,%b,"seq":%d' % (p0, _string(rid), p1, seq)
        sig = sign(b"%b,%b}" % (first, p3))
        return b'%b,"sig":%b,%b}' % (first, _string(sig), p3), sig
    head = b",".join(m for m in (p0, b'"id":' + _string(rid), p1, b'"seq":' + str(seq).encode(), p2) if m)
    sig = sign(b"{" + head + (b"," + p3 if p3 else b"") + b"}")
    return b"{" + head + b',"sig":' + _string(sig) + (b"," + p3 if p3 else b"") + b"}", sig


def parts_wire(parts: BodyParts) -> dict[str, Any]:
    """The body `parts` came from (`body_parts`), decoded."""
    decoded: dict[str, Any] = orjson.loads(b"{" + b",".join(p for p in parts if p) + b"}")
    return decoded


def _seal_apart(doc: Mapping[str, Any], sign: Signer) -> tuple[bytes, str]:
    """`seal` by two encodings (for the rare document whose text holds the stand-in member twice)."""
    sig = sign(canonical_json(dict(doc)))
    return canonical_json({**doc, "sig": sig}), sig


def verify_payload(payload: dict[str, Any], key: bytes) -> bool:
    return check_payload(payload, (key,))[0]


def _digest(body: bytes, sig: Any) -> str:
    return hashlib.sha256(body + b"\n" + canonical_json(sig)).hexdigest()


def payload_sha256(payload: dict[str, Any]) -> str:
    """Hex SHA-256 naming one exact content: of the canonical JSON of `payload` without "sig", a newline, and
    the canonical JSON of its "sig" (null when it has none).

    The cloud puts it in a `Rejection` so a gateway can tell that the rejected item is exactly the one it holds.
    Raises ValueError/TypeError for what canonical JSON cannot encode (NaN, non-JSON types).
    """
    return _digest(_body_json(payload), payload.get("sig"))


def check_payload(payload: dict[str, Any], keys: tuple[bytes, ...]) -> tuple[bool, str | None]:
    """(does "sig" verify with one of `keys`, `payload_sha256`) — the canonical JSON encoded once for both.
    The hash is None when canonical JSON cannot encode the payload (then it does not verify either)."""
    try:
        body = _body_json(payload)
        digest = _digest(body, payload.get("sig"))
    except (TypeError, ValueError, RecursionError):
        return False, None
    sig = payload.get("sig")
    if not isinstance(sig, str) or not sig.isascii():  # (compare_digest raises on non-ASCII text)
        return False, digest
    ok = any(hmac.compare_digest(sig, hmac.new(k, body, hashlib.sha256).hexdigest()) for k in keys)
    return ok, digest


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
"""orjson decodes an integer of more than 64 bits as a float (json: an int), and every such integer has at
least 19 digits: a text with 19 digits in a row is decoded by json."""


def loads(data: bytes) -> Any:
    """``json.loads(data.decode("utf-8"))``: the same value, or the same exception (UnicodeDecodeError,
    json.JSONDecodeError, RecursionError). orjson decodes what it accepts to exactly that value, about four
    times faster; what it refuses (NaN, Infinity, lone surrogates, numbers out of range, text that is not
    UTF-8) and any text with 19 digits in a row go to ``json`` (hypothesis property in the tests)."""
    if _LONG_NUMBER not in data.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data.decode("utf-8"))


def split_result_payload(data: bytes) -> list[dict[str, Any]]:
    """Decode a result-topic message into its result dicts (one object or {"results": [...]}).

    Raises ValueError with a readable reason for anything that is not such a message.
    """
    try:
        doc = loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not UTF-8 JSON: {exc}") from exc
    if isinstance(doc, dict) and "results" in doc:
        items = doc["results"]
        if not isinstance(items, list) or not items:
            raise ValueError('"results" must be a non-empty list')
    elif isinstance(doc, dict):
        items = [doc]
    else:
        raise ValueError("payload must be a JSON object")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"results[{i}] is not an object")
    return items


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstrumentRef(_Model):
    serial: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    driver: str = Field(min_length=1, max_length=64)


class SampleRef(_Model):
    id: str = Field(min_length=1, max_length=64)
    product: str = Field(min_length=1, max_length=64)
    producer: str | None = Field(default=None, max_length=128)
    sampled_at: AwareDatetime | None = None


class RawSignal(_Model):
    """Optional raw signal: zlib-compressed little-endian array, base64 encoded."""

    encoding: Literal["zlib+base64"] = "zlib+base64"
    dtype: Literal["<f4", "<f8", "<u2"]
    shape: tuple[int, ...]
    data: str

    def curve(self, max_points: int = 256, max_values: int = 1 << 20) -> list[float]:
        """The first row of the signal (a strip's reflectance profile, a channel's absorbance curve) as at
        most `max_points` values, averaged in equal bins; ValueError when the data does not decode to the
        declared shape, or declares more than `max_values` values (never inflates more than that)."""
        count = math.prod(self.shape)
        if not self.shape or count <= 0 or count > max_values:
            raise ValueError(f"raw signal shape {self.shape} is empty or too large")
        code, size = {"<f4": ("f", 4), "<f8": ("d", 8), "<u2": ("H", 2)}[self.dtype]
        try:
            packed = zlib.decompressobj().decompress(
                base64.b64decode(self.data, validate=True), count * size + 1
            )
        except (binascii.Error, zlib.error) as exc:
            raise ValueError(f"raw signal does not decode: {exc}") from exc
        if len(packed) != count * size:
            raise ValueError(f"raw signal holds {len(packed)} bytes, shape {self.shape} needs {count * size}")
        row = self.shape[-1]
        values = list(struct.unpack(f"<{row}{code}", packed[: row * size]))
        bins = min(max_points, row)
        out = []
        for b in range(bins):
            chunk = values[b * row // bins : (b + 1) * row // bins]
            out.append(float(sum(chunk) / len(chunk)))
        return out


class ResultBody(_Model):
    """Every `Result` field except `id`, `seq` and `sig`: what the gateway's pipeline builds from a
    reading; the outbox adds those three in the transaction that gives the result its place."""

    station: str = Field(pattern=STATION_PATTERN)
    instrument: InstrumentRef
    sample: SampleRef
    method: Literal["gold", "enzyme"]
    analyte: str = Field(min_length=1, max_length=64)
    channel: int = Field(ge=0, le=255)
    measured_at: AwareDatetime
    verdict: VerdictName
    values: dict[str, FiniteFloat | None]
    """finite numbers: a gateway sends a NaN or an infinity as null; "NaN" is refused, not coerced"""
    qc: tuple[str, ...] = ()
    algorithm: str = Field(min_length=1)
    config_version: str = Field(min_length=1)
    raw: RawSignal | None = None
    operator: str | None = Field(default=None, max_length=64)

    def wire(self) -> dict[str, Any]:
        """The JSON object of this body as it is signed and sent (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    @staticmethod
    def wire_of(
        *,
        station: str,
        instrument: InstrumentRef,
        sample: dict[str, Any],
        method: Literal["gold", "enzyme"],
        analyte: str,
        channel: int,
        measured_at: datetime,
        verdict: VerdictName,
        values: dict[str, float | None],
        qc: list[str],
        algorithm: str,
        config_version: str,
        raw: RawSignal | None = None,
        operator: str | None = None,
    ) -> dict[str, Any]:
        """`ResultBody(**fields).wire()` without building and validating the model: for a body the
        gateway's own pipeline makes once per result (validating it cost as much as the rest of making
        it). The caller vouches for what the model would check (lengths, the station pattern, finite or
        None values); tests check that the model validates every such object back to the same wire form.
        Still refused here, as the model would: `channel` outside 0–255, a naive `measured_at`."""
        if not 0 <= channel <= 255:
            raise ValueError(f"channel {channel} is outside 0–255")
        doc: dict[str, Any] = {
            "station": station,
            "instrument": {
                "serial": instrument.serial,
                "model": instrument.model,
                "driver": instrument.driver,
            },
            "sample": sample,
            "method": method,
            "analyte": analyte,
            "channel": channel,
            "measured_at": json_datetime(measured_at),
            "verdict": verdict,
            "values": values,
            "qc": qc,
            "algorithm": algorithm,
            "config_version": config_version,
        }
        if raw is not None:
            doc["raw"] = raw.model_dump(mode="json")
        if operator is not None:
            doc["operator"] = operator
        return doc


_AWARE_DATETIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
_ZERO = timedelta(0)


def json_datetime(dt: datetime) -> str:
    """The JSON text of an aware datetime exactly as the models write it (`Z` for UTC, else the offset);
    ValueError for a naive one."""
    offset = dt.utcoffset()
    if offset is None:
        raise ValueError(f"{dt!r} has no time zone")
    if offset == _ZERO:
        return dt.isoformat()[:-6] + "Z"  # (in place of its "+00:00")
    if offset % timedelta(minutes=1) == _ZERO:
        return dt.isoformat()
    return str(_AWARE_DATETIME.dump_python(dt, mode="json"))  # an offset in seconds: rare, the model's way


class Result(ResultBody):
    """One result on `kj/v1/{station}/result`: a `ResultBody` with its id, per-station seq and HMAC.
    `seq` is a strict integer: ``true`` or ``"5"`` is refused, never coerced."""

    id: UUID
    seq: StrictInt = Field(ge=1)
    sig: str = Field(pattern=r"^[0-9a-f]{64}$")


class Rejection(_Model):
    """One item the cloud refused. A gateway applies it only to the row whose id, seq AND `sha256` (of the
    canonical JSON of the stored payload, `payload_sha256`) all match: nothing the cloud could not verify —
    e.g. a message forged with a station's MQTT password but without its HMAC key — changes a result's fate.
    A rejection without `sha256` (an older cloud) is logged and ignored by the gateway."""

    id: str
    seq: int | None = None
    reason: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Ack(_Model):
    """Cloud → gateway: these ids/seqs are durably committed (or permanently rejected)."""

    ids: tuple[UUID, ...] = ()
    seqs: tuple[int, ...] = ()
    rejected: tuple[Rejection, ...] = ()


class InstrumentStatus(_Model):
    name: str
    serial: str | None = None
    model: str | None = None
    driver: str
    state: Literal["ok", "unavailable", "error", "starting"]
    last_error: str | None = None
    last_event: str | None = None  # e.g. the analyzer's memory found cleared or replaced


class Status(_Model):
    station: str = Field(pattern=STATION_PATTERN)
    state: Literal["online", "offline"]
    at: AwareDatetime
    instruments: tuple[InstrumentStatus, ...] = ()
    versions: dict[str, str] = Field(default_factory=dict)
    outbox_depth: int | None = Field(default=None, ge=0)
    oldest_unsent_age_s: float | None = Field(default=None, ge=0)
    free_disk_bytes: int | None = Field(default=None, ge=0)
    config_version: str | None = None


ProducerKind = Literal["企业", "合作社", "家庭农场", "种养大户", "个人"]


class ProducerInfo(_Model):
    """A producer (生产主体) of the station's village, as a station needs it to register samples offline.

    `ref` is the cloud's stable producer reference ("P" + number); ID numbers of individuals never leave
    the cloud (the station does not need them to pick a producer).
    """

    ref: str = Field(pattern=r"^P\d{1,12}$")
    kind: ProducerKind
    name: str = Field(min_length=1, max_length=128)
    village: str = Field(min_length=1, max_length=32)
    contact: str | None = Field(default=None, max_length=64)
    products: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()


class TaskInfo(_Model):
    """A sampling task (抽检任务) the station works on, as its page shows it (progress is counted in the cloud)."""

    id: int = Field(ge=1)
    title: str = Field(min_length=1, max_length=200)
    start: date
    due: date
    target: int = Field(ge=1)
    products: tuple[str, ...] = ()
    analytes: tuple[str, ...] = ()
    unit: str = Field(min_length=1, max_length=64)
    """name of the grid unit the task is set on (the station itself, or its village / town)"""
    shared: bool = False
    """True when set on the village or town: every station there contributes"""


class StationConfig(_Model):
    """Retained config pushed by the cloud; the gateway applies it atomically and records `version`."""

    version: str = Field(min_length=1)
    issued_at: datetime
    gold_kits: tuple[StripSpec, ...] = ()
    enzyme_profiles: tuple[EnzymeSpec, ...] = ()
    producers: tuple[ProducerInfo, ...] = ()
    """Producers of the station's village (optional, additive): picked offline when registering samples."""
    tasks: tuple[TaskInfo, ...] = ()
    """Active and planned sampling tasks of the station (optional, additive): shown on the station's page."""


SAMPLE_CODE_PATTERN = r"^[0-9A-Z]{4,16}$"


class SampleRegistration(_Model):
    """A sample registered at the station (抽样登记), sent on the result topic with ``"kind": "sample"``.

    It travels through the gateway's outbox exactly like a result: UUIDv7 `id`, the station's `seq`, `sig`,
    and the cloud's application ack. `code` is the short code written on the bag; the analyzer record's
    sample id equal to `code` links a measurement to this registration. `retest_of` names the code of the
    original sample when this is a retest (复检).
    """

    kind: Literal["sample"]
    id: UUID
    seq: StrictInt = Field(ge=1)
    station: str = Field(pattern=STATION_PATTERN)
    code: str = Field(pattern=SAMPLE_CODE_PATTERN)
    producer: str = Field(pattern=r"^P\d{1,12}$")
    producer_name: str = Field(min_length=1, max_length=128)
    product: str = Field(min_length=1, max_length=64)
    batch: str = Field(min_length=1, max_length=64)
    plot: str | None = Field(default=None, max_length=64)
    quantity_kg: float = Field(gt=0, le=1e7)
    market_date: date | None = None
    sampler: str = Field(min_length=1, max_length=64)
    registered_at: AwareDatetime
    retest_of: str | None = Field(default=None, pattern=SAMPLE_CODE_PATTERN)
    sig: str = Field(pattern=r"^[0-9a-f]{64}$")
