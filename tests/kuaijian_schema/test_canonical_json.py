"""`canonical_json` (orjson with the reference as fallback) is byte for byte the reference encoding;
`json_datetime` writes a time as the models do.

The reference is `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False).encode()`: every signature is made (gateway) and checked (cloud) over it, so one byte of
difference would make valid results fail verification.
"""

from __future__ import annotations

import json
import math
import random
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from kuaijian_schema import wire
from kuaijian_schema.wire import canonical_json, hmac_signer, json_datetime, seal


def reference(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def outcome(encode: Any, obj: Any) -> bytes | str:
    """The bytes, or "error" for ValueError / TypeError (the two ways the reference refuses)."""
    try:
        return bytes(encode(obj))
    except (ValueError, TypeError):
        return "error"


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e-5, 9.99e-5, 1.5e-7, -2.5e-9, 1e-10, 1e16, -1e22, 5e-324, 0.0, -0.0, 1e-4, 123456.789]
)
ints = st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
scalars = st.none() | st.booleans() | ints | floats | st.text()


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=6)
        | st.dictionaries(st.integers() | st.booleans() | st.none() | st.floats(), inner, max_size=3)
    )


json_values = st.recursive(scalars, _containers, max_leaves=30)


@settings(max_examples=800)
@given(json_values)
def test_byte_identical_to_the_reference_or_refused_alike(obj: Any) -> None:
    assert outcome(canonical_json, obj) == outcome(reference, obj)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)))
def test_every_character_is_escaped_or_written_as_the_reference_does(text: str) -> None:
    """Control characters, DEL, U+2028/9, non-BMP, and lone surrogates (refused by both)."""
    assert outcome(canonical_json, {text: text}) == outcome(reference, {text: text})


def test_floats_across_every_decade_and_random_bit_patterns() -> None:
    rng = random.Random(15)
    values = [
        float(f"{m}e{e}")
        for e in range(-325, 310)
        for m in ("1", "1.5", "9.999999999999998", "1.2345678901234567")
    ]
    values += [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(200_000)]
    values = [v for v in values if math.isfinite(v)]
    doc = [{"x": v} for v in values]
    assert canonical_json(doc) == reference(doc)
    for v in values[::97]:
        assert canonical_json({"values": {"ratio": v}}) == reference({"values": {"ratio": v}})


@pytest.mark.parametrize(
    "obj",
    [
        {"a": float("nan")},
        {"a": [1, {"b": float("inf")}]},
        (float("-inf"),),
        {(1, 2): "tuple key"},
        {"a": 1, 2: "mixed keys"},
        {"a": object()},
        {"a": "\ud800"},
    ],
)
def test_refused_where_the_reference_refuses(obj: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        reference(obj)
    with pytest.raises((ValueError, TypeError)):
        canonical_json(obj)


def test_big_ints_nulls_and_number_keys_match() -> None:
    doc = {"big": 2**63 + 5, "huge": 2**80, "neg": -(2**63), "none": None, "deep": [None, [None]]}
    assert canonical_json(doc) == reference(doc)
    doc = {"a": {1: "x", 2: "y"}, "b": {1.5: 1, 1e-5: 2}}
    assert canonical_json(doc) == reference(doc)


def _result_doc() -> dict[str, Any]:
    return {
        "algorithm": "gold/2.1",
        "analyte": "imidacloprid",
        "channel": 2,
        "config_version": "builtin",
        "id": "01a24e49-b692-7559-8f2d-6876e17461d3",
        "instrument": {"driver": "plugin", "model": "FAST-G", "serial": "FAST-0001"},
        "measured_at": "2026-12-07T02:15:05.123456Z",
        "method": "gold",
        "qc": ["below_calibration"],
        "sample": {"id": "FAST-0001-S000001", "product": "菠菜"},
        "seq": 5,
        "station": "370214101203-01",
        "values": {"control_signal": 7.33194344987472, "ratio": 1.1620665075986834, "margin_sd": 56.2},
        "verdict": "negative",
    }


def test_a_result_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typical result is encoded (and sealed) by orjson alone: the reference is never called for it."""
    expected = reference(_result_doc())

    class Refusing(json.JSONEncoder):
        def encode(self, o: Any) -> str:
            raise AssertionError("the reference encoder was used for a typical result")

    monkeypatch.setattr(wire, "_CANONICAL", Refusing())
    assert canonical_json(_result_doc()) == expected
    payload, sig = seal(_result_doc(), hmac_signer(b"k" * 32))
    assert payload == reference({**_result_doc(), "sig": sig})


_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)


@given(
    st.datetimes(timezones=st.timezones() | st.builds(timezone, _offsets) | st.just(UTC)),
)
def test_json_datetime_is_the_models_text(dt: datetime) -> None:
    """`json_datetime` (the pipeline's, without a model per result) writes what the models write."""
    assert json_datetime(dt) == TypeAdapter(AwareDatetime).dump_python(dt, mode="json")


def test_json_datetime_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        json_datetime(datetime(2026, 1, 1))  # noqa: DTZ001
