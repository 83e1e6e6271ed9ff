"""The gateway's hot path keeps its stages apart: the commit of one batch (serialise, sign, fsync) does not hold
up reading the next, and acks are applied off paho's network thread (which would otherwise stop reading and
writing the socket for every ack's disk write)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers.readings import DeviceInfo, Reading
from drivers.timeouts import Timeouts
from gateway.link import _id_texts
from gateway.outbox import Enqueued, Outbox, RecordDrafts
from gateway.pipeline import Interpreter, SpecHolder
from gateway.worker import QUEUED_BATCHES, InstrumentWorker
from kuaijian_schema.wire import Ack, Signer, hmac_signer, new_result_id
from tests.gateway.acker import Acker
from tests.gateway.conftest import STATION, RunningService, drained, fast_instrument, write_station
from tests.gateway.fast_source import FastGoldSource
from tests.helpers import Mosquitto, wait_for


class _CountingSource(FastGoldSource):
    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params, Timeouts())
        self.read: set[int] = set()

    def read_record(self, record_no: int) -> Any:
        self.read.add(record_no)
        return super().read_record(record_no)


class _GatedWorker:
    """A worker over `source` whose first commit (the batch holding record 1) waits for `release`, recording the
    records of every enqueue transaction and every record interpreted."""

    def __init__(self, tmp_path: Path, source: _CountingSource, name: str, read_batch: int) -> None:
        self.box = Outbox.open(tmp_path / "o.db")
        self.entered = threading.Event()
        self.release = threading.Event()
        self.transactions: list[list[int]] = []
        self.interpreted: list[int] = []
        enqueue = self.box.enqueue
        interpret = Interpreter(station=STATION, specs=SpecHolder())

        def gated_enqueue(
            instrument: str,
            epoch: int,
            records: Sequence[RecordDrafts],
            sign: Signer,
            identity: str | None = None,
        ) -> list[Enqueued]:
            self.transactions.append([r.record_no for r in records])
            if records[0].record_no == 1:
                self.entered.set()
                assert self.release.wait(30), "the test never released the first commit"
            return enqueue(instrument, epoch, records, sign, identity)

        def counting_interpret(info: DeviceInfo, readings: list[Reading]) -> list[RecordDrafts]:
            self.interpreted.extend(r.record_no for r in readings)
            return interpret(info, readings)

        self.box.enqueue = gated_enqueue  # type: ignore[method-assign]
        self.worker = InstrumentWorker(
            name=name,
            driver="plugin",
            make_analyzer=lambda: source,
            interpret=counting_interpret,
            outbox=self.box,
            sign=hmac_signer(b"k" * 16),
            timeouts=Timeouts(),
            poll_interval_s=0.01,
            read_batch=read_batch,
            start_from="first",
            full_retry_s=0.05,
        )

    def __enter__(self) -> _GatedWorker:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.worker.stop()
        self.worker.join(10)
        self.box.close()
        assert not self.worker.alive


def test_the_next_batch_is_read_and_interpreted_while_the_last_one_commits(tmp_path: Path) -> None:
    source = _CountingSource({"serial": "OVL-1", "t0": 0.0, "rate": 1e9, "total": 8})
    with _GatedWorker(tmp_path, source, "ovl", read_batch=4) as g:
        wait_for(g.entered.is_set, 10, "the first batch was never committed")
        wait_for(
            lambda: {5, 6, 7, 8} <= set(g.interpreted),
            10,
            f"records 5-8 not read and interpreted while records 1-4 commit (read {sorted(source.read)})",
        )
        assert g.box.stats().enqueued_total == 0, "the first commit is still held"
        g.release.set()
        wait_for(lambda: g.box.stats().enqueued_total == 8, 10, "not every record was committed")
        cursor = g.box.cursor("plugin:OVL-1")
        assert cursor is not None
        assert cursor.last_record == 8


def test_acks_are_applied_off_the_network_thread(tmp_path: Path, mosquitto: Mosquitto, acker: Acker) -> None:
    acker.ack_enabled = False
    cfg = write_station(
        tmp_path, mosquitto.port, [fast_instrument(total=40, rate=4000.0)], link={"ack_timeout_s": 0.5}
    )
    with RunningService(cfg) as svc:
        box = svc.outbox
        assert box is not None
        threads: list[str] = []
        ack = box.ack

        def recording_ack(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return ack(*args, **kwargs)

        box.ack = recording_ack  # type: ignore[method-assign]
        wait_for(lambda: len(acker.seqs()) == 40, 10, "not every result was published")
        acker.ack_enabled = True  # the re-sends are acked now
        wait_for(lambda: drained(svc, 40), 15, "the outbox did not drain")
    assert threads, "no ack was applied"
    assert set(threads) == {"gateway-link-acks"}, f"acks applied on {sorted(set(threads))}"


def test_acked_ids_are_taken_as_the_outbox_keys_them() -> None:
    """The ack thread uses an ack's own id strings when they are the canonical text (no UUID formatting per
    id), and the canonical text of any other spelling the schema accepts — the same keys as `str(UUID)`."""
    ids = [str(new_result_id()) for _ in range(3)]
    spelled = [ids[0], ids[1].upper(), ids[2].replace("-", "")]
    payload = json.dumps({"ids": spelled, "seqs": [4]}).encode()
    ack = Ack.model_validate_json(payload)
    assert _id_texts(payload, ack) == ids == [str(u) for u in ack.ids]


def test_batches_waiting_for_a_commit_are_committed_together(tmp_path: Path) -> None:
    """Group commit: while one batch commits, the worker reads and interprets on; every batch that waited
    meanwhile goes into the next transaction (one fsync for them all), in order, the cursor at the last."""
    source = _CountingSource({"serial": "GRP-1", "t0": 0.0, "rate": 1e9, "total": 2 * QUEUED_BATCHES})
    with _GatedWorker(tmp_path, source, "grp", read_batch=2) as g:
        wait_for(g.entered.is_set, 10, "the first batch was never committed")
        wait_for(
            lambda: len(g.interpreted) == 2 * QUEUED_BATCHES,
            10,
            f"the batches after the first were not read while it committed (interpreted {g.interpreted})",
        )
        g.release.set()
        wait_for(
            lambda: g.box.stats().enqueued_total == 2 * QUEUED_BATCHES, 10, "not every record was committed"
        )
        assert g.transactions == [[1, 2], list(range(3, 2 * QUEUED_BATCHES + 1))]
        cursor = g.box.cursor("plugin:GRP-1")
        assert cursor is not None
        assert cursor.last_record == 2 * QUEUED_BATCHES
