"""Secrets and results on the station's disk (issue 9 item 10, gateway half): the outbox database, its WAL
and shared-memory files and the data dir are private to the gateway's user (an existing outbox readable by
others is tightened at start), and a world-readable station TOML holding the key or broker password — or a
world-readable key / password file — is warned about."""

from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.outbox import Outbox
from gateway.service import GatewayService
from tests.gateway.conftest import KEY, fast_instrument, write_station
from tests.helpers import wait_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outbox_files_are_private(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, 1, [fast_instrument(total=3, rate=1000.0)]))
    svc = GatewayService(cfg)
    svc.start()
    try:
        box = svc.outbox
        assert box is not None
        wait_for(lambda: box.stats().enqueued_total == 3, 10, "results not enqueued")
        db = cfg.db_path
        files = [db, db.with_name("outbox.db-wal"), db.with_name("outbox.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(cfg.data_dir) == 0o700
    finally:
        svc.stop()


def test_an_existing_world_readable_outbox_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    with Outbox.open(db):
        assert _mode(db) == 0o600
        assert _mode(db.with_name("outbox.db-wal")) == 0o600


def _secret_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "gateway.config" and r.levelno == logging.WARNING
    ]


def test_world_readable_secrets_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.config")
    toml = write_station(tmp_path, 1, [])
    toml.chmod(0o644)
    load_config(toml)
    [warning] = _secret_warnings(caplog)
    assert str(toml) in warning
    assert "station.key" in warning
    assert "chmod 600" in warning
    caplog.clear()
    toml.chmod(0o640)  # group-readable (the broker's/service's group) is the operator's choice: no warning
    load_config(toml)
    assert _secret_warnings(caplog) == []

    # the key in a file instead: the TOML holds no secret, the key file is what must be private
    key_file = tmp_path / "station.key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)
    text = toml.read_text().replace(f'key = "{KEY}"', 'key_file = "station.key"')
    toml.write_text(text)
    toml.chmod(0o644)
    caplog.clear()
    load_config(toml)
    [warning] = _secret_warnings(caplog)
    assert "station.key_file" in warning
    assert str(key_file) in warning
    key_file.chmod(0o600)
    caplog.clear()
    load_config(toml)
    assert _secret_warnings(caplog) == []
