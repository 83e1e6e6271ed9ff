"""The house style is enforced by the suite, not only by `make lint`: ruff (lint + format) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_lint(command: list[str], tmp_path: Path) -> None:
    exe = BIN / command[0]
    if not exe.exists():
        pytest.skip(f"{command[0]} is not installed in this environment (pip install -e '.[dev]')")
    extra = ["--cache-dir", str(tmp_path / "cache")] if command[0] == "mypy" else []
    done = subprocess.run(
        [str(exe), *command[1:], *extra], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
