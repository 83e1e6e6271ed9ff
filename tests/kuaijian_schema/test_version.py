"""One version number, in pyproject.toml, read from the installed metadata by gateway, cloud and CLI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cloud.app import create_app
from cloud.settings import Settings
from kuaijian.cli import main
from kuaijian_schema.version import software_version

ROOT = Path(__file__).resolve().parents[2]


def test_version_comes_from_the_distribution_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert software_version() == declared
    assert create_app(Settings(db_path=tmp_path / "c.db")).version == declared
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"kuaijian {declared}"
    for path in [*ROOT.glob("gateway/*.py"), *ROOT.glob("cloud/**/*.py")]:
        assert "from kuaijian import" not in path.read_text(encoding="utf-8"), (
            f"{path} imports the CLI package"
        )
