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


KEYS = ("a", "b_c", "z")


@settings(max_examples=300)
@given(st.lists(st.lists(floats, min_size=3, max_size=3), max_size=12), st.booleans())
def test_float_maps_are_the_reference_of_each_row(rows: list[list[float]], as_array: bool) -> None:
    """One call for a batch of rows (a list, or a float64 array as the gold core's table) is each row's
    dict encoded alone, NaN and ±inf as null — across the spellings where orjson and `repr` disagree."""
    import numpy as np

    given_rows: Any = np.array(rows, dtype=np.float64).reshape(len(rows), 3) if as_array else rows
    expected = [
        reference({k: (v if math.isfinite(v) else None) for k, v in zip(KEYS, row, strict=True)})
        for row in rows
    ]
    assert wire.canonical_float_maps(KEYS, given_rows) == expected


def test_float_maps_take_sorted_plain_names_only() -> None:
    for keys in (("b", "a"), ("a", "a"), ("a b",), ('a"',), ()):
        with pytest.raises(ValueError, match="keys must be"):
            wire.canonical_float_maps(keys, [[1.0] * len(keys)])


def test_float_maps_of_a_strided_array_fall_back_to_one_row_at_a_time() -> None:
    import numpy as np

    table = np.arange(12.0).reshape(3, 4)[:, ::2]  # not C-contiguous: orjson refuses it
    assert wire.canonical_float_maps(("p", "q"), table) == [
        reference({"p": r[0], "q": r[1]}) for r in table.tolist()
    ]


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)), max_size=8))
def test_strings_are_each_the_reference(texts: list[str]) -> None:
    """Cut from one encoding of the list: quotes, backslashes, '","' inside a string, lone surrogates (which
    orjson refuses: one call per string then, raising where the reference raises)."""
    expected = [outcome(reference, t) for t in texts]
    if "error" in expected:
        with pytest.raises(UnicodeEncodeError, match="surrogates"):
            wire.canonical_strings(texts)
    else:
        assert wire.canonical_strings(texts) == expected


def test_strings_with_the_separator_inside_them() -> None:
    texts = ['","', '\\",', '"', "\\", "", '\\","\\"', ",", ",", '","', "a\\"]
    assert wire.canonical_strings(texts) == [reference(t) for t in texts]


def test_strings_and_float_maps_take_the_one_call_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings of commas, empty ones and text beside them, and finite rows, are cut from the one encoding
    (the encoding one at a time is not called)."""
    texts = [",", ",", "", ",,", "样品 A", "x,y"]
    rows = [[1.0, 2.5e-3, -7.0], [float("nan"), 1e300, 0.1]]
    expected_strings = [reference(t) for t in texts]
    expected_rows = [
        reference({"a": 1.0, "b_c": 2.5e-3, "z": -7.0}),
        reference({"a": None, "b_c": 1e300, "z": 0.1}),
    ]

    def refuse(_obj: Any) -> bytes:
        raise AssertionError("encoded one at a time")

    monkeypatch.setattr(wire, "canonical_finite", refuse)
    assert wire.canonical_strings(texts) == expected_strings
    assert wire.canonical_float_maps(KEYS, rows) == expected_rows


@given(
    st.lists(
        st.datetimes(timezones=st.timezones() | st.builds(timezone, _offsets) | st.just(UTC))
        | st.builds(  # several in one second, with and without microseconds: the cached second's text
            lambda second, us: datetime(2026, 12, 7, 9, 30, second, us, tzinfo=UTC),
            st.integers(0, 1),
            st.sampled_from([0, 1, 999_999, 123_450]),
        ),
        max_size=20,
    )
)
def test_canonical_datetimes_are_the_canonical_json_of_each_time(times: list[datetime]) -> None:
    """The pipeline's batch encoder writes each time as `canonical_json(json_datetime(t))` does."""
    assert wire.canonical_datetimes(times) == [canonical_json(json_datetime(t)) for t in times]


def test_canonical_datetimes_refuse_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        wire.canonical_datetimes([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1)])  # noqa: DTZ001
