"""The gateway's hot path keeps its stages apart: the commit of one batch (serialise, sign, fsync) does not hold
up reading the next, and acks are applied off paho's network thread (which would otherwise stop reading and
writing the socket for every ack's disk write)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.readings import DeviceInfo, Reading
from drivers.timeouts import Timeouts
from gateway.link import parse_ack
from gateway.outbox import Draft, Enqueued, Outbox, RecordDrafts
from gateway.pipeline import Interpreter, SpecHolder
from gateway.worker import QUEUED_BATCHES, InstrumentWorker
from kuaijian_schema.wire import Ack, Rejection, Signer, hmac_signer, new_result_id
from tests.gateway.acker import Acker
from tests.gateway.conftest import (
    KEY_BYTES,
    STATION,
    RunningService,
    drained,
    fast_instrument,
    result_body,
    write_station,
)
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


def test_acks_that_come_while_the_write_lock_is_busy_are_applied_in_one_transaction(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    """The ack thread waits for the outbox's write lock with the ack it has and then takes every ack that came
    meanwhile (`Outbox.ack_turn`): 40 acks queued behind a held lock are one `ack` call, not 40."""
    acker.ack_enabled = False
    cfg = write_station(
        tmp_path,
        mosquitto.port,
        [fast_instrument(total=40, rate=4000.0)],
        link={"ack_timeout_s": 0.3, "batch_max": 1},
    )
    with RunningService(cfg) as svc:
        box, link = svc.outbox, svc.link
        assert box is not None
        assert link is not None
        calls: list[list[str]] = []
        ack = box.ack

        def recording_ack(*args: Any, **kwargs: Any) -> Any:
            calls.append(list(kwargs.get("ids", ())))  # (the acker names results by id)
            return ack(*args, **kwargs)

        box.ack = recording_ack  # type: ignore[method-assign]
        wait_for(lambda: len(acker.seqs()) == 40, 10, "not every result was published")
        with box.ack_turn():  # as a commit holding the write lock
            acker.ack_enabled = True  # the re-sends (one result per message) are acked now, one ack each
            wait_for(
                lambda: link._acks.qsize() >= 39,
                15,
                "the acks of the re-sends did not queue up behind the held lock",
            )
            assert calls == []
        wait_for(lambda: drained(svc, 40), 15, "the outbox did not drain")
    assert calls, "no ack was applied"
    assert len(calls[0]) >= 40, f"the first transaction applied {len(calls[0])} acks, not every queued one"


def test_rows_are_not_sent_before_their_enqueue_has_flushed_them(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    """An enqueue commits without waiting for the disk and flushes the WAL after (`Outbox.sync`): the link
    looks at the committed rows meanwhile and sends none of them until the flush has ended."""
    cfg = write_station(tmp_path, mosquitto.port, [])
    with RunningService(cfg) as svc:
        box, link = svc.outbox, svc.link
        assert box is not None
        assert link is not None
        wait_for(lambda: link.connected, 10, "the gateway did not connect")
        flush, held = box._db.sync, box.unsynced_from
        entered, release = threading.Event(), threading.Event()
        looked: list[int | None] = []

        def slow_flush() -> None:
            entered.set()
            assert release.wait(30), "the test did not release the flush"
            flush()

        def watched() -> int | None:
            value = held()
            looked.append(value)
            return value

        box._db.sync = slow_flush  # type: ignore[method-assign]
        box.unsynced_from = watched  # type: ignore[method-assign]
        records = [RecordDrafts(n, (Draft.of("ch0/t0", 0, result_body(n, 0)),)) for n in (1, 2, 3)]
        enqueuer = threading.Thread(target=box.enqueue, args=("plugin:X", 0, records, hmac_signer(KEY_BYTES)))
        enqueuer.start()
        try:
            assert entered.wait(30), "the enqueue did not flush"
            link.wake()
            wait_for(lambda: 1 in looked, 10, "the link did not look at the rows while they were held")
            assert acker.seqs() == set(), "rows were sent before they were on the disk"
        finally:
            release.set()
            enqueuer.join(30)
        wait_for(lambda: acker.seqs() == {1, 2, 3}, 10, "the rows were not sent once flushed")
        wait_for(lambda: drained(svc, 3), 10, "the outbox did not drain")


def _model_keys(payload: bytes) -> tuple[list[str], list[int], tuple[Rejection, ...]] | str:
    """What the ack model makes of `payload`, as the outbox keys it ("invalid" where it refuses)."""
    try:
        ack = Ack.model_validate_json(payload)
    except ValidationError:
        return "invalid"
    return [str(u) for u in ack.ids], list(ack.seqs), ack.rejected


def _parsed(payload: bytes) -> tuple[list[str], list[int], tuple[Rejection, ...]] | str:
    try:
        return parse_ack(payload)
    except ValidationError:
        return "invalid"


_uuid_texts = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, f"{{{u}}}", f"urn:uuid:{u}", str(u)[:-1]])
)
_ack_values = st.fixed_dictionaries(
    {},
    optional={
        "ids": st.lists(_uuid_texts | st.integers() | st.text(max_size=40), max_size=4)
        | st.sampled_from([None, "x", {}]),
        "seqs": st.lists(st.integers() | st.booleans() | st.floats() | st.text(max_size=3), max_size=4)
        | st.sampled_from([None, 5, "5"]),
        "rejected": st.sampled_from(
            [[], None, [{"id": "x", "seq": 3, "reason": "r"}], [{"id": "x"}], [{"id": "x", "reason": 1}]]
        ),
        "extra": st.integers(),
    },
)


@settings(max_examples=400)
@given(_ack_values | st.lists(st.integers(), max_size=2) | st.none())
def test_an_ack_parses_to_what_the_model_makes_of_it(doc: Any) -> None:
    """`parse_ack` (orjson and an exact shape check for the common ack, the model for anything else) gives
    the ids as the outbox keys them (`str(UUID)`), the seqs and the rejections — or refuses — exactly as the
    model does: any spelling of an id the schema accepts, non-integer seqs, extra members, rejections."""
    payload = json.dumps(doc).encode()
    assert _parsed(payload) == _model_keys(payload)


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff", b'{"ids": ["\\ud800"]}', b"[]", b'{"ids": [1e400]}'])
def test_a_broken_ack_is_refused_as_the_model_refuses_it(payload: bytes) -> None:
    assert _parsed(payload) == _model_keys(payload) == "invalid"


def test_a_common_ack_is_parsed_without_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ack the cloud sends (canonical ids, seqs, no rejections) is taken without validating the model
    (a tenth of the cost); the ids are the ack's own strings."""
    ids = [str(new_result_id()) for _ in range(50)]
    payload = json.dumps({"ids": ids, "seqs": list(range(1, 51)), "rejected": []}).encode()
    expected = _model_keys(payload)

    def refuse(*_a: object, **_k: object) -> Ack:
        raise AssertionError("the model validated a common ack")

    monkeypatch.setattr(Ack, "model_validate_json", refuse)
    assert parse_ack(payload) == expected
    assert parse_ack(b'{"ids":[],"seqs":[]}') == ([], [], ())


def test_batches_are_committed_in_groups_and_the_next_group_gathers_meanwhile(tmp_path: Path) -> None:
    """Group commit: under a backlog, `QUEUED_BATCHES` read batches go into one transaction (one fsync for
    them all), in order, the cursor at the last; while that commits the worker reads and interprets on, and
    everything that gathered meanwhile goes into the next transaction once the worker has caught up."""
    per_group = 2 * QUEUED_BATCHES  # records: batches of 2
    total = 3 * per_group
    source = _CountingSource({"serial": "GRP-1", "t0": 0.0, "rate": 1e9, "total": total})
    with _GatedWorker(tmp_path, source, "grp", read_batch=2) as g:
        wait_for(g.entered.is_set, 10, "the first group was never committed")
        # read on while the first group commits: a second full group and more (then it waits for the commit)
        wait_for(
            lambda: len(g.interpreted) > 2 * per_group,
            10,
            f"the batches after the first group were not read while it committed (interpreted {g.interpreted})",
        )
        assert g.transactions == [list(range(1, per_group + 1))]  # the rest waits for the first commit
        g.release.set()
        wait_for(lambda: g.box.stats().enqueued_total == total, 10, "not every record was committed")
        first, second, *rest = g.transactions
        assert first == list(range(1, per_group + 1))
        assert len(second) > per_group  # everything that gathered meanwhile, in one transaction
        assert [n for t in g.transactions for n in t] == list(range(1, total + 1))
        assert len(rest) <= 1
        cursor = g.box.cursor("plugin:GRP-1")
        assert cursor is not None
        assert cursor.last_record == total


def test_a_worker_that_caught_up_commits_what_waits_however_few(tmp_path: Path) -> None:
    """A batch alone (fewer than `QUEUED_BATCHES`) is committed as soon as the worker has read everything."""
    source = _CountingSource({"serial": "ONE-1", "t0": 0.0, "rate": 1e9, "total": 3})
    with _GatedWorker(tmp_path, source, "one", read_batch=2) as g:
        g.release.set()
        wait_for(lambda: g.box.stats().enqueued_total == 3, 10, "the records read were not committed")
        assert g.transactions == [[1, 2, 3]]
