from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a random 127.0.0.1 port; stopped at the end of the test."""
    broker = Mosquitto(workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
