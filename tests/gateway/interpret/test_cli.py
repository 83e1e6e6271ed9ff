"""`kuaijian interpret gold|enzyme FILE` on recorded files written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.signal_model import (
    GoldBatch,
    GoldConditions,
    generate_kinetics,
    generate_strip_images,
    generate_strips,
    one_enzyme_run,
)
from gateway.interpret import interpret_strips
from kuaijian.cli import main
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import GB_T_5009_199, NY_T_448
from kuaijian_schema.wire import StationConfig

KIT = "nitrofurans-card-v1"
VERDICTS = ("negative", "positive", "suspect", "invalid")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["interpret", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def strips() -> GoldBatch:
    return generate_strips(DEMO_KITS[KIT], 12, np.random.default_rng(3))


def _expected(batch: GoldBatch) -> list[str]:
    return [VERDICTS[v] for v in batch.truth.verdict.ravel()]


def _near_cutoff(batch: GoldBatch) -> np.ndarray:
    ratio = batch.truth.ratio.ravel()
    near: np.ndarray = (np.abs(ratio - 0.45) < 0.06) | (np.abs(ratio - 0.57) < 0.06)
    return near


def test_gold_npy_csv_json_give_the_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strips: GoldBatch
) -> None:
    profiles = strips.profiles
    np.save(tmp_path / "p.npy", profiles)
    np.savetxt(tmp_path / "p.csv", profiles, delimiter=",", header="# recorded 2026-11-25", comments="")
    (tmp_path / "p.json").write_text(json.dumps({"kit": KIT, "profiles": profiles.tolist()}))
    expected = _expected(strips)
    near = _near_cutoff(strips)
    for name in ("p.npy", "p.csv", "p.json"):
        argv = [str(tmp_path / name)] + ([] if name == "p.json" else ["--kit", KIT])
        doc = _json(capsys, "gold", *argv)
        assert doc["kit"] == KIT
        assert doc["algorithm"] == "gold/2.2"
        results = doc["results"]
        assert isinstance(results, list)
        assert len(results) == 12 * 3
        assert [r["analyte"] for r in results[:3]] == ["AOZ", "AMOZ", "SEM"]
        got = [r["verdict"] for r in results]
        assert [g for g, e, n in zip(got, expected, near, strict=True) if not n] == [
            e for e, n in zip(expected, near, strict=True) if not n
        ], name
        assert set(results[0]["values"]) >= {"ratio", "control_signal", "test_signal", "concentration_mg_kg"}


def test_gold_table(tmp_path: Path, capsys: pytest.CaptureFixture[str], strips: GoldBatch) -> None:
    np.save(tmp_path / "p.npy", strips.profiles[:2])
    code, out, _ = _run(capsys, "gold", str(tmp_path / "p.npy"), "--kit", KIT)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"kit {KIT} v1 · gold/2.2 · 2 strip(s)")
    assert lines[1].split()[:4] == ["strip", "analyte", "verdict", "T/C"]
    assert len(lines) == 2 + 2 * 3
    assert lines[2].split()[1] == "AOZ"
    assert lines[2].split()[2] in VERDICTS


def test_gold_median_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--median 5` runs the running-median pre-filter (the gateway's `acquisition.gold_median`)."""
    spec = DEMO_KITS[KIT]
    batch = generate_strips(spec, 8, np.random.default_rng(5), conditions=GoldConditions(p_speck=1.0))
    np.save(tmp_path / "p.npy", batch.profiles)
    ratios = {}
    for median in ("0", "5"):
        doc = _json(capsys, "gold", str(tmp_path / "p.npy"), "--kit", KIT, "--median", median)
        ratios[median] = np.array([r["values"]["ratio"] for r in doc["results"]], dtype=float)
        want = interpret_strips(batch.profiles, spec, median=int(median)).ratio.ravel()
        np.testing.assert_allclose(ratios[median], want, rtol=1e-9)
    assert not np.allclose(ratios["0"], ratios["5"])
    with pytest.raises(SystemExit) as info:
        main(["interpret", "gold", str(tmp_path / "p.npy"), "--kit", KIT, "--median", "4"])
    assert info.value.code == 2
    assert "--median" in capsys.readouterr().err


def test_gold_images_and_spec_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = DEMO_KITS["carbofuran-v1"]
    imgs = generate_strip_images(
        spec, 5, np.random.default_rng(1), rgb=True, as_uint8=True, fault="control_missing"
    )
    np.save(tmp_path / "i.npy", imgs.images)
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    doc = _json(capsys, "gold", str(tmp_path / "i.npy"), "--spec", str(tmp_path / "spec.json"))
    results = doc["results"]
    assert isinstance(results, list)
    assert [r["verdict"] for r in results] == ["invalid"] * 5
    assert all("control_missing" in r["qc"] for r in results)
    # a pushed StationConfig holds several kits: --kit picks one
    cfg = StationConfig(version="7", issued_at="2026-11-25T08:00:00Z", gold_kits=tuple(DEMO_KITS.values()))
    (tmp_path / "config.json").write_text(cfg.model_dump_json())
    doc = _json(
        capsys, "gold", str(tmp_path / "i.npy"), "--spec", str(tmp_path / "config.json"), "--kit", spec.name
    )
    assert doc["kit"] == spec.name


def test_enzyme_csv_npy_npz_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = one_enzyme_run(
        GB_T_5009_199, 4, np.random.default_rng(7), inhibition=[0, 10, 65, 90], control_channel=0
    )
    table = np.column_stack([run.times_s, run.absorbance.T])
    np.savetxt(tmp_path / "e.csv", table, delimiter=",", header="time_s,control,s1,s2,s3", comments="")
    np.save(tmp_path / "e.npy", table)
    batch = generate_kinetics(NY_T_448, 3, 5, np.random.default_rng(8))
    np.savez(tmp_path / "b.npz", times_s=batch.times_s, absorbance=batch.absorbance, control=batch.control)
    (tmp_path / "e.json").write_text(
        json.dumps(
            {
                "profile": "ny448",
                "times_s": run.times_s.tolist(),
                "absorbance": run.absorbance.tolist(),
                "control": 0,
            }
        )
    )
    for name in ("e.csv", "e.npy"):
        doc = _json(capsys, "enzyme", str(tmp_path / name))
        assert doc["profile"] == "GB/T 5009.199-2003"
        results = doc["results"]
        assert isinstance(results, list)
        assert [r["verdict"] for r in results] == ["negative", "negative", "positive", "positive"]
        assert results[0]["control"] is True
        assert results[2]["values"]["inhibition_pct"] == pytest.approx(65, abs=2)
    doc = _json(capsys, "enzyme", str(tmp_path / "e.json"))
    assert doc["profile"] == "NY/T 448"
    assert [r["verdict"] for r in doc["results"]] == ["negative", "negative", "suspect", "positive"]
    doc = _json(capsys, "enzyme", str(tmp_path / "b.npz"), "--profile", "ny448")
    results = doc["results"]
    assert isinstance(results, list)
    assert [r["verdict"] for r in results] == [VERDICTS[v] for v in batch.verdict.ravel()]
    code, out, _ = _run(capsys, "enzyme", str(tmp_path / "e.csv"))
    assert code == 0
    assert "0 (control)" in out
    assert "inhib %" in out


@pytest.mark.parametrize(
    ("kind", "content", "extra", "message"),
    [
        ("gold", "1,2,3\n4,5\n", ["--kit", KIT], "data row 2 has 2 values"),
        ("gold", "0.5,abc\n", ["--kit", KIT], "non-numeric"),
        ("gold", "0.5,0.5\n", [], "no kit given"),
        ("gold", "0.5,0.5\n", ["--kit", "nope"], "unknown kit 'nope'"),
        ("gold", "0.5,0.5\n", ["--kit", KIT], "expects profiles of 1024 px"),
        ("enzyme", "t,a\n0,1\n", [], "a time column and ≥ 2 channel columns"),
        ("enzyme", "t,c,s\n0,0.1,0.1\n100,0.5,0.4\n", [], "need ≥ 3"),
        ("enzyme", "t,c,s\n0,0.1,0.1\n3,0.1,0.1\n6,0.1,0.1\n", ["--profile", "xx"], "unknown enzyme profile"),
    ],
)
def test_bad_files_exit_2_with_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    content: str,
    extra: list[str],
    message: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out, err = _run(capsys, kind, str(path), *extra)
    assert code == 2
    assert out == ""
    assert message in err


def test_missing_and_unsupported_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "gold", str(tmp_path / "none.npy"), "--kit", KIT)
    assert code == 2
    assert "no such file" in err
    (tmp_path / "x.txt").write_text("1")
    code, _, err = _run(capsys, "enzyme", str(tmp_path / "x.txt"))
    assert code == 2
    assert "unsupported file type '.txt'" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = _run(capsys, "gold", str(tmp_path / "bad.json"))
    assert code == 2
    assert "cannot read JSON" in err
