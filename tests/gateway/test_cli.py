"""`kuaijian gateway run|status|check-config|rejected`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.outbox import Draft, Outbox, RecordDrafts
from kuaijian.cli import main
from tests.gateway.conftest import fast_instrument, rejection, result_body, write_station
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuaijian.cli", "gateway", "run", "--config", str(config), *extra],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_station(tmp_path, free_port(), [fast_instrument()])
    assert main(["gateway", "check-config", "--config", str(cfg)]) == 0
    assert "instrument fast-1: plugin" in capsys.readouterr().out
    assert main(["gateway", "status", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exists"] is False
    with Outbox.open(tmp_path / "data" / "outbox.db") as box:
        out = box.enqueue(
            "plugin:X",
            0,
            [RecordDrafts(1, (Draft.of("a", 0, result_body(1)), Draft.of("b", 0, result_body(2))))],
            lambda _data: "s",
        )
        box.ack(rejected=[rejection(box, out[0].id, out[0].seq, "unknown station")])
    assert main(["gateway", "status", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["depth"], doc["last_seq"], doc["rejected_total"]) == (1, 2, 1)
    assert doc["cursors"] == {"plugin:X": {"epoch": 0, "last_record": 1}}
    assert main(["gateway", "status", "--config", str(cfg)]) == 0
    assert "depth: 1" in capsys.readouterr().out
    assert main(["gateway", "rejected", "--config", str(cfg)]) == 0
    assert "reason: unknown station" in capsys.readouterr().out
    assert main(["gateway", "rejected", "--config", str(cfg), "--requeue"]) == 0
    assert "requeued 1 result(s) for delivery: seq 1" in capsys.readouterr().out
    assert main(["gateway", "status", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["depth"], doc["rejected_total"]) == (2, 0)


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "station.toml"
    cfg.write_text('[station]\nid = "370214101203-01"\nkey = "00112233445566778899aabbccddeeff"\n')
    assert main(["gateway", "check-config", "--config", str(cfg)]) == 2
    assert "mqtt: Field required" in capsys.readouterr().err


def test_run_offline_then_corrupt_outbox_exits_3(tmp_path: Path) -> None:
    cfg = write_station(tmp_path, free_port(), [fast_instrument(total=20, rate=1000.0)])
    done = _run(cfg, "--duration", "1.0")
    assert done.returncode == 0, done.stderr
    db = tmp_path / "data" / "outbox.db"
    with Outbox.open(db) as box:
        assert box.stats().enqueued_total == 20, "offline run must still measure and store"
    db.write_bytes(b"garbage" * 2000)
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    done = _run(cfg, "--duration", "0.5")
    assert done.returncode == 3
    assert "corrupt" in done.stderr
    assert "moved to" in done.stderr
    assert list((tmp_path / "data").glob("outbox.db.corrupt-*"))


def test_corrupt_outbox_is_salvaged_on_the_next_start(tmp_path: Path) -> None:
    """Damage that fails the integrity check but leaves the rows readable (here: the urgent-rows index's page):
    exit 3 once, then the next start restores every un-sent result and the instrument cursor, so nothing
    is lost and the instrument is not read again into duplicates."""
    import sqlite3

    cfg = write_station(tmp_path, free_port(), [fast_instrument(total=50, rate=1000.0)])
    assert _run(cfg, "--duration", "1.0").returncode == 0
    db = tmp_path / "data" / "outbox.db"
    with Outbox.open(db) as box:
        before = box.payloads(list(range(1, 51)))
        assert len(before) == 50
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    rootpage = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox_urgent'").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    data[(rootpage - 1) * page_size : rootpage * page_size] = b"\xa5" * page_size
    db.write_bytes(bytes(data))

    failed = _run(cfg, "--duration", "0.5")
    assert failed.returncode == 3, failed.stderr
    assert "salvaged into it automatically" in failed.stderr
    again = _run(cfg, "--duration", "1.0")
    assert again.returncode == 0, again.stderr
    assert "50 of 50 un-sent results restored" in again.stderr
    with Outbox.open(db) as box:
        after = box.payloads(list(range(1, 10_000)))
        assert after == before, "the same results (ids, seqs, signatures), no duplicates"
        assert box.cursor("plugin:FAST-0001") is not None
