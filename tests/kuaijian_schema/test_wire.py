from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kuaijian_schema import Result, sign_payload, split_result_payload, topic, verify_payload
from kuaijian_schema.wire import parse_topic

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
