"""Sealing in the interpretation process (gateway.offload `seal_with`, gateway.outbox `Draft.sealed`): the child
signs each draft with the seq it guesses; the outbox stores a right guess as it is and seals a wrong one again
under the same id; one report of what came next puts the child's guesses right again."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.readings import DeviceInfo, GoldReading
from firmware_sim.signal_model import one_gold_profile
from gateway import outbox as outbox_module
from gateway.offload import GoldOffload, _answers, _child_state, _head, _metas, _profiles, _steer
from gateway.outbox import Outbox, RecordDrafts
from gateway.pipeline import Interpreter, SpecHolder
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.wire import hmac_signer, verify_payload
from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, RunningService, drained, fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for

STATION = "370214101203-01"
GOLD = DeviceInfo("GR-1", "KJ-G8", "2.3", "gold-serial", "gold", 8)
KEY = "gold-serial:GR-1"
OTHER_KEY = b"\x42" * 32
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
CARD = len(DEMO_KITS["nitrofurans-card-v1"].lines)


def _readings(first: int, count: int) -> list[GoldReading]:
    """`count` gold readings from record `first`: one result each, but every fifth a card of `CARD` results."""
    rng = np.random.default_rng(first)
    imi, card = DEMO_KITS["imidacloprid-v1"], DEMO_KITS["nitrofurans-card-v1"]
    out = []
    for n in range(first, first + count):
        kit = card if n % 5 == 0 else imi
        profile = one_gold_profile(kit, rng, concentration=0.0).profile
        out.append(GoldReading(n, 1 + n % 8, kit.name, f"S{n}", "菠菜", NOW, profile))
    return out


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.open(tmp_path / "outbox.db") as box:
        yield box


@pytest.fixture
def sealing(outbox: Outbox) -> Iterator[tuple[GoldOffload, Interpreter]]:
    off = GoldOffload(hmac_signer(KEY_BYTES))
    off.start()
    off.seal_with(outbox.next_seq)
    try:
        yield off, Interpreter(station=STATION, specs=SpecHolder(), offload=off)
    finally:
        off.close()


@pytest.fixture
def reseals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seqs the outbox seals itself (`seal_parts` called in this process)."""
    calls: list[int] = []
    real = outbox_module.seal_parts

    def counting(parts: Any, rid: str, seq: int, sign: Any) -> tuple[bytes, str]:
        calls.append(seq)
        return real(parts, rid, seq, sign)

    monkeypatch.setattr(outbox_module, "seal_parts", counting)
    return calls


def _sealed(made: list[RecordDrafts]) -> list[tuple[str, int, bytes]]:
    out = []
    for record in made:
        for draft in record.drafts:
            assert draft.sealed is not None, f"record {record.record_no} {draft.line} came unsealed"
            out.append((draft.sealed.id, draft.sealed.seq, draft.sealed.payload))
    return out


def _stored(outbox: Outbox, seqs: list[int]) -> dict[int, dict[str, Any]]:
    return {seq: json.loads(payload) for seq, payload in outbox.payloads(seqs).items()}


def test_the_child_seals_each_draft_with_the_seq_it_gets(
    outbox: Outbox, sealing: tuple[GoldOffload, Interpreter], reseals: list[int]
) -> None:
    """From `Outbox.next_seq` on, in order, two batches ahead of any commit: the payloads verify with the
    station key, name their id and seq, and the outbox stores them with no sealing of its own."""
    off, interp = sealing
    sign = off._sign
    assert sign is not None
    first = interp.submit(GOLD, _readings(1, 10))
    second = interp.submit(GOLD, _readings(11, 10))  # sent before the first is stored
    a, b = first(), second()
    sealed = _sealed(a) + _sealed(b)
    n = 16 + 4 * CARD  # 20 records, 4 of them cards
    assert [seq for _id, seq, _p in sealed] == list(range(1, n + 1))
    assert len({rid for rid, _s, _p in sealed}) == n
    for rid, seq, payload in sealed:
        doc = json.loads(payload)
        assert (doc["id"], doc["seq"]) == (rid, seq)
        assert verify_payload(doc, KEY_BYTES)
    outbox.enqueue(KEY, 0, a, sign)
    outbox.enqueue(KEY, 0, b, sign)
    assert reseals == []
    stored = _stored(outbox, list(range(1, n + 1)))
    assert [(d["id"], d["seq"]) for _s, d in sorted(stored.items())] == [(r, s) for r, s, _p in sealed]


def test_a_wrong_guess_is_sealed_again_and_put_right_once(
    outbox: Outbox, sealing: tuple[GoldOffload, Interpreter], reseals: list[int]
) -> None:
    """Another instrument's enqueue takes the first seqs while two sealed batches wait: both are sealed again by the
    outbox (same ids, the seqs they get, the station key); the report of what came next moves the child's
    guesses once, so the batch sent after it is stored as the child sealed it."""
    off, interp = sealing
    sign = off._sign
    assert sign is not None
    a_sent = interp.submit(GOLD, _readings(1, 4))
    b_sent = interp.submit(GOLD, _readings(5, 4))  # record 5: a card
    a, b = a_sent(), b_sent()
    plain = Interpreter(station=STATION, specs=SpecHolder())(GOLD, _readings(101, 5))  # sealed by the outbox
    other = len(outbox.enqueue("gold-serial:GR-2", 0, plain, sign))
    assert other == 4 + CARD
    reseals.clear()
    got_a = outbox.enqueue(KEY, 0, a, sign)
    got_b = outbox.enqueue(KEY, 0, b, sign)
    ours = list(range(other + 1, other + 1 + 4 + CARD + 3))
    assert [e.seq for e in got_a + got_b] == ours
    assert reseals == ours  # both batches were guessed from seq 1
    assert [e.id for e in got_a + got_b] == [rid for rid, _s, _p in _sealed(a) + _sealed(b)]
    stored = _stored(outbox, ours)
    assert all(verify_payload(doc, KEY_BYTES) and doc["seq"] == seq for seq, doc in stored.items())
    reseals.clear()
    c = interp.submit(GOLD, _readings(11, 4))()  # carries the report of b's commit (`other` seqs late)
    after = list(range(ours[-1] + 1, ours[-1] + 5))
    assert [seq for _id, seq, _p in _sealed(c)] == after
    assert [e.seq for e in outbox.enqueue(KEY, 0, c, sign)] == after
    assert reseals == []  # put right by one report, not once per batch


def test_a_draft_sealed_with_another_signer_is_sealed_again(
    outbox: Outbox, sealing: tuple[GoldOffload, Interpreter], reseals: list[int]
) -> None:
    _off, interp = sealing
    made = interp.submit(GOLD, _readings(1, 3))()
    other = hmac_signer(OTHER_KEY)
    assert [e.seq for e in outbox.enqueue(KEY, 0, made, other)] == [1, 2, 3]
    assert reseals == [1, 2, 3]
    stored = _stored(outbox, [1, 2, 3])
    assert all(
        verify_payload(doc, OTHER_KEY) and not verify_payload(doc, KEY_BYTES) for doc in stored.values()
    )


def test_a_re_read_sealed_draft_is_not_stored_twice(
    outbox: Outbox, sealing: tuple[GoldOffload, Interpreter], reseals: list[int]
) -> None:
    """Records read again after a crash come sealed with new guesses: known keys are skipped, the seqs stay
    without a gap."""
    off, interp = sealing
    sign = off._sign
    assert sign is not None
    first = interp.submit(GOLD, _readings(1, 3))()
    assert [e.seq for e in outbox.enqueue(KEY, 0, first, sign)] == [1, 2, 3]
    again = interp.submit(GOLD, _readings(1, 4))()  # records 1-3 again, and 4
    assert [e.seq for e in outbox.enqueue(KEY, 0, again, sign)] == [4]
    assert outbox.stats().depth == 4


def test_steer_moves_the_guesses_once_per_report_under_them() -> None:
    """`_steer`: the hint starts the guesses (and only when there are none); a report about a batch sealed
    under the guesses in force moves them by its error and starts a new chain; one about a batch sealed
    before that moves nothing (the correction already counted it); a right guess moves nothing."""
    state = _child_state(None)
    _steer(state, None, None)
    assert state["next"] is None
    _steer(state, 7, None)
    assert (state["next"], state["chain"]) == (7, 0)
    _steer(state, 99, None)
    assert state["next"] == 7
    state["next"] = 20  # batches sealed up to 19 under chain 0
    _steer(state, None, (0, 12, 15))  # the batch that ended at 11 ended at 14: 3 came first
    assert (state["next"], state["chain"]) == (23, 1)
    _steer(state, None, (0, 16, 19))  # sealed under chain 0 too: already counted
    assert (state["next"], state["chain"]) == (23, 1)
    _steer(state, None, (1, 23, 23))  # right
    assert (state["next"], state["chain"]) == (23, 1)
    _steer(state, None, (1, 23, 22))  # one fewer: a re-read skipped
    assert (state["next"], state["chain"]) == (22, 2)


def test_the_child_answers_each_request_as_soon_as_it_is_sealed() -> None:
    """Requests taken in one core call are answered one by one (`_answers` yields): the first answer is
    out — sealed from the hint on — before the second request's drafts are sealed, so the worker waiting
    for it does not wait for the whole call."""
    settings = Interpreter(station=STATION, specs=SpecHolder()).settings()
    first, second = _readings(1, 4), _readings(11, 4)

    def request(
        rds: list[GoldReading], steer: tuple[Any, Any], with_settings: bool
    ) -> tuple[bytearray, bytearray]:
        profiles = _profiles(rds)
        head = _head(settings if with_settings else None, None, GOLD, _metas(rds), profiles, steer)
        return bytearray(head), bytearray(profiles.tobytes())

    state = _child_state(hmac_signer(KEY_BYTES))
    answers = _answers(state, [request(first, (100, None), True), request(second, (None, None), False)])
    chain, made = pickle.loads(next(answers)[1:])  # noqa: S301 - our own answer
    assert chain == 0
    assert [draft[4] for _no, drafts in made for draft in drafts] == [100, 101, 102, 103]
    assert state["next"] == 104, "the second request was sealed before the first answer was given"
    _chain, made = pickle.loads(next(answers)[1:])  # noqa: S301
    assert [draft[4] for _no, drafts in made for draft in drafts] == [104, 105, 106, 107]
    assert next(answers, None) is None


def test_two_instruments_through_one_sealing_child_lose_and_repeat_nothing(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    """Two gold instruments read at once through the one interpretation process: their commits interleave, so
    the child's guesses are often wrong and sealed again by the outbox — every result reaches the cloud once,
    signed with the station key, under the seqs 1..N with no gap and no seq for two ids."""
    total = 600
    cfg = write_station(
        tmp_path,
        mosquitto.port,
        [
            fast_instrument("g1", serial="FAST-0001", total=total, rate=1e9),
            fast_instrument("g2", serial="FAST-0002", total=total, rate=1e9),
        ],
        acquisition={"interpret_process": "on", "read_batch": 16},
    )
    with RunningService(cfg) as svc:
        wait_for(lambda: drained(svc, 2 * total), 60, "the two instruments' results were not all acked")
        assert svc.offload is not None
        assert svc.offload.answered > 0, "no batch went through the interpretation process"
    assert acker.bad == []
    assert sorted(acker.seqs()) == list(range(1, 2 * total + 1))
    samples = {item["sample"]["id"] for item in acker.received.values()}
    assert len(samples) == 2 * total  # every record of both instruments, once
