"""Enrolment through the CLI, then a real Mosquitto with the generated password file + ACL:
a station may publish only on its own result/status topics and read only its own ack/config."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from cloud.enrol import mosquitto_hash
from kuaijian.cli import main
from tests.cloud.factories import GRID_CSV
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, wait_for

A1 = "370214101203-01"
B1 = "370214102001-01"


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    assert code == 0, out.getvalue()
    return out.getvalue()


def _field(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s+(\S+)", text, re.MULTILINE)
    assert m, text
    return m.group(1)


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hash uses mosquitto_passwd's format: check it against a file the real tool wrote."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True, capture_output=True)
    line = pw.read_text().strip()
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    assert mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations)) == line.split(":", 1)[1]


def test_enrolled_station_limited_to_own_topics(tmp_path: Path) -> None:
    db = str(tmp_path / "cloud.db")
    grid_csv = tmp_path / "grid.csv"
    grid_csv.write_text(GRID_CSV, encoding="utf-8")
    assert "6 created" in _cli("cloud", "import-grid", "--db", db, str(grid_csv))
    creds = {}
    for station, village in ((A1, "370214101203"), (B1, "370214102001")):
        out = _cli("cloud", "enrol-station", "--db", db, "--station", station, "--node", village)
        creds[station] = _field(out, "mqtt password")
        assert re.fullmatch(r"[0-9a-f]{64}", _field(out, "hmac key"))
        assert f'id = "{station}"' in out  # the station.toml snippet
    auth_dir = tmp_path / "auth"
    _cli(
        "cloud",
        "mosquitto-auth",
        "--db",
        db,
        "--out",
        str(auth_dir),
        "--ingest-user",
        "kj-ingest",
        "--ingest-password",
        "ingest-pw",
    )
    acl = (auth_dir / "acl").read_text()
    assert f"user {A1}\ntopic write kj/v1/{A1}/result\n" in acl

    # Run as root, mosquitto would drop to the `mosquitto` user, which cannot read our 0600 files in tmp.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    broker = Mosquitto(
        workdir=tmp_path,
        extra_conf=f"{run_as}allow_anonymous false\npassword_file {auth_dir / 'passwd'}\nacl_file {auth_dir / 'acl'}\n",
    )
    clients: list[Recorder] = []
    try:
        broker.start()
        ingest = Recorder(broker.port, "ingest", "kj-ingest", "ingest-pw").start()
        clients.append(ingest)
        assert not ingest.subscribe("$share/kj-ingest/kj/v1/+/result")[0].is_failure
        assert not ingest.subscribe("kj/v1/+/status")[0].is_failure
        a1 = Recorder(broker.port, "a1", A1, creds[A1]).start()
        clients.append(a1)

        # own topics: allowed
        assert not a1.publish(f"kj/v1/{A1}/result", b'{"own": 1}').is_failure
        assert not a1.publish(f"kj/v1/{A1}/status", b'{"own": 2}').is_failure
        assert not a1.subscribe(f"kj/v1/{A1}/ack")[0].is_failure
        assert not a1.subscribe(f"kj/v1/{A1}/config")[0].is_failure
        wait_for(lambda: ingest.received(f"kj/v1/{A1}/result"), 10, "ingest did not get A1's own result")

        # another station's topics: refused (MQTT 5 reason 0x87 "Not authorized")
        assert a1.publish(f"kj/v1/{B1}/result", b'{"forged": 1}').is_failure
        assert a1.publish(f"kj/v1/{B1}/status", b'{"forged": 2}').is_failure
        assert a1.publish(f"kj/v1/{A1}/ack", b"{}").is_failure  # only the cloud writes acks
        assert a1.publish(f"kj/v1/{A1}/config", b"{}").is_failure
        # mosquitto grants any SUBSCRIBE but checks `read` access on delivery
        a1.subscribe(f"kj/v1/{B1}/ack")
        a1.subscribe("kj/v1/+/result")
        assert not ingest.publish(f"kj/v1/{B1}/ack", b'{"for": "B1"}').is_failure
        assert not ingest.publish(f"kj/v1/{A1}/ack", b'{"ids": []}').is_failure
        # the cloud can write A1's ack, and A1 gets it — and, delivered in order before it, nothing of B1's
        wait_for(lambda: a1.received(f"kj/v1/{A1}/ack"), 10, "A1 did not receive its ack")
        assert a1.received(f"kj/v1/{B1}/ack") == []
        assert not a1.publish(f"kj/v1/{A1}/result", b'{"own": 3}').is_failure
        wait_for(
            lambda: len(ingest.received(f"kj/v1/{A1}/result")) == 2, 10, "ingest did not get A1's 2nd result"
        )
        assert a1.received(f"kj/v1/{A1}/result") == []  # a station cannot read results, not even its own

        # nothing of B1's was delivered to the ingest side
        ingest.publish(f"kj/v1/{A1}/ack", b"sync")
        assert ingest.received(f"kj/v1/{B1}/result") == []
        assert ingest.received(f"kj/v1/{B1}/status") == []

        wrong = Recorder(broker.port, "wrong", A1, "not-the-password").start(expect_ok=False)
        clients.append(wrong)
        assert wrong.connect_rc is not None
        assert wrong.connect_rc.is_failure
        anon = Recorder(broker.port, "anon").start(expect_ok=False)
        clients.append(anon)
        assert anon.connect_rc is not None
        assert anon.connect_rc.is_failure
    finally:
        for c in clients:
            c.stop()
        broker.stop()


def test_enrol_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cloud.db")
    grid_csv = tmp_path / "grid.csv"
    grid_csv.write_text(GRID_CSV, encoding="utf-8")
    _cli("cloud", "import-grid", "--db", db, str(grid_csv))
    assert main(["cloud", "enrol-station", "--db", db, "--station", A1, "--node", "999999999999"]) == 2
    assert main(["cloud", "enrol-station", "--db", db, "--station", B1, "--node", "370214101203"]) == 2
    _cli("cloud", "enrol-station", "--db", db, "--station", A1, "--node", "370214101203")
    assert main(["cloud", "enrol-station", "--db", db, "--station", A1, "--node", "370214101203"]) == 2
    assert "already enrolled" in capsys.readouterr().err
    out = _cli("cloud", "enrol-station", "--db", db, "--station", A1, "--node", "370214101203", "--rotate")
    assert _field(out, "station") == A1
    token = _cli(
        "cloud", "create-user", "--db", db, "--name", "t", "--role", "town", "--node", "370214101"
    ).strip()
    assert token.startswith("kjc_")
    assert (
        main(["cloud", "create-user", "--db", db, "--name", "v", "--role", "town", "--node", "370214101203"])
        == 2
    )
