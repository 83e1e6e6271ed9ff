"""Secrets at rest and in transit to the process: the cloud database (and its WAL/SHM) is created 0600, and
every cloud verb that needs the broker password can take it from a file or the environment instead of the
command line (where any local user can read it in /proc/PID/cmdline)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.db import open_db, transaction
from cloud.settings import Settings
from kuaijian.cli import main


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files would be world-readable
    try:
        yield
    finally:
        os.umask(old)


def test_cloud_database_and_wal_created_private(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "cloud.db"
    db = open_db(path)
    try:
        with transaction(db):
            db.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES ('t', 't', '', 'probe')"
            )
        files = [path, tmp_path / "cloud.db-wal", tmp_path / "cloud.db-shm"]
        assert all(f.exists() for f in files)
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f"{f.name}: {oct(f.stat().st_mode)}"
    finally:
        db.close()


def test_settings_read_the_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "mqtt.pw"
    secret.write_text("s3cret-from-file\n", encoding="utf-8")
    monkeypatch.setenv("KJ_CLOUD_MQTT_PASSWORD_FILE", str(secret))
    assert Settings().mqtt_password == "s3cret-from-file"
    with pytest.raises(ValueError, match="not both"):
        Settings(mqtt_password="x")
    monkeypatch.setenv("KJ_CLOUD_MQTT_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        Settings()


def _verifies(dynsec: Path, user: str, password: str) -> bool:
    client = next(c for c in json.loads(dynsec.read_text())["clients"] if c["username"] == user)
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(client["salt"]), client["iterations"], 64
    )
    return base64.b64encode(digest).decode() == client["password"]


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_mosquitto_auth_takes_the_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "cloud.db")
    secret = tmp_path / "ingest.pw"
    secret.write_text("from-the-file\n", encoding="utf-8")
    secret.chmod(0o600)
    common = ("cloud", "mosquitto-auth", "--db", db, "--ingest-user", "kj-ingest", "--group", "")
    code, out = _run(*common, "--out", str(tmp_path / "a"), "--ingest-password-file", str(secret))
    assert code == 0, out
    assert _verifies(tmp_path / "a" / "dynamic-security.json", "kj-ingest", "from-the-file")

    monkeypatch.setenv("KJ_CLOUD_MQTT_PASSWORD", "from-the-env")
    code, out = _run(*common, "--out", str(tmp_path / "b"))
    assert code == 0, out
    assert _verifies(tmp_path / "b" / "dynamic-security.json", "kj-ingest", "from-the-env")
    monkeypatch.delenv("KJ_CLOUD_MQTT_PASSWORD")

    monkeypatch.setenv("KJ_CLOUD_MQTT_PASSWORD_FILE", str(secret))
    code, out = _run(*common, "--out", str(tmp_path / "c"))
    assert code == 0, out
    assert _verifies(tmp_path / "c" / "dynamic-security.json", "kj-ingest", "from-the-file")

    code, out = _run(*common, "--out", str(tmp_path / "d"), "--ingest-password-file", str(tmp_path / "nope"))
    assert code == 2
    assert "cannot read" in out


@pytest.mark.parametrize("verb", ["serve", "ingest", "push-config", "tick"])
def test_broker_verbs_take_the_password_from_a_file(verb: str, tmp_path: Path) -> None:
    from cloud.cli import _settings
    from kuaijian.cli import build_parser

    secret = tmp_path / "mqtt.pw"
    secret.write_text("pw-in-file\n", encoding="utf-8")
    extra = ["--target", "370214", "x.json"] if verb == "push-config" else []
    args = build_parser().parse_args(["cloud", verb, "--mqtt-password-file", str(secret), *extra])
    assert _settings(args).mqtt_password == "pw-in-file"
