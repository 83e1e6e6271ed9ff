"""The app's background services: the in-app scheduler escalates with the injected clock, and
`kuaijian cloud serve` runs end to end (uvicorn + ingest against a real Mosquitto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from kuaijian_schema import Ack
from tests.cloud.factories import T0, Grid, api_client_class, bearer, build_grid
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, free_port, port_open, wait_for

A1 = "370214101203-01"


def test_in_app_scheduler_uses_the_clock(settings: Settings, grid: Grid, db: Database) -> None:
    clock = ManualClock(T0)
    r = grid.result(A1, verdict="positive")
    process_batch(db, [Inbound(f"kj/v1/{A1}/result", json.dumps(r).encode(), T0)], settings)
    cfg = settings.model_copy(update={"scheduler_enabled": True, "scheduler_interval_s": 0.02})
    with api_client_class()(create_app(cfg, clock=clock)) as api:
        headers = bearer(grid.tokens["town_a"])

        def level() -> str:
            return str(api.get("/api/cases", headers=headers).json()["items"][0]["level"])

        assert level() == "station"
        clock.advance(timedelta(hours=25))
        wait_for(lambda: level() == "village", 10, "the scheduler did not escalate the overdue case")


def _get(port: int, path: str, token: str | None = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_cli_serve_end_to_end(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db_path = tmp_path / "cloud.db"
    from cloud.db import open_db

    db = open_db(db_path)
    grid = build_grid(db)
    db.close()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {**os.environ, "KJ_CLOUD_SCHEDULER_INTERVAL_S": "3600"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuaijian.cli", "cloud", "serve", "--db", str(db_path), "--broker", mosquitto.url,
         "--port", str(port), "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    station = Recorder(mosquitto.port, "gw").start()
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 30, "serve did not listen")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        assert _get(port, "/api/health")["status"] == "ok"
        station.subscribe(f"kj/v1/{A1}/ack")
        result = grid.result(A1)

        def acked() -> bool:
            # the ingest subscription may not be active yet: re-send until acked (as a gateway does)
            if not station.received(f"kj/v1/{A1}/ack"):
                station.publish(f"kj/v1/{A1}/result", json.dumps(result).encode())
                return False
            return True

        wait_for(acked, 20, "no ack from kuaijian cloud serve", interval=0.3)
        ack = Ack.model_validate_json(station.received(f"kj/v1/{A1}/ack")[0])
        assert [str(i) for i in ack.ids] == [result["id"]]
        body = _get(port, "/api/results", grid.tokens["admin"])
        assert [i["id"] for i in body["items"]] == [result["id"]]
    finally:
        station.stop()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15)
    text = (tmp_path / "serve.log").read_text()
    assert proc.returncode in (0, -15), text
    assert "Application shutdown complete" in text
    assert "Traceback" not in text
    # issue 9 item 16: serve says how its MQTT connection is doing
    assert f"connected to {mosquitto.url}" in text


def test_cli_tick_escalates_and_publishes_pending_configs(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto
) -> None:
    import contextlib
    import io

    from cloud.auth import user_for_token
    from cloud.configs import push_config
    from kuaijian.cli import main

    r = grid.result(A1, verdict="positive")
    process_batch(
        db, [Inbound(f"kj/v1/{A1}/result", json.dumps(r).encode(), T0)], settings
    )  # deadline T0 + 24 h
    admin = user_for_token(db, grid.tokens["admin"], T0)
    push_config(db, admin, A1, [], [], T0)  # pending: no broker when pushed
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["cloud", "tick", "--db", settings.database, "--broker", mosquitto.url])
    assert code == 0
    assert (
        out.getvalue().strip().startswith("reminded 1, escalated 1;")
    )  # the wall clock is far past T0 + 24 h
    assert db.execute("SELECT level FROM cases").fetchone()[0] == "village"
    station = Recorder(mosquitto.port, "gw-tick").start()
    try:
        station.subscribe(f"kj/v1/{A1}/config")
        retained = wait_for(lambda: station.received(f"kj/v1/{A1}/config"), 10, "config was not retained")
        assert json.loads(retained[0])["version"] == "1"
    finally:
        station.stop()


def test_cli_push_config_to_a_town_publishes_retained(
    tmp_path: Path, settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto
) -> None:
    """`kuaijian cloud push-config --target TOWN FILE --broker URL`: every station of the town gets the
    new version retained on its config topic; a bad file is refused with a message naming it."""
    import contextlib
    import io

    from kuaijian.cli import main
    from kuaijian_schema import StationConfig
    from kuaijian_schema.kits import DEMO_KITS
    from kuaijian_schema.specs import NY_T_448

    kit = DEMO_KITS["imidacloprid-v1"].model_copy(update={"version": "lot-2026-11"})
    cfg_file = tmp_path / "kits.json"
    cfg_file.write_text(
        json.dumps({"gold_kits": [kit.model_dump()], "enzyme_profiles": [NY_T_448.model_dump()]}),
        encoding="utf-8",
    )
    town_stations = [s for s in grid.enrolments if s.startswith("370214101")]
    assert town_stations
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["cloud", "push-config", "--db", settings.database, "--broker", mosquitto.url,
             "--target", "370214101", str(cfg_file)]
        )  # fmt: skip
    assert code == 0, out.getvalue()
    assert f"stored for {len(town_stations)} station(s)" in out.getvalue()
    assert f"published (retained) to {len(town_stations)} station(s)" in out.getvalue()
    station = Recorder(mosquitto.port, "gw-push").start()
    try:
        for st in town_stations:
            station.subscribe(f"kj/v1/{st}/config")
            raw = wait_for(lambda st=st: station.received(f"kj/v1/{st}/config"), 10, f"no config for {st}")
            pushed = StationConfig.model_validate_json(raw[0])
            assert pushed.gold_kits[0].version == "lot-2026-11"
            assert pushed.enzyme_profiles[0].positive_pct == 70.0
    finally:
        station.stop()
    bad = tmp_path / "bad.json"
    bad.write_text('{"gold_kits": [{"name": "x"}]}', encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert (
            main(["cloud", "push-config", "--db", settings.database, "--target", "370214101", str(bad)]) == 2
        )
    assert "bad.json" in err.getvalue()
