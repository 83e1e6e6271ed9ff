"""Outbox full (SQLITE_FULL via the configured size cap): the worker stops reading new records (the
instrument keeps them), says why in its status, and resumes when acks free space — nothing is lost."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, drained, fast_instrument, write_station
from tests.helpers import Mosquitto, free_port, wait_for


def test_disk_full_pauses_reading_and_resumes(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path, port=free_port())
    total = 400
    cfg = write_station(
        tmp_path,
        broker.port,
        [fast_instrument(total=total, rate=20000.0)],
        acquisition={"full_retry_s": 0.1, "read_batch": 4},
        storage={"max_db_mb": 0.25},  # database + WAL (the WAL takes a quarter)
    )
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        worker = svc.workers[0]
        wait_for(
            lambda: worker.state.last_error is not None and "outbox full" in worker.state.last_error,
            10,
            "the outbox never filled up",
        )
        stuck = box.stats().enqueued_total
        assert 0 < stuck < total
        assert worker.state.state == "unavailable"
        cursor = box.cursors()["plugin:FAST-0001"]
        assert cursor.last_record == stuck, "cursor never passes what was stored"
        status = svc.status()
        assert status.instruments[0].last_error is not None
        # Network (and so acks) come back: space frees up, reading resumes, everything arrives.
        broker.start()
        acker = Acker(broker.port, STATION, KEY_BYTES)
        acker.start()
        try:
            wait_for(lambda: drained(svc, total), 30, f"did not recover: {box.stats()}")
            wait_for(lambda: worker.state.state == "ok", 5, "worker did not report ok after space returned")
            assert acker.seqs() == set(range(1, total + 1))
            assert not acker.bad
        finally:
            acker.stop()
            broker.stop()


def test_long_run_under_a_small_cap_keeps_going_and_never_duplicates(tmp_path: Path) -> None:
    """The de-duplication keys of records already read are pruned behind the cursor: under a 0.15 MB cap
    they used to fill the database (at ~324 results) even with every result acked, and reading stopped for
    good. Many times that many records pass through now, each delivered exactly once."""
    broker = Mosquitto(workdir=tmp_path, port=free_port())
    total = 2000
    cfg = write_station(
        tmp_path,
        broker.port,
        [fast_instrument(total=total, rate=20000.0)],
        acquisition={"full_retry_s": 0.05, "read_batch": 8},
        storage={"max_db_mb": 0.15},
    )
    broker.start()
    acker = Acker(broker.port, STATION, KEY_BYTES)
    acker.start()
    try:
        with RunningService(cfg) as svc:
            box = svc.outbox
            assert box is not None
            try:
                wait_for(lambda: drained(svc, total), 120, "the run stalled")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {box.stats()}, worker {svc.workers[0].state}") from exc
            st = box.stats()
            assert st.record_keys <= 32 + 8, f"{st.record_keys} keys kept (storage.keep_record_keys = 32)"
            assert st.record_keys_pruned >= total - 40
        with acker.lock:
            samples = [doc["sample"]["id"] for doc in acker.received.values()]
        assert acker.seqs() == set(range(1, total + 1))
        assert sorted(samples) == [f"FAST-0001-S{n:06d}" for n in range(1, total + 1)], (
            "a record twice or never"
        )
        assert not acker.bad
    finally:
        acker.stop()
        broker.stop()
