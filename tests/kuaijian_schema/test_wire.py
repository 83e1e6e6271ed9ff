from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import select
import signal
import time
from datetime import UTC, datetime
from uuid import RFC_4122, UUID

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kuaijian_schema import (
    Result,
    check_payload,
    payload_sha256,
    sign_payload,
    split_result_payload,
    topic,
    verify_payload,
    wire,
)
from kuaijian_schema.wire import (
    body_parts,
    canonical_json,
    hmac_signer,
    loads,
    new_result_id,
    new_result_ids,
    parse_topic,
    parts_wire,
    seal,
    seal_parts,
)

KEY = b"station-key-0123456789"


def _result() -> dict[str, object]:
    doc: dict[str, object] = {
        "id": "0192e0c4-7b1a-7cc0-8d2e-1f0e5a3b9c11",
        "seq": 7,
        "station": "370214101203-01",
        "instrument": {"serial": "GR-1", "model": "KJ-G8", "driver": "gold-serial"},
        "sample": {"id": "S-1", "product": "菠菜"},
        "method": "gold",
        "analyte": "imidacloprid",
        "channel": 1,
        "measured_at": "2026-11-25T08:00:00+00:00",
        "verdict": "negative",
        "values": {"ratio": 1.2, "control_signal": 3.4},
        "algorithm": "gold/1.0",
        "config_version": "3",
    }
    doc["sig"] = sign_payload(doc, KEY)
    return doc


def test_signed_result_validates_and_verifies() -> None:
    doc = _result()
    assert verify_payload(doc, KEY)
    assert Result.model_validate(doc).seq == 7


def test_tampered_or_wrong_key_fails() -> None:
    doc = _result()
    doc["verdict"] = "positive"
    assert not verify_payload(doc, KEY)
    assert not verify_payload(_result(), b"other-key")
    unsigned = _result()
    del unsigned["sig"]
    assert not verify_payload(unsigned, KEY)


@given(
    st.dictionaries(
        st.text(), st.one_of(st.integers(), st.text(), st.floats(allow_nan=False, allow_infinity=False))
    )
)
def test_sign_is_order_independent(d: dict[str, object]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert sign_payload(d, KEY) == sign_payload(reordered, KEY)


def test_split_single_and_batch() -> None:
    one = _result()
    assert split_result_payload(json.dumps(one).encode()) == [one]
    assert len(split_result_payload(json.dumps({"results": [one, one]}).encode())) == 2


@pytest.mark.parametrize("raw", [b"\xff", b"[1]", b'{"results": []}', b'{"results": [1]}', b"nope"])
def test_split_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        split_result_payload(raw)


def test_topics() -> None:
    assert topic("370214101203-01", "ack") == "kj/v1/370214101203-01/ack"
    assert parse_topic("kj/v1/370214101203-01/result") == ("370214101203-01", "result")
    with pytest.raises(ValueError, match="station id"):
        topic("37-1", "result")
    with pytest.raises(ValueError, match="not a kj/v1"):
        parse_topic("kj/v2/370214101203-01/result")


def test_result_requires_aware_time() -> None:
    doc = _result()
    doc["measured_at"] = datetime(2026, 1, 1).isoformat()  # noqa: DTZ001 - deliberately naive
    with pytest.raises(ValueError, match="timezone"):
        Result.model_validate(doc)
    doc["measured_at"] = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    Result.model_validate(doc)


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(),
        st.floats(),
        st.sampled_from([1e-5, 1.5e-7, -2.5e-9, 1e16, "~" * 64]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=12,
)


@example({"a": {"sig": "~" * 64}, "z": 1})  # the stand-in "sig" member seal encodes with, nested: found twice
@example({"sig\u0000": 1, "si": 2})
@given(st.dictionaries(st.text().filter(lambda k: k != "sig"), _JSON, max_size=8))
def test_seal_is_the_canonical_json_of_the_signed_document(doc: dict[str, object]) -> None:
    # one serialisation, and yet byte for byte what signing and then canonicalising the dict gives
    # (keys sorting before and after "sig", one side or both sides empty, non-ASCII keys and values,
    # floats spelled apart by orjson, NaN and infinities refused as canonical JSON refuses them)
    signed: list[bytes] = []

    def sign(data: bytes) -> str:
        signed.append(data)
        return hmac_signer(KEY)(data)

    try:
        expected = canonical_json(doc)
    except ValueError:
        with pytest.raises(ValueError, match="not JSON compliant"):
            seal(doc, sign)
        return
    payload, sig = seal(doc, sign)
    assert signed == [expected], "the signer sees the canonical JSON of the unsigned document"
    assert sig == sign_payload(doc, KEY)
    assert payload == canonical_json({**doc, "sig": sig})
    assert verify_payload(json.loads(payload), KEY)


def test_a_result_vouched_finite_is_encoded_once_and_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`seal(..., finite=True)` (the outbox's results: `ResultBody` objects, finite values or null): one
    orjson encoding, no walk looking for NaN — and the same bytes and signature as the exact path."""
    doc = _result()
    del doc["sig"]
    doc["values"] = {"ratio": 1.2, "concentration_mg_kg": None}  # a null: the walk would run for it
    exact = seal(doc, hmac_signer(KEY))
    calls: list[object] = []
    dumps = wire.orjson.dumps

    def counting(obj: object, *args: object, **kwargs: object) -> bytes:
        calls.append(obj)
        return dumps(obj, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(obj: object) -> bool:
        raise AssertionError("walked a document vouched finite")

    monkeypatch.setattr(wire.orjson, "dumps", counting)
    monkeypatch.setattr(wire, "_non_finite", refuse)
    assert seal(doc, hmac_signer(KEY), finite=True) == exact
    assert len(calls) == 1


def test_seal_refuses_a_signed_document() -> None:
    with pytest.raises(ValueError, match="sig"):
        seal(_result(), hmac_signer(KEY))


def test_result_ids_are_uuid7_increasing_and_now() -> None:
    before = time.time()
    ids = [i for _ in range(50) for i in new_result_ids(40)] + [str(new_result_id()) for _ in range(20)]
    after = time.time()
    uuids = [UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == RFC_4122 for u in uuids)
    assert [u.int for u in uuids] == sorted({u.int for u in uuids}), "strictly increasing, none repeated"
    stamps = [(u.int >> 80) / 1000 for u in uuids]
    assert before - 0.002 <= min(stamps) <= max(stamps) <= after + 0.002, "the id's time is its creation time"


def test_a_forked_child_makes_its_ids_afresh() -> None:
    """A forked process (the gateway's interpretation process) starts its own id source: not from the
    parent's random state (which the parent goes on from), and not stuck on the parent's lock, held here by
    this thread across the fork as another thread of the gateway might hold it."""
    new_result_ids(5)  # the parent's state: this ms, some random position
    read_end, write_end = os.pipe()
    with wire._UUID7._lock:
        pid = os.fork()
        if pid == 0:  # the child: only ever exits
            try:
                os.write(write_end, json.dumps([wire._UUID7._ms, *new_result_ids(3)]).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    try:
        ready, _w, _x = select.select([read_end], [], [], 30)
        assert ready, "the forked child made no ids in 30 s (stuck on the parent's lock?)"
        ms, *ids = json.loads(os.read(read_end, 4096))
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert ms == -1, "the child went on from the parent's random state"
    assert len(ids) == 3
    assert all(UUID(i).version == 7 for i in ids)


# ---- the orjson fast paths give exactly what json gives


def _same(a: object, b: object) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True for ==; NaN equals NaN here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


_ANY_FLOAT = st.one_of(
    st.floats(),  # NaN and ±Infinity included: json writes and reads them, orjson refuses them
    st.floats(min_value=-1e-3, max_value=1e-3),  # negative exponents: 1e-07 (json) vs 1e-7 (orjson)
    st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(-(10**17), 10**17), st.integers(-330, 310)),
)
_WIDE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits: orjson would make a float
        _ANY_FLOAT,
        st.text(),  # lone surrogates included
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=16,
)


def _json_texts() -> st.SearchStrategy[bytes]:
    as_json = _WIDE_JSON.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    escaped = _WIDE_JSON.map(lambda v: json.dumps(v).encode())  # \ud800 escapes, NaN, Infinity
    numbers = st.from_regex(rb"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?\Z")
    return st.one_of(as_json, escaped, numbers, st.binary(max_size=40))


@settings(max_examples=600)
@given(_json_texts())
def test_loads_is_json_loads(data: bytes) -> None:
    try:
        want: object = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            loads(data)
        return
    got = loads(data)
    assert _same(got, want), (data, got, want)


def test_a_non_ascii_sig_is_not_verified() -> None:
    # it used to raise TypeError (hmac.compare_digest refuses non-ASCII text) instead of answering
    doc = _result()
    doc["sig"] = "签" * 64
    assert check_payload(doc, (KEY,)) == (False, payload_sha256(doc))


_FINITE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([1e-5, 1.5e-7, -2.5e-9, 1e16, "~" * 64, '"sig":"x"']),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=12,
)


@example({}, "01a24eeb-6305-736e-9066-b335326607d6", 0)
@example({"seq\u0000": 1, "si": 2, "id\u0000": 3, "i": 4, "zz": 5}, "x", 7)
@example({"a": 1}, 'an "odd" id\u0000', 2**63)
@given(
    st.dictionaries(st.text().filter(lambda k: k not in ("id", "seq", "sig")), _FINITE_JSON, max_size=8)
    | st.just({k: v for k, v in _result().items() if k not in ("id", "seq", "sig")}),
    st.uuids().map(str) | st.text(),
    st.integers(min_value=0, max_value=2**63),
)
def test_seal_parts_is_seal_of_the_body_with_id_and_seq(body: dict[str, object], rid: str, seq: int) -> None:
    """A body encoded once (`body_parts`, in the interpretation process) and sealed with its id and seq
    (`seal_parts`, in the outbox's transaction) gives the very bytes and signature `seal` gives the whole
    document; `parts_wire` gives the body back."""
    parts = body_parts(body)
    assert seal_parts(parts, rid, seq, hmac_signer(KEY)) == seal(
        {**body, "id": rid, "seq": seq}, hmac_signer(KEY), finite=True
    )
    assert parts_wire(parts) == json.loads(canonical_json(body))


def test_body_parts_refuses_a_body_with_an_id_seq_or_sig() -> None:
    for key in ("id", "seq", "sig"):
        with pytest.raises(ValueError, match=key):
            body_parts({"a": 1, key: 2})
    with pytest.raises(TypeError, match="seq"):
        seal_parts(body_parts({"a": 1}), "x", True, hmac_signer(KEY))  # a bool is no seq


@settings(max_examples=300)
@given(key=st.binary(max_size=200), data=st.binary(max_size=5000))
def test_the_signer_is_hmac_sha256(key: bytes, data: bytes) -> None:
    """`hmac_signer` (SHA-256 states of the padded key, copied per message) signs as RFC 2104 HMAC-SHA256:
    keys shorter and longer than the 64-byte block, messages below and above the size at which hashlib lets
    go of the GIL; each signature independent of the ones before it."""
    sign = hmac_signer(key)
    assert sign(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
    assert sign(b"") == hmac.new(key, b"", hashlib.sha256).hexdigest()
    assert sign(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
