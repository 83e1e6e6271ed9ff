"""The gold interpretation in a child process (gateway.offload): the same drafts as in the worker's thread, a
child that fails or is killed never costs a result, and the child holds nothing of the gateway's."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.readings import DeviceInfo, EnzymeReading, GoldReading, Reading
from firmware_sim.signal_model import one_enzyme_run, one_gold_profile
from gateway.config import load_config
from gateway.interpret import interpret_strips
from gateway.offload import SOCKET_BUFFER, GoldOffload, _answers, _child_state, _head, _metas, _profiles
from gateway.outbox import RecordDrafts
from gateway.pipeline import Interpreter, SpecBook, SpecHolder
from gateway.service import GatewayService
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import GB_T_5009_199
from tests.gateway.conftest import fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for

STATION = "370214101203-01"
GOLD = DeviceInfo("GR-1", "KJ-G8", "2.3", "gold-serial", "gold", 8)
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def offload() -> Iterator[GoldOffload]:
    off = GoldOffload()
    off.start()
    try:
        yield off
    finally:
        off.close()


def _readings() -> list[Reading]:
    """Every kind of gold reading the pipeline knows (blank, positive, a two-line card, no sample id, an
    unknown kit, a wrong length, another time zone, an operator) and an enzyme run between them."""
    rng = np.random.default_rng(11)
    imi, card = DEMO_KITS["imidacloprid-v1"], DEMO_KITS["nitrofurans-card-v1"]
    cal = imi.lines[0].calibration
    assert cal is not None
    run = one_enzyme_run(GB_T_5009_199, 4, rng, inhibition=[0.0, 90.0, 2.0, 2.0], control_channel=0)
    out: list[Reading] = []
    for n in range(1, 41):
        kit = card if n % 5 == 0 else imi
        conc = cal.c * 6 if n % 7 == 0 else 0.0
        profile = one_gold_profile(kit, rng, concentration=conc).profile
        out.append(
            GoldReading(
                n, n % 8, kit.name, "" if n == 3 else f"S{n}", "菠菜", NOW, profile, "王" if n % 2 else ""
            )
        )
    out += [
        GoldReading(41, 1, "no-such-kit", "S41", "菠菜", NOW, np.ones(1024)),
        GoldReading(42, 1, imi.name, "S42", "菠菜", NOW, np.ones(300)),
        EnzymeReading(
            43,
            GB_T_5009_199.name,
            0,
            run.times_s,
            run.absorbance,
            ("", "a", "b", "c"),
            ("", "白菜", "", "韭菜"),
            NOW,
        ),
    ]
    return out


def _drafts_of(made: list[RecordDrafts]) -> list[tuple[int, list[tuple[str, int, Any]]]]:
    return [(r.record_no, [(d.line, d.priority, d.wire) for d in r.drafts]) for r in made]


def _same(a: list[RecordDrafts], b: list[RecordDrafts]) -> None:
    assert [r.record_no for r in a] == [r.record_no for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert [(d.line, d.priority, d.wire) for d in ra.drafts] == [
            (d.line, d.priority, d.wire) for d in rb.drafts
        ]


@pytest.mark.parametrize("include_raw", [False, True])
def test_child_makes_the_drafts_the_thread_makes(offload: GoldOffload, include_raw: bool) -> None:
    readings = _readings()
    here = Interpreter(
        station=STATION, specs=SpecHolder(), operator="李", include_raw=include_raw, gold_median=3
    )
    there = Interpreter(
        station=STATION,
        specs=SpecHolder(),
        operator="李",
        include_raw=include_raw,
        gold_median=3,
        offload=offload,
    )
    expected = here(GOLD, readings)
    assert sum(len(r.drafts) for r in expected) > len(readings)  # the card has two lines
    _same(there(GOLD, readings), expected)
    assert offload.answered == 1
    # a new spec book (a config push) reaches the child: a kit renamed there is known by its new name
    renamed = DEMO_KITS["imidacloprid-v1"].model_copy(update={"name": "imi-renamed"})
    book = SpecBook("cfg-2", {**SpecBook.builtin().kits, "imi-renamed": renamed}, SpecBook.builtin().profiles)
    here.specs.set(book)
    there.specs.set(book)
    moved = [GoldReading(r.record_no, r.channel, "imi-renamed", r.sample_id, r.product, r.measured_at, r.profile)
             for r in readings[:4] if isinstance(r, GoldReading)]  # fmt: skip
    got = there(GOLD, moved)
    _same(got, here(GOLD, moved))
    assert {d.wire["config_version"] for r in got for d in r.drafts} == {"cfg-2"}
    assert offload.answered == 2


@pytest.mark.parametrize("include_raw", [False, True])
def test_profiles_sent_as_float32_give_the_drafts_float64_gives(
    offload: GoldOffload, include_raw: bool
) -> None:
    """A batch of one profile length goes to the child as float32 (`_profiles`: the core reads float32 line
    regions) and comes back as the thread makes it from float64, to the last bit — unless a value is not
    finite or beyond ±1e30 (the core's float64 finiteness sum could then tell the two apart): then the batch
    goes as float64, and an unusable strip is refused with the same reason in both places."""
    readings = [r for r in _readings() if isinstance(r, GoldReading) and r.profile.shape == (1024,)]
    assert _profiles(readings).dtype == np.float32
    odd = [
        GoldReading(90, 1, "imidacloprid-v1", "S90", "菠菜", NOW, np.full(1024, np.nan)),
        GoldReading(91, 1, "imidacloprid-v1", "S91", "菠菜", NOW, np.full(1024, 3e38)),
        GoldReading(92, 1, "imidacloprid-v1", "S92", "菠菜", NOW, np.full(1024, 1e35)),
    ]
    for bad in odd:
        assert _profiles([*readings[:3], bad]).dtype == np.float64
    here = Interpreter(station=STATION, specs=SpecHolder(), include_raw=include_raw)
    there = Interpreter(station=STATION, specs=SpecHolder(), include_raw=include_raw, offload=offload)
    _same(there(GOLD, readings), here(GOLD, readings))
    for bad in odd:
        batch = [*readings[:3], bad]
        got = there(GOLD, batch)
        _same(got, here(GOLD, batch))
        assert got[-1].drafts[0].wire["verdict"] == "invalid"
    assert offload.answered == 1 + len(odd)


def test_batches_waiting_in_the_child_are_interpreted_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's loop (`_answers`): consecutive requests of one instrument that change no setting go
    through the core in one call — one answer each, in order, holding that request's records — and a
    request of another instrument, or with new settings or a new spec book, starts a call of its own."""
    calls: list[list[int]] = []
    real = Interpreter.__call__

    def counting(self: Interpreter, info: DeviceInfo, readings: Any) -> list[RecordDrafts]:
        calls.append([r.record_no for r in readings])
        return real(self, info, readings)

    monkeypatch.setattr(Interpreter, "__call__", counting)
    golds = [r for r in _readings() if isinstance(r, GoldReading) and r.profile.shape == (1024,)]
    a, b, c, d, e = (golds[i : i + 3] for i in range(0, 15, 3))
    other = DeviceInfo("GR-2", "KJ-G8", "2.3", "gold-serial", "gold", 8)
    settings = Interpreter(station=STATION, specs=SpecHolder()).settings()
    book = SpecBook("cfg-9", SpecBook.builtin().kits, SpecBook.builtin().profiles)

    def request(
        settings: Any, book: Any, info: DeviceInfo, rds: list[GoldReading]
    ) -> tuple[bytearray, bytearray]:
        profiles = _profiles(rds)
        return bytearray(_head(settings, book, info, _metas(rds), profiles)), bytearray(profiles.tobytes())

    requests = [
        request(settings, None, GOLD, a),
        request(None, None, GOLD, b),  # joins a
        request(None, None, other, c),  # another instrument
        request(None, book, other, d),  # a new spec book
        request(None, None, other, e),  # joins d
    ]
    answers = list(_answers(_child_state(None), requests))
    numbers = [[r.record_no for r in x] for x in (a, b, c, d, e)]
    assert calls == [numbers[0] + numbers[1], numbers[2], numbers[3] + numbers[4]]
    assert [x[:1] for x in answers] == [b"D"] * 5
    assert [pickle.loads(x[1:])[0] for x in answers] == [None] * 5  # noqa: S301 - not sealed (no signer)
    assert [[no for no, _drafts in pickle.loads(x[1:])[1]] for x in answers] == numbers  # noqa: S301
    versions = [pickle.loads(x[1:])[1][0][1][0][2][0] for x in answers]  # noqa: S301 - the first body part
    assert [b'"config_version":"cfg-9"' in v for v in versions] == [False, False, False, True, True]


def test_the_childs_socket_holds_a_batch(offload: GoldOffload) -> None:
    """Both ends of the child's socket hold a batch of profiles (up to the kernel's cap on socket buffers): the
    worker hands a batch over in one write."""
    child = offload._child
    assert child is not None
    for option, cap in ((socket.SO_SNDBUF, "wmem_max"), (socket.SO_RCVBUF, "rmem_max")):
        kernel_max = int(Path(f"/proc/sys/net/core/{cap}").read_text())
        assert child.sock.getsockopt(socket.SOL_SOCKET, option) >= min(SOCKET_BUFFER, kernel_max)


def test_a_batch_sent_before_the_last_one_is_taken(offload: GoldOffload) -> None:
    """The worker hands its next batch over before it takes the drafts of the last (the child is never
    idle): answers come back to the batch that asked, whatever the order they are taken in — made as the
    thread makes them from the two batches apart, or from both in one call when the second was waiting
    before the child began the first (`COALESCE`; the core's float32 sums may then differ in their last
    bits, as they do for any other split of the same records into batches)."""
    readings = [r for r in _readings() if isinstance(r, GoldReading)]
    interp = Interpreter(station=STATION, specs=SpecHolder(), offload=offload)
    first = interp.submit(GOLD, readings[:20])
    second = interp.submit(GOLD, readings[20:])
    here = Interpreter(station=STATION, specs=SpecHolder())
    got = (_drafts_of(first()), _drafts_of(second()))
    apart = (_drafts_of(here(GOLD, readings[:20])), _drafts_of(here(GOLD, readings[20:])))
    together = _drafts_of(here(GOLD, readings))
    assert got in (apart, (together[:20], together[20:]))
    assert offload.answered == 2


def test_a_killed_child_costs_no_result(offload: GoldOffload, caplog: pytest.LogCaptureFixture) -> None:
    readings = _readings()
    here = Interpreter(station=STATION, specs=SpecHolder())
    there = Interpreter(station=STATION, specs=SpecHolder(), offload=offload)
    expected = here(GOLD, readings)
    first = offload.pid
    assert first is not None
    sent = there.submit(GOLD, readings)
    os.kill(first, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline"):
        _same(sent(), expected)  # interpreted in this thread
    assert "worker's thread" in caplog.text
    assert offload.answered == 0
    # the next batch forks a new child, which answers it
    _same(there(GOLD, readings), expected)
    assert offload.pid not in (None, first)
    assert offload.answered == 1
    assert offload.restarts == 1


def test_an_error_in_the_child_is_interpreted_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    parent = os.getpid()
    real = interpret_strips

    def fails_in_the_child(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() != parent:
            raise RuntimeError("a bug only the child has")
        return real(*args, **kwargs)

    monkeypatch.setattr("gateway.pipeline.interpret_strips", fails_in_the_child)
    off = GoldOffload()
    off.start()  # forked with the patch: the child fails, this process does not
    try:
        readings = _readings()
        there = Interpreter(station=STATION, specs=SpecHolder(), offload=off)
        with caplog.at_level(logging.WARNING, logger="gateway.pipeline"):
            got = there(GOLD, readings)
        _same(got, Interpreter(station=STATION, specs=SpecHolder())(GOLD, readings))
        assert "a bug only the child has" in caplog.text
        assert off.pid is not None  # the child goes on
        assert off.restarts == 0
    finally:
        off.close()


def test_a_service_forks_one_child_holding_only_its_socket(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The child keeps no descriptor of the gateway (not the data dir's lock, the outbox or the broker's
    socket): only its own socket and the standard streams; `stop` ends it. With
    `acquisition.interpret_process = "off"` there is none."""
    config = write_station(
        tmp_path,
        mosquitto.port,
        [fast_instrument(total=50, rate=1e9)],
        acquisition={"interpret_process": "on"},
    )
    service = GatewayService(load_config(config))
    service.start()
    try:
        assert service.offload is not None
        pid = service.offload.pid
        assert pid is not None
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        assert len([fd for fd in fds if fd > 2]) == 1, [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
        assert os.readlink(f"/proc/{pid}/fd/{fds[-1]}").startswith("socket:")
        wait_for(
            lambda: service.offload is not None and service.offload.answered > 0, 30, "no batch interpreted"
        )
    finally:
        service.stop()
    assert not Path(f"/proc/{pid}").exists(), "the interpretation process outlived the gateway"
    (tmp_path / "off").mkdir()
    off = write_station(
        tmp_path / "off", mosquitto.port, [fast_instrument(total=5)], acquisition={"interpret_process": "off"}
    )
    service = GatewayService(load_config(off))
    service.start()
    try:
        assert service.offload is None
    finally:
        service.stop()
