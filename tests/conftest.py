from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers import Mosquitto
from tests.postgres import PostgresServer, start_postgres

# Property tests check what code does, not how fast (speed is measured by benchmarks/): no per-example
# deadline, which a loaded 2-core machine trips at random (hypothesis's default is 200 ms an example). On
# top of the profile in force: under CI that is hypothesis's own "ci" (derandomized, no database).
settings.register_profile("kuaijian", parent=settings.default, deadline=None)
settings.load_profile("kuaijian")

ROOT = Path(__file__).resolve().parents[1]
# Caches the tools keep in the repository on purpose (all in .gitignore).
TOOL_CACHES = {".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".venv", "__pycache__"}


def _root_entries() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name not in TOOL_CACHES and not p.name.endswith(".egg-info")}


@pytest.fixture(scope="session", autouse=True)
def repository_root_stays_clean() -> Iterator[None]:
    """Tests write into tmp_path, never into the repository: a file the suite leaves in its root fails it."""
    before = _root_entries()
    yield
    left = sorted(_root_entries() - before)
    assert not left, f"the tests left files in the repository root: {left}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a random 127.0.0.1 port; stopped at the end of the test."""
    broker = Mosquitto(workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (Debian's binaries, initdb into a temporary directory, random 127.0.0.1
    port, fsync on) shared by the session's tests; stopped and deleted at the end."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.cleanup()
