"""Fixtures of the gateway tests: station TOML writer, in-process service, test acker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.outbox import Outbox, stored_sha256
from gateway.service import GatewayService
from kuaijian_schema.wire import InstrumentRef, Rejection, ResultBody, SampleRef
from tests.gateway.acker import Acker
from tests.helpers import Mosquitto, wait_for

STATION = "370214101203-01"
KEY = "4b4a2d746573742d73746174696f6e2d6b65792d30303031"  # hex, as enrol-station prints it
KEY_BYTES = bytes.fromhex(KEY)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    return repr(v)


def write_station(
    directory: Path,
    port: int,
    instruments: list[dict[str, Any]],
    *,
    link: dict[str, Any] | None = None,
    acquisition: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    web: dict[str, Any] | None = None,
    station: str = STATION,
    key: str = KEY,
) -> Path:
    """Write a station TOML with fast timings for tests; returns its path."""
    lines = [
        "[station]",
        f'id = "{station}"',
        f'key = "{key}"',
        'data_dir = "data"',
        "",
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{port}"',
        "keepalive_s = 5",
        "reconnect_min_s = 1",
        "reconnect_max_s = 1",
        "",
        "[link]",
    ]
    link_cfg = {"ack_timeout_s": 3.0, "tick_s": 0.05, "max_messages_per_s": 500.0, "status_interval_s": 1.0}
    link_cfg.update(link or {})
    lines += [f"{k} = {_toml_value(v)}" for k, v in link_cfg.items()]
    lines += ["", "[acquisition]"]
    acq = {"poll_interval_s": 0.05}
    acq.update(acquisition or {})
    lines += [f"{k} = {_toml_value(v)}" for k, v in acq.items()]
    if storage:
        lines += ["", "[storage]"] + [f"{k} = {_toml_value(v)}" for k, v in storage.items()]
    if web:
        lines += ["", "[web]"] + [f"{k} = {_toml_value(v)}" for k, v in web.items()]
    for inst in instruments:
        lines += ["", "[[instruments]]"]
        timeouts = inst.get("timeouts", {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2})
        lines += [f"{k} = {_toml_value(v)}" for k, v in inst.items() if k != "timeouts"]
        lines += ["[instruments.timeouts]"] + [f"{k} = {_toml_value(v)}" for k, v in timeouts.items()]
    path = directory / "station.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)  # it holds the station key
    return path


def result_body(n: int = 1, k: int = 0, *, qc: tuple[str, ...] = ()) -> ResultBody:
    """A valid result body (what the pipeline builds) whose values carry `n` and `k`."""
    return ResultBody(
        station=STATION,
        instrument=InstrumentRef(serial="T-0001", model="TEST", driver="plugin"),
        sample=SampleRef(id=f"S-{n}", product="菠菜"),
        method="gold",
        analyte="imidacloprid",
        channel=0,
        measured_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        verdict="negative",
        values={"n": float(n), "k": float(k)},
        qc=qc,
        algorithm="gold/1.0",
        config_version="builtin",
    )


def fast_instrument(name: str = "fast-1", **params: Any) -> dict[str, Any]:
    p = {"serial": "FAST-0001", "t0": time.time(), "rate": 500.0, "total": 100}
    p.update(params)
    return {"name": name, "driver": "plugin", "factory": "tests.gateway.fast_source:make", "params": p}


@pytest.fixture
def acker(mosquitto: Mosquitto) -> Iterator[Acker]:
    a = Acker(mosquitto.port, STATION, KEY_BYTES)
    a.start()
    wait_for(a.connected.is_set, 10, "acker did not connect")
    try:
        yield a
    finally:
        a.stop()


class RunningService:
    def __init__(self, config_path: Path) -> None:
        self.service = GatewayService(load_config(config_path))

    def __enter__(self) -> GatewayService:
        self.service.start()
        return self.service

    def __exit__(self, *exc: object) -> None:
        self.service.stop()


def drained(service: GatewayService, total: int) -> bool:
    box = service.outbox
    assert box is not None
    st = box.stats()
    return st.enqueued_total >= total and st.depth == 0


def rejection(box: Outbox, rid: str, seq: int, reason: str) -> Rejection:
    """The rejection a cloud sends for the stored row (id, seq) of `box`: with its payload's hash."""
    return Rejection(id=rid, seq=seq, reason=reason, sha256=stored_sha256(box.payloads([seq])[seq]))
