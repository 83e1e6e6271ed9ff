from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Mosquitto
from tests.postgres import PostgresServer, start_postgres


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
