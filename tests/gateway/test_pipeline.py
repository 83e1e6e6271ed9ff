"""Readings → result drafts: verdicts from the numpy core, nothing dropped, every body a valid Result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from drivers.readings import DeviceInfo, EnzymeReading, GoldReading
from firmware_sim.signal_model import GoldConditions, generate_strips, one_enzyme_run, one_gold_profile
from gateway.interpret import interpret_strips
from gateway.outbox import RecordDrafts
from gateway.pipeline import Interpreter, SpecBook, SpecHolder
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import GB_T_5009_199
from kuaijian_schema.wire import Result, ResultBody, body_parts, new_result_id

STATION = "370214101203-01"
GOLD = DeviceInfo("GR-1", "KJ-G8", "2.3", "gold-serial", "gold", 8)
ENZ = DeviceInfo("EN-1", "KJ-E12", "1.4", "enzyme-modbus", "enzyme", 4)
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _validate(recs: list[RecordDrafts]) -> list[Result]:
    """Every draft's wire object validates as a `ResultBody` whose own wire form is that object, value for
    value and type for type (the pipeline makes it without a model); then as a `Result`."""
    out = []
    for rec in recs:
        for d in rec.drafts:
            assert _typed(d.body.wire()) == _typed(d.wire)
            doc: dict[str, Any] = dict(d.wire, id=str(new_result_id()), seq=1, sig="0" * 64)
            out.append(Result.model_validate(doc))
    return out


def _typed(obj: Any) -> Any:
    """`obj` with every leaf paired with its type (1 == 1.0 == True, but not on the wire)."""
    if isinstance(obj, dict):
        return {k: _typed(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return (type(obj), [_typed(v) for v in obj])
    return (type(obj), obj)


def _gold(n: int, kit: str, profile: np.ndarray[Any, Any], sample: str = "S") -> GoldReading:
    return GoldReading(n, 1, kit, sample, "菠菜", NOW, profile)


def test_gold_verdicts_lines_and_fallbacks() -> None:
    rng = np.random.default_rng(1)
    imi, card = DEMO_KITS["imidacloprid-v1"], DEMO_KITS["nitrofurans-card-v1"]
    cal = imi.lines[0].calibration
    assert cal is not None
    readings = [
        _gold(1, imi.name, one_gold_profile(imi, rng, concentration=0.0).profile),
        _gold(2, imi.name, one_gold_profile(imi, rng, concentration=cal.c * 6).profile, sample=""),
        _gold(3, card.name, one_gold_profile(card, rng, concentration=0.0).profile),
        _gold(4, "no-such-kit", np.ones(1024)),
        _gold(5, imi.name, np.ones(300)),
    ]
    interp = Interpreter(station=STATION, specs=SpecHolder(), operator="王", include_raw=True)
    recs = interp(GOLD, readings)
    assert [r.record_no for r in recs] == [1, 2, 3, 4, 5]
    assert [len(r.drafts) for r in recs] == [1, 1, 3, 1, 1]
    results = _validate(recs)
    verdicts = [r.verdict for r in results]
    assert verdicts == ["negative", "positive", "negative", "negative", "negative", "invalid", "invalid"]
    assert [r.analyte for r in results[2:5]] == ["AOZ", "AMOZ", "SEM"]
    assert {d.line for d in recs[2].drafts} == {"ch1/t0", "ch1/t1", "ch1/t2"}
    assert "unknown-kit:no-such-kit" in results[5].qc
    assert any(q.startswith("profile-length-mismatch") for q in results[6].qc)
    assert results[1].sample.id == "GR-1-2"
    assert "no-sample-id" in results[1].qc
    assert results[0].operator == "王"
    assert results[0].raw is not None
    assert results[0].config_version == "builtin"
    assert recs[1].drafts[0].priority > recs[0].drafts[0].priority, "positives go first"


def test_gold_median_prefilter_reaches_the_core() -> None:
    """`acquisition.gold_median` → Interpreter(gold_median=…) → interpret_strips(median=…)."""
    spec = DEMO_KITS["imidacloprid-v1"]
    batch = generate_strips(spec, 6, np.random.default_rng(4), conditions=GoldConditions(p_speck=1.0))
    readings = [_gold(i + 1, spec.name, batch.profiles[i]) for i in range(6)]
    for median in (0, 5):
        recs = Interpreter(station=STATION, specs=SpecHolder(), gold_median=median)(GOLD, readings)
        got = [rec.drafts[0].body.values["ratio"] for rec in recs]
        want = interpret_strips(batch.profiles, spec, median=median).ratio[:, 0]
        np.testing.assert_allclose(np.array(got, dtype=float), want, rtol=1e-12)
    plain = interpret_strips(batch.profiles, spec).ratio[:, 0]
    assert not np.allclose(want, plain), "the pre-filter changes the ratio of specked strips"


def test_enzyme_verdicts_profile_aliases_and_unknown_profile() -> None:
    rng = np.random.default_rng(2)
    run = one_enzyme_run(GB_T_5009_199, 4, rng, inhibition=[0.0, 90.0, 2.0, 2.0], control_channel=0)
    times = np.asarray(run.times_s, dtype=np.float64)
    absorbance = np.asarray(run.absorbance, dtype=np.float64)

    def reading(n: int, profile: str) -> EnzymeReading:
        return EnzymeReading(
            n, profile, 0, times, absorbance, ("", "E1", "E2", "E3"), ("", "白菜", "芹菜", "黄瓜"), NOW
        )

    interp = Interpreter(station=STATION, specs=SpecHolder())
    recs = interp(ENZ, [reading(1, "GB/T 5009.199"), reading(2, "mystery")])
    results = _validate(recs)
    assert [r.verdict for r in results[:3]] == ["positive", "negative", "negative"]
    assert [r.channel for r in results[:3]] == [1, 2, 3]
    assert results[0].values["inhibition_pct"] == pytest.approx(90.0, abs=8.0)
    assert [r.verdict for r in results[3:]] == ["invalid"] * 3
    assert all("unknown-profile:mystery" in r.qc for r in results[3:])


def test_spec_book_overlay_by_name() -> None:
    from kuaijian_schema.wire import StationConfig

    imi = DEMO_KITS["imidacloprid-v1"]
    lot = imi.model_copy(update={"version": "lot-9"})
    cfg = StationConfig(version="12", issued_at=NOW, gold_kits=(lot,))
    book = SpecBook.builtin().with_config(cfg)
    assert book.version == "12"
    assert book.kits[imi.name].version == "lot-9"
    assert set(book.kits) == set(DEMO_KITS), "pushed kits replace defaults by name, others stay"
    assert book.profile("NY/T 448") is not None


def test_drafts_are_typed_result_bodies_and_sign_as_sent() -> None:
    """The pipeline builds `ResultBody` models (validated where they are made), not dicts; their wire
    form leaves unset optional fields out, so the signed object is exactly what the cloud validates."""
    rng = np.random.default_rng(2)
    imi = DEMO_KITS["imidacloprid-v1"]
    interp = Interpreter(station=STATION, specs=SpecHolder())
    (rec,) = interp(GOLD, [_gold(1, imi.name, one_gold_profile(imi, rng, concentration=0.0).profile)])
    body = rec.drafts[0].body
    assert isinstance(body, ResultBody)
    wire = body.wire()
    assert "operator" not in wire
    assert "raw" not in wire
    assert wire["sample"] == {"id": "S", "product": "菠菜"}
    assert datetime.fromisoformat(wire["measured_at"]) == NOW
    assert ResultBody.model_validate(wire) == body
    with pytest.raises(ValueError, match="station"):
        Interpreter(station="not-a-station", specs=SpecHolder())(GOLD, [_gold(2, imi.name, np.ones(1024))])


def test_wire_objects_are_what_the_model_would_make_at_the_limits() -> None:
    """Over-long names cut to the model's limits, a zone other than UTC, microseconds: each draft validates
    back to itself; what the model would refuse is refused without it (a naive time, a channel > 255)."""
    rng = np.random.default_rng(3)
    imi = DEMO_KITS["imidacloprid-v1"]
    profile = one_gold_profile(imi, rng, concentration=0.0).profile
    east8 = datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    readings = [
        GoldReading(1, 7, imi.name, "样" * 80, "韭菜" * 40, east8, profile, operator="李" * 70),
        GoldReading(2, 0, imi.name, "S2", "", NOW.replace(microsecond=5), profile),
    ]
    info = DeviceInfo("G" * 64, "M" * 64, "1", "gold-serial", "gold", 8)
    recs = Interpreter(station=STATION, specs=SpecHolder(), include_raw=True)(info, readings)
    first, second = _validate(recs)
    assert first.sample.id == "样" * 64
    assert first.sample.product == ("韭菜" * 40)[:64]
    assert first.operator == "李" * 64
    assert first.measured_at == east8
    assert recs[0].drafts[0].wire["measured_at"] == "2026-11-25T16:00:00.123456+08:00"
    assert second.sample.product == "unknown"
    assert recs[1].drafts[0].wire["measured_at"] == "2026-11-25T08:00:00.000005Z"
    interp = Interpreter(station=STATION, specs=SpecHolder())
    with pytest.raises(ValueError, match="time zone"):
        interp(GOLD, [GoldReading(3, 1, imi.name, "S", "菠菜", datetime(2026, 1, 1), profile)])  # noqa: DTZ001
    with pytest.raises(ValueError, match="channel"):
        interp(GOLD, [GoldReading(4, 300, imi.name, "S", "菠菜", NOW, profile)])


@pytest.mark.parametrize(("include_raw", "operator"), [(False, None), (True, "李")])
def test_batch_drafts_equal_the_one_by_one_drafts(include_raw: bool, operator: str | None) -> None:
    """`_gold_drafts` (a strip batch encoded, shared parts made once) makes exactly what `_gold_draft` makes line by
    line: blank and positive strips, a two-line card, no sample id, over-long names, another zone."""
    rng = np.random.default_rng(5)
    imi, card = DEMO_KITS["imidacloprid-v1"], DEMO_KITS["nitrofurans-card-v1"]
    east8 = datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    interp = Interpreter(station=STATION, specs=SpecHolder(), operator=operator, include_raw=include_raw)
    book = SpecBook.builtin()
    for spec in (imi, card):
        cal = spec.lines[0].calibration
        assert cal is not None
        readings = [
            GoldReading(
                n,
                n % 8,
                spec.name,
                "" if n == 2 else ('样"\\\x01~' * 20 if n == 3 else f"S{n}"),
                "" if n == 4 else "菠菜",
                east8 if n % 2 else NOW,
                one_gold_profile(spec, rng, concentration=cal.c * 6 if n % 3 == 0 else 0.0).profile,
                "王" * 70 if n == 5 else "",
            )
            for n in range(1, 9)
        ]
        res = interpret_strips(np.stack([r.profile for r in readings]), spec)
        batch: dict[int, list[Any]] = {r.record_no: [] for r in readings}
        interp._gold_drafts(GOLD, readings, res, book, batch)
        one: dict[int, list[Any]] = {r.record_no: [] for r in readings}
        for i, rd in enumerate(readings):
            for k, analyte in enumerate(res.analytes):
                verdict, values, qc = res.verdict_for(i, k), res.values_for(i, k), res.flags_for(i, k)
                interp._gold_draft(GOLD, rd, book, one, analyte, verdict, values, qc, res.algorithm, k)
        assert {n: [(d.line, d.priority, _typed(d.wire)) for d in ds] for n, ds in batch.items()} == {
            n: [(d.line, d.priority, _typed(d.wire)) for d in ds] for n, ds in one.items()
        }
        _validate([RecordDrafts(n, tuple(ds)) for n, ds in batch.items()])
        # encoded: the very parts body_parts cuts the wire object in
        for n, ds in one.items():
            assert [(d.line, d.priority, body_parts(d.wire)) for d in ds] == [
                (d.line, d.priority, d.parts) for d in batch[n]
            ]
            assert [d.wire for d in ds] == [d.wire for d in batch[n]]
