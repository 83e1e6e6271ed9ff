"""benchmarks/interpret.py and benchmarks/accuracy.py still run (tiny sizes); interpret checks fast
against naive before timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPT = BENCH / "interpret.py"


def test_benchmark_script_runs_on_tiny_sizes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the script sets thread-count variables and sys.path at import: restore both afterwards
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_interpret", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--strips", "60", "--naive-strips", "30", "--runs", "20", "--naive-runs", "5", "--repeat", "1"]
    assert module.main([*argv, "--no-pin", "--kit", "nitrofurans-card-v1"]) == 0
    out = capsys.readouterr().out
    assert "interpret_strips (float64 input)" in out
    assert "interpret_kinetics" in out
    assert "summary: gold" in out


def test_accuracy_script_runs_on_tiny_sizes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH / "accuracy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--strips", "80", "--ref-strips", "10", "--missing", "40", "--kit", "peanut-allergen-v1"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "missing control: 0/40 not invalid, 0/40 with a speck" in out
    assert "summary: cells above the fit's p95: " in out
    assert "of 7; missing-control strips not invalid: 0;" in out
    assert "90% interval" in out
