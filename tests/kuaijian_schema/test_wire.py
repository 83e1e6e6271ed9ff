from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from uuid import RFC_4122, UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kuaijian_schema import Result, sign_payload, split_result_payload, topic, verify_payload
from kuaijian_schema.wire import (
    canonical_json,
    hmac_signer,
    new_result_id,
    new_result_ids,
    parse_topic,
    seal,
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
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=12,
)


@given(st.dictionaries(st.text().filter(lambda k: k != "sig"), _JSON, max_size=8))
def test_seal_is_the_canonical_json_of_the_signed_document(doc: dict[str, object]) -> None:
    # one serialisation, and yet byte for byte what signing and then canonicalising the dict gives
    # (keys sorting before and after "sig", one side or both sides empty, non-ASCII keys and values)
    signed: list[bytes] = []

    def sign(data: bytes) -> str:
        signed.append(data)
        return hmac_signer(KEY)(data)

    payload, sig = seal(doc, sign)
    assert signed == [canonical_json(doc)], "the signer sees the canonical JSON of the unsigned document"
    assert sig == sign_payload(doc, KEY)
    assert payload == canonical_json({**doc, "sig": sig})
    assert verify_payload(json.loads(payload), KEY)


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
