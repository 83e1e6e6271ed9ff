"""A real Mosquitto loading the access control `kuaijian cloud mosquitto-auth` generates from a cloud database
with enrolled stations (Dynamic Security plugin), for tests that need the production broker set-up.

As root, Mosquitto drops to the `mosquitto` user (as a service does) and must still read the files.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloud.mosquitto import gateway_client_id
from cloud.settings import Settings
from kuaijian.cli import main
from tests.cloud.factories import GRID_CSV
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto

A1 = "370214101203-01"
A2 = "370214101203-02"
A3 = "370214101204-01"
B1 = "370214102001-01"
VILLAGES = {A1: "370214101203", A2: "370214101203", A3: "370214101204", B1: "370214102001"}
IS_ROOT = os.geteuid() == 0


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    assert code == 0, out.getvalue()
    return out.getvalue()


def field_of(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s+(\S+)", text, re.MULTILINE)
    assert m, text
    return m.group(1)


@dataclass
class SecuredBroker:
    broker: Mosquitto
    db: Path
    auth_dir: Path
    passwords: dict[str, str]
    keys: dict[str, bytes]

    def station(self, station: str, client_id: str | None = None, *, expect_ok: bool = True) -> Recorder:
        cid = client_id or gateway_client_id(station)
        return Recorder(self.broker.port, cid, station, self.passwords[station]).start(expect_ok=expect_ok)

    def ingest_settings(self, tmp_path: Path) -> Settings:
        return Settings(
            db_path=self.db,
            broker_url=self.broker.url,
            mqtt_username="kj-ingest",
            mqtt_password="ingest-pw",
            scheduler_enabled=False,
            ingest_batch_wait_s=0.01,
        )


@contextlib.contextmanager
def secured_broker(tmp_path: Path) -> Iterator[SecuredBroker]:
    db = tmp_path / "cloud.db"
    grid_csv = tmp_path / "grid.csv"
    grid_csv.write_text(GRID_CSV, encoding="utf-8")
    assert "6 created" in cli("cloud", "import-grid", "--db", str(db), str(grid_csv))
    passwords: dict[str, str] = {}
    keys: dict[str, bytes] = {}
    for station, village in VILLAGES.items():
        out = cli("cloud", "enrol-station", "--db", str(db), "--station", station, "--node", village)
        passwords[station] = field_of(out, "mqtt password")
        keys[station] = bytes.fromhex(field_of(out, "hmac key"))
        assert f'id = "{station}"' in out  # the station.toml snippet
    # the broker, dropped to its own user, must be able to reach the files: a private directory it may enter
    auth_dir = Path(tempfile.mkdtemp(prefix="kj-auth-"))
    auth_dir.chmod(0o711)
    try:
        group = [] if IS_ROOT else ["--group", ""]  # not root: the broker runs as us, 0600 files
        cli(
            "cloud", "mosquitto-auth", "--db", str(db), "--out", str(auth_dir),
            "--ingest-user", "kj-ingest", "--ingest-password", "ingest-pw", *group,
        )  # fmt: skip
        conf = (auth_dir / "kuaijian.conf").read_text()
        # no `user root`: started as root, Mosquitto drops to the `mosquitto` user as a service does
        broker = Mosquitto(workdir=tmp_path, extra_conf=conf)
        broker.start()
        try:
            yield SecuredBroker(broker, db, auth_dir, passwords, keys)
        finally:
            broker.stop()
    finally:
        shutil.rmtree(auth_dir)
