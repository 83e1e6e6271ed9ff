"""Nothing lost or duplicated through outages, with real Mosquitto and PostgreSQL: the PostgreSQL server
restarted while ingest is storing, and an ingest worker process SIGKILLed mid-batch. The "gateway" here
re-sends whatever it has no application ack for, as the real outbox does; at the end every result is stored
exactly once and acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.clock import SystemClock
from cloud.db import Database, dispose_engine, open_db
from cloud.ingest_worker import IngestWorker
from cloud.settings import Settings
from kuaijian_schema import Ack
from tests.cloud.factories import Grid, build_grid
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, wait_for
from tests.postgres import PostgresServer, start_postgres

A1 = "370214101203-01"
B1 = "370214102001-01"
N = 600
PER_MESSAGE = 10
N_KILL = 3000  # the SIGKILL test: a stream long enough that the kill lands in the middle of it


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A private server this test may restart without disturbing the session's shared one."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.cleanup()


class Gateway:
    """Publishes signed results in batches and re-sends every one not yet acknowledged, like the outbox."""

    def __init__(self, mosquitto: Mosquitto, grid: Grid, station: str, n: int = N) -> None:
        self.station = station
        self.n = n
        self.results = [grid.result(station) for _ in range(n)]
        self.acked: set[str] = set()
        self.lock = threading.Lock()
        self.client = Recorder(mosquitto.port, f"gw-{station}").start()
        self.client.subscribe(f"kj/v1/{station}/ack")

    def _collect(self) -> None:
        with self.lock:
            for payload in self.client.received(f"kj/v1/{self.station}/ack"):
                self.acked.update(str(i) for i in Ack.model_validate_json(payload).ids)

    def send_unacked(self, limit: int | None = None) -> int:
        """Publish the results not yet acked (at most `limit` of them); returns how many were published."""
        self._collect()
        todo = [r for r in self.results if r["id"] not in self.acked][:limit]
        for i in range(0, len(todo), PER_MESSAGE):
            body = json.dumps({"results": todo[i : i + PER_MESSAGE]}).encode()
            self.client.publish(f"kj/v1/{self.station}/result", body)
        return len(todo)

    def all_acked(self) -> bool:
        self._collect()
        return len(self.acked) == self.n

    def stop(self) -> None:
        self.client.stop()


def _resend_until_acked(gateways: list[Gateway], timeout: float) -> None:
    """The outbox's loop: re-send the unacknowledged every few seconds until all are acknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            wait_for(lambda: all(g.all_acked() for g in gateways), 3, "not yet")
        except AssertionError:
            for g in gateways:
                g.send_unacked()
        else:
            return
    missing = {g.station: g.n - len(g.acked) for g in gateways}
    raise AssertionError(f"results never acknowledged: {missing}")


def _assert_exactly_once(db: Database, gateways: list[Gateway]) -> None:
    for g in gateways:
        ids = [r[0] for r in db.execute("SELECT id FROM results WHERE station = ?", [g.station]).fetchall()]
        assert len(ids) == len(set(ids)) == g.n, f"{g.station}: {len(ids)} rows, {len(set(ids))} distinct"
        assert set(ids) == {r["id"] for r in g.results}
        assert db.scalar("SELECT high_seq FROM stations WHERE id = ?", [g.station]) == g.n
        assert (
            db.scalar("SELECT COUNT(*) FROM seq_gaps WHERE station = ? AND closed_at IS NULL", [g.station])
            == 0
        )


def test_postgres_restart_during_ingest_loses_and_duplicates_nothing(
    own_postgres: PostgresServer, mosquitto: Mosquitto
) -> None:
    url = own_postgres.create_database("outage")
    db = open_db(url)
    grid = build_grid(db)
    settings = Settings(
        db_url=url, broker_url=mosquitto.url, scheduler_enabled=False, ingest_batch_wait_s=0.01
    )
    worker = IngestWorker(settings, SystemClock())
    worker.start()
    gateways: list[Gateway] = []
    try:
        wait_for(worker.link.connected.is_set, 10, "ingest did not connect")
        gateways = [Gateway(mosquitto, grid, s) for s in (A1, B1)]
        for g in gateways:
            g.send_unacked()
        wait_for(lambda: worker.committed_batches > 0, 20, "ingest stored nothing before the restart")
        own_postgres.restart(mode="immediate")  # like a crash: no checkpoint, connections cut
        _resend_until_acked(gateways, 90)
    finally:
        for g in gateways:
            g.stop()
        worker.stop()
    db.reconnect()
    try:
        _assert_exactly_once(db, gateways)
    finally:
        db.close()
        dispose_engine(url)


def _ingest_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "kuaijian.cli", "cloud", "ingest", "--db", settings.database,
             "--broker", str(settings.broker_url), "--client-id", f"kj-ingest-{log.stem}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def test_sigkilled_ingest_worker_loses_and_duplicates_nothing(
    db: Database, grid: Grid, settings: Settings, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    procs: list[subprocess.Popen[bytes]] = []
    gateways: list[Gateway] = []
    try:
        procs.append(_ingest_process(cfg, tmp_path / "first.log"))
        gateways = [Gateway(mosquitto, grid, s, N_KILL) for s in (A1, B1)]

        def stored() -> int:
            return int(db.scalar("SELECT COUNT(*) FROM results"))

        # the first worker must be subscribed before the results go out (a shared subscription with no
        # member drops them): a status round trip proves it
        probe = Recorder(mosquitto.port, "probe").start()
        status = {"station": A1, "state": "online", "at": "2026-11-02T08:00:00+00:00"}

        def subscribed() -> bool:
            probe.publish(f"kj/v1/{A1}/status", json.dumps(status).encode())  # lost until it subscribes
            return bool(db.scalar("SELECT online FROM stations WHERE id = ?", [A1]) == 1)

        try:
            wait_for(subscribed, 30, "the first ingest worker never stored a status", interval=0.5)
        finally:
            probe.stop()
        # The first third of the stream goes out, the worker is killed as soon as it has stored some of it (its
        # batches may be half-committed or unacked), the rest is published while no worker runs: the kill lands
        # in the middle of the stream by construction, not by winning a race against a fast database.
        for g in gateways:
            g.send_unacked(N_KILL // 3)
        wait_for(lambda: stored() > 0, 20, "the first worker stored nothing")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert stored() <= 2 * (N_KILL // 3)
        for g in gateways:
            g.send_unacked()
        procs.append(_ingest_process(cfg, tmp_path / "second.log"))
        _resend_until_acked(gateways, 90)
    finally:
        for g in gateways:
            g.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
    _assert_exactly_once(db, gateways)
