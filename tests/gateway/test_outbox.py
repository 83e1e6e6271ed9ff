"""Outbox: one-transaction enqueue with seq + cursor, keyed acks, rejections, migrations, corruption,
disk full, and a stateful property test over enqueue / ack / crash (reopen)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import outbox_db
from gateway.diskspace import WAL_LIMIT
from gateway.errors import OutboxCorrupt, OutboxError, OutboxFull
from gateway.outbox import MIGRATIONS, Cursor, Draft, Migration, Outbox, RecordDrafts, stored_sha256
from gateway.outbox_delivery import FreshPayloads, delete_where
from kuaijian_schema.wire import (
    Rejection,
    body_parts,
    canonical_json,
    hmac_signer,
    payload_sha256,
    verify_payload,
)
from tests.gateway.conftest import rejection, result_body

KEY = b"0123456789abcdef-station-key"


_sign = hmac_signer(KEY)


def _record(n: int, lines: int = 1, verdict: str = "negative") -> RecordDrafts:
    return RecordDrafts(
        n,
        tuple(
            Draft.of(f"ch0/{k}", 2 if verdict == "positive" else 0, result_body(n, k)) for k in range(lines)
        ),
    )


def test_enqueue_assigns_seq_signs_and_advances_cursor(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue("gold-serial:G1", 0, [_record(1, 2), _record(2)], _sign)
        assert [e.seq for e in out] == [1, 2, 3]
        assert len({e.id for e in out}) == 3
        assert box.cursor("gold-serial:G1") == Cursor(0, 2)
        payloads = box.payloads([1, 2, 3])
        docs = [json.loads(payloads[s]) for s in (1, 2, 3)]
        assert all(verify_payload(d, KEY) for d in docs)
        assert [d["seq"] for d in docs] == [1, 2, 3]
        assert box.stats().depth == 3
        assert box.applied_migrations() == [m.name for m in MIGRATIONS]
        conn = sqlite3.connect(tmp_path / "o.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_each_result_is_serialised_once_signed_stored_and_hashed_as_the_same_bytes(tmp_path: Path) -> None:
    # The signer sees the stored payload minus its "sig" member, once per result; the stored text is the
    # canonical JSON of what it decodes to (what the cloud verifies and names in a rejection).
    seen: list[bytes] = []

    def sign(data: bytes) -> str:
        seen.append(data)
        return _sign(data)

    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 4)], sign)
        payloads = box.payloads([e.seq for e in out])
        assert len(seen) == len(out) == 6
        for e, data in zip(out, seen, strict=True):
            doc = json.loads(payloads[e.seq])
            assert (doc["id"], doc["seq"]) == (e.id, e.seq)
            assert payloads[e.seq] == canonical_json(doc)
            assert data == canonical_json({k: v for k, v in doc.items() if k != "sig"})
            assert stored_sha256(payloads[e.seq]) == payload_sha256(doc)


def _encoded(n: int, lines: int = 1) -> RecordDrafts:
    """A record as the interpretation process hands it over (its drafts encoded: `Draft.parts`)."""
    return RecordDrafts(
        n, tuple(Draft(f"ch0/{k}", 0, None, body_parts(result_body(n, k).wire())) for k in range(lines))
    )


def test_encoded_drafts_are_sealed_outside_the_write_lock_and_again_inside_when_a_guess_fails(
    tmp_path: Path,
) -> None:
    """An enqueue of encoded drafts seals them before it takes the write lock, with the seqs they will get;
    where that guess fails — the first enqueue (no seq known yet), another writer first (an enqueue, a sample
    registration), a re-read, an enqueue that failed — it seals them inside, with the seqs they get. Every
    payload verifies and the seqs run 1, 2, 3, … without a gap."""
    outside: list[bool] = []

    def sign(data: bytes) -> str:
        outside.append(not box._db.lock._is_owned())  # type: ignore[attr-defined]
        return _sign(data)

    def batch(first: int, count: int = 4) -> list[RecordDrafts]:
        return [_encoded(n, lines=2) for n in range(first, first + count)]

    with Outbox.open(tmp_path / "o.db") as box:
        box.enqueue("i", 0, batch(1), sign)  # the first: the next seq is not known before it
        assert outside == [False] * 8
        outside.clear()
        box.enqueue("i", 0, batch(5), sign)  # guessed right: all sealed before the lock
        assert outside == [True] * 8
        outside.clear()
        box._seal_ahead(
            [(99, "x", 0, d) for d in batch(99, 1)[0].drafts], ["a", "b"], [None, None], sign
        )  # another took 17-18
        box.enqueue("i", 0, batch(9), sign)  # its guess (19-) is wrong: sealed again inside, from 17
        assert outside == [True] * 2 + [True] * 8 + [False] * 8
        outside.clear()
        box.enqueue_registration("REG-1", {"kind": "sample", "code": "REG-1"}, 1, _sign)  # a seq of its own
        box.enqueue("i", 0, batch(13), sign)
        assert outside == [True] * 8 + [False] * 8
        outside.clear()
        box.enqueue("i", 0, batch(15), sign)  # 15 and 16 are known: a re-read
        assert outside == [True] * 8 + [False] * 4
        outside.clear()
        outside.clear()

        def failing(data: bytes) -> str:
            raise RuntimeError("signer failed")

        with pytest.raises(RuntimeError, match="signer failed"):
            box.enqueue("i", 0, batch(19), failing)  # seqs taken ahead, nothing written
        box.enqueue("i", 0, batch(19), sign)  # the next seq is not known: sealed inside
        assert outside == [False] * 8
        outside.clear()
        box.enqueue("i", 0, batch(23), sign)
        assert outside == [True] * 8
        outside.clear()
        twice = batch(27, 2)
        got = box.enqueue("i", 0, [twice[0], twice[0], twice[1]], sign)  # record 27 twice: it counts once
        assert outside == [True] * 6 + [False] * 4
        assert [e.seq for e in got] == list(range(got[0].seq, got[0].seq + 4))
        outside.clear()

        total = box.stats().enqueued_total
        payloads = box.payloads(list(range(1, total + 1)))
        docs = [json.loads(payloads[s]) for s in range(1, total + 1)]
        assert [d["seq"] for d in docs] == list(range(1, total + 1))
        assert all(verify_payload(d, KEY) for d in docs if d.get("kind") != "sample")
        assert [(d["sample"]["id"], d["values"]) for d in docs if "sample" in d] == [
            (f"S-{n}", result_body(n, k).wire()["values"]) for n in range(1, 29) for k in range(2)
        ]


def test_an_enqueue_flushes_the_wal_outside_the_write_lock_and_its_rows_wait_for_it(tmp_path: Path) -> None:
    """The commit of an enqueue does not wait for the disk; its WAL flush (`sync`) comes after, with the
    write lock free (an ack applies meanwhile), and until it ends the rows are visible but held: not to be
    sent (`unsynced_from`). A flush that fails fails the enqueue, leaves its rows stored and held, and the
    next look (`unsynced_from`) flushes again."""
    with Outbox.open(tmp_path / "o.db") as box:
        box.enqueue("i", 0, [_record(1)], _sign)
        assert box.unsynced_from() is None
        flush = box._db.sync
        entered, release = threading.Event(), threading.Event()
        lock_free: list[bool] = []

        def slow_flush() -> None:
            lock_free.append(not box._db.lock._is_owned())  # type: ignore[attr-defined]
            entered.set()
            assert release.wait(30), "the test did not release the flush"
            flush()

        box._db.sync = slow_flush  # type: ignore[method-assign]
        done: list[Any] = []
        enqueuer = threading.Thread(target=lambda: done.append(box.enqueue("i", 0, [_record(2, 2)], _sign)))
        enqueuer.start()
        try:
            assert entered.wait(30), "the enqueue did not flush"
            assert lock_free == [True], "the WAL was flushed with the write lock held"
            assert [seq for seq, _p in box.due_order(10)] == [1, 2, 3]  # committed: visible to readers
            assert box.unsynced_from() == 2  # … but held
            assert box.ack(seqs=[1]).acked == (1,)  # the write lock is free while the WAL is flushed
            assert done == []
        finally:
            release.set()
            enqueuer.join(30)
        assert [e.seq for e in done[0]] == [2, 3]
        assert box.unsynced_from() is None

        def broken_flush() -> None:
            raise OutboxError("I/O error (simulated)")

        box._db.sync = broken_flush  # type: ignore[method-assign]
        with pytest.raises(OutboxError, match="simulated"):
            box.enqueue("i", 0, [_record(3)], _sign)
        assert box.cursor("i") == Cursor(0, 3)  # stored (and the record is not read again) …
        with pytest.raises(OutboxError, match="simulated"):
            box.unsynced_from()  # … held while the flush keeps failing
        box._db.sync = flush  # type: ignore[method-assign]
        assert box.unsynced_from() is None  # flushed by the next look
        assert [seq for seq, _p in box.due_order(10)] == [2, 3, 4]


def test_an_enqueues_flush_does_not_wait_for_the_write_lock(tmp_path: Path) -> None:
    """An enqueue flushes what it committed without taking the write lock again (`sync(through=…)`): an ack's
    transaction that takes the lock between its commit and its flush does not hold it up — the enqueue
    returns, its rows flushed and free to be sent, while the lock is still held."""
    with Outbox.open(tmp_path / "o.db") as box:
        box.enqueue("i", 0, [_record(1)], _sign)
        taken, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with box._db.lock:
                taken.set()
                assert release.wait(60), "the test did not release the write lock"

        holder = threading.Thread(target=hold_lock)
        keep = box._fresh.keep

        def keep_then_lock(rows: Any) -> None:  # runs after the commit, just before the flush
            keep(rows)
            holder.start()
            assert taken.wait(30), "the other thread did not take the write lock"

        box._fresh.keep = keep_then_lock  # type: ignore[method-assign]
        done: list[Any] = []
        enqueuer = threading.Thread(target=lambda: done.append(box.enqueue("i", 0, [_record(2)], _sign)))
        enqueuer.start()
        try:
            enqueuer.join(30)
            assert done, "the enqueue's flush waited for the write lock another thread held"
            assert box._db.lock._is_owned() is False  # type: ignore[attr-defined]  # (held by that thread)
            assert box.unsynced_from() is None
        finally:
            release.set()
            enqueuer.join(30)
            holder.join(30)
        assert [e.seq for e in done[0]] == [2]


def test_the_first_send_of_a_row_takes_its_payload_from_memory_and_a_resend_from_the_file(
    tmp_path: Path,
) -> None:
    """The payloads an enqueue stored are kept in memory (`FreshPayloads`, up to its limit: a row past it is
    not kept) until their first send takes them; a re-send reads the file again, an acked row is dropped
    from memory."""
    with Outbox.open(tmp_path / "o.db") as box:
        box.enqueue("i", 0, [_record(1)], _sign)
        size = len(box.payloads([1])[1])  # (every payload of these records is as long)
        box._fresh = FreshPayloads(limit=int(2.5 * size))
        box.enqueue("i", 0, [_record(2), _record(3), _record(4)], _sign)  # 2 and 3 fit, 4 does not
        assert len(box._fresh) == 2
        read = box._db.read
        reads: list[str] = []

        def counted(sql: str, params: Any = ()) -> Any:
            reads.append(sql)
            return read(sql, params)

        box._db.read = counted  # type: ignore[method-assign]
        first = box.payloads([2, 3])
        assert reads == [], "the first send read the file"
        assert box.payloads([2, 3, 4]) == {**first, 4: box.payloads([4])[4]}  # re-sends and 4: the file
        assert len(reads) == 2
        assert all(verify_payload(json.loads(p), KEY) for p in first.values())
        box.enqueue("i", 0, [_record(5)], _sign)
        assert len(box._fresh) == 1
        assert box.ack(seqs=[5]).acked == (5,)
        assert len(box._fresh) == 0  # acked: not held for a send that will not come
        assert box.payloads([5]) == {}

        # sent and acked the moment the flush lets them go, before the enqueue returns: nothing stays behind
        flush = box._db.sync

        def flush_then_send_and_ack() -> None:
            flush()
            sent = box.payloads([6, 7])
            assert sorted(sent) == [6, 7]
            box.ack(seqs=[6, 7])

        box._db.read = read  # type: ignore[method-assign]
        box._db.sync = flush_then_send_and_ack  # type: ignore[method-assign]
        box.enqueue("i", 0, [_record(6), _record(7)], _sign)
        assert len(box._fresh) == 0


def test_a_batch_costs_a_few_statements_not_one_per_result(tmp_path: Path) -> None:
    """Enqueueing, reading for sending and acking 200 results each take a handful of statements, not one
    per result (`kuaijian_schema.sqlite_append`: each statement step lets go of the GIL; reads and deletes
    fetch their rows as JSON arrays in one row, which the statement count here does not show)."""
    with Outbox.open(tmp_path / "o.db") as box:
        statements: list[str] = []
        box._db._conn.set_trace_callback(statements.append)
        out = box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 101)], _sign)
        enqueued = len(statements)
        order = box.due_order(500)
        assert len(box.payloads([s for s, _ in order])) == 200
        read = len(statements) - enqueued
        box.ack(ids=[e.id for e in out], seqs=[e.seq for e in out])
        acked = len(statements) - enqueued - read
        box._db._conn.set_trace_callback(None)
        assert box.stats().depth == 0
        assert enqueued <= 20, f"{enqueued} statements to enqueue 200 results"
        assert read <= 3, f"{read} statements to read 200 results for sending"
        assert acked <= 10, f"{acked} statements to ack 200 results"


def test_reread_after_crash_is_a_noop(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        box.enqueue("i", 0, [_record(1, 3)], _sign)
    with Outbox.open(path) as box:  # "crash" before the worker saw the cursor: it re-reads record 1
        again = box.enqueue("i", 0, [_record(1, 3), _record(2)], _sign)
        assert [e.seq for e in again] == [4]
        assert box.stats().enqueued_total == 4


def test_record_keys_are_pruned_behind_the_cursor_and_stay_known(tmp_path: Path) -> None:
    """The de-duplication keys do not pile up (they used to fill `storage.max_db_mb` with an empty outbox):
    keys more than `keep_record_keys` records behind the cursor, and of earlier epochs, are deleted, and
    their records stay known — a re-read of any of them, before or after a restart, queues nothing."""
    path = tmp_path / "o.db"
    with Outbox.open(path, keep_record_keys=3) as box:
        for start in range(1, 101, 5):
            box.enqueue("i", 0, [_record(n, lines=2) for n in range(start, start + 5)], _sign)
        st_ = box.stats()
        assert (st_.enqueued_total, st_.record_keys, st_.record_keys_pruned) == (200, 6, 194)
        for n in (1, 50, 97, 98, 100):
            assert box.enqueue("i", 0, [_record(n, lines=2)], _sign) == [], f"record {n} queued twice"
        assert box.stats().enqueued_total == 200
    with Outbox.open(path, keep_record_keys=3) as box:  # a restart re-reads a stretch around the cursor
        again = box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 102)], _sign)
        assert [e.seq for e in again] == [201, 202], "only record 101 is new"
        assert box.stats().record_keys == 6
        # a new memory: the old epoch's keys go and its records stay known; the new epoch's are read
        cursor = box.cursor("i")
        assert cursor is not None
        box.new_epoch("i", cursor, 2, "test")
        assert len(box.enqueue("i", 1, [_record(1, lines=2), _record(2, lines=2)], _sign)) == 4
        assert box.enqueue("i", 0, [_record(101, lines=2), _record(102, lines=2)], _sign) == []
        st_ = box.stats()
        assert (st_.enqueued_total, st_.record_keys, st_.last_seq) == (206, 4, 206)


def test_keys_a_batch_would_prune_at_once_are_never_written(tmp_path: Path) -> None:
    """A batch longer than `keep_record_keys` records: the keys its own transaction would delete again are
    not written at all — the outcome (keys kept, horizon, pruned count, re-reads refused) is the same."""
    path = tmp_path / "o.db"
    Outbox.open(path, keep_record_keys=3).close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE key_writes (n INTEGER NOT NULL); INSERT INTO key_writes VALUES (0);"
        "CREATE TRIGGER count_key_writes AFTER INSERT ON records BEGIN UPDATE key_writes SET n = n + 1; END;"
    )
    conn.close()
    with Outbox.open(path, keep_record_keys=3) as box:
        box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 51)], _sign)
        box.enqueue("i", 0, [_record(n, lines=2) for n in range(51, 53)], _sign)  # within keep: all written
        st_ = box.stats()
        assert (st_.enqueued_total, st_.record_keys, st_.record_keys_pruned) == (104, 6, 98)
        assert box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 53)], _sign) == []
        writes = box._db.read("SELECT n FROM key_writes")[0][0]
    assert writes == 6 + 4, f"{writes} keys written for 10 kept"


def test_ack_by_id_and_seq_and_rejection(tmp_path: Path) -> None:
    """An ack deletes rows by id, by seq where it names their ids too, or by seq alone when it names no ids;
    a stale ack naming a seq under another id (one queued for an earlier outbox of the station, whose seqs
    began at 1 as well) deletes nothing."""
    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue("i", 0, [_record(n) for n in range(1, 7)], _sign)
        res = box.ack(ids=[out[0].id, out[1].id], seqs=[out[1].seq])
        assert sorted(res.acked) == [1, 2]
        res = box.ack(ids=[out[0].id])  # redelivered ack: no-op
        assert res.acked == ()
        assert res.unknown == 1
        res = box.ack(ids=[str(uuid.uuid4())], seqs=[out[4].seq])  # stale: seq 5 under an id never here
        assert (res.acked, res.unknown) == ((), 1)
        res = box.ack(ids=[out[3].id], seqs=[out[4].seq])  # seq 5 not named by its id: only 4 goes
        assert res.acked == (4,)
        res = box.ack(seqs=[out[5].seq])  # seqs alone
        assert res.acked == (6,)
        res = box.ack(rejected=[rejection(box, out[2].id, 3, "bad signature")])
        assert res.rejected == (3,)
        rows = box.rejected_rows()
        assert [(r.seq, r.reason) for r in rows] == [(3, "bad signature")]
        st_ = box.stats()
        assert (st_.depth, st_.acked_total, st_.rejected_total, st_.last_seq) == (1, 4, 1, 6)


def test_rejection_applies_only_to_the_exact_stored_result(tmp_path: Path) -> None:
    """Issue 9 item 1: a rejection moves a row only when its id, seq AND payload hash all match. Forged
    rejections (what the cloud would echo for a message published with the station's MQTT password but
    without its HMAC key) change nothing."""
    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue("i", 0, [_record(n) for n in range(1, 5)], _sign)
        real = rejection(box, out[0].id, out[0].seq, "bad signature")
        forged = [
            Rejection(
                id=str(uuid.uuid4()), seq=out[1].seq, reason="bad signature", sha256="0" * 64
            ),  # seq only
            Rejection(id=out[2].id, seq=99, reason="bad signature", sha256=real.sha256),  # id, wrong seq
            Rejection(id=out[3].id, seq=out[3].seq, reason="bad signature", sha256="1" * 64),  # wrong hash
            Rejection(id=out[3].id, seq=out[3].seq, reason="bad signature"),  # no hash (older cloud)
            Rejection(id=out[1].id, seq=out[1].seq, reason="x", sha256=real.sha256),  # another row's hash
        ]
        res = box.ack(rejected=forged)
        assert (res.rejected, res.ignored) == ((), 5)
        assert box.stats().depth == 4
        assert box.rejected_rows() == []
        res = box.ack(rejected=[real])
        assert res.rejected == (out[0].seq,)
        assert box.stats().depth == 3


def test_priority_order_positives_first(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "o.db") as box:
        box.enqueue("i", 0, [_record(1), _record(2, verdict="positive"), _record(3)], _sign)
        assert [s for s, _ in box.due_order(10)] == [2, 1, 3]


def _index_entries(path: Path, index: str) -> int | None:
    """Entries in `index` of the database at `path` (every cell of an index b-tree is one; None when there
    is no such index)."""
    conn = sqlite3.connect(path)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (index,)).fetchone():
            return None
        return int(conn.execute("SELECT SUM(ncell) FROM dbstat WHERE name = ?", (index,)).fetchone()[0])
    finally:
        conn.close()


def _send_order(box: Outbox, limit: int) -> list[tuple[int, int]]:
    """Every row, paging through `due_order` `limit` rows at a time from the row last handed out."""
    order = box.due_order(limit)
    while True:
        more = box.due_order(limit, after=(order[-1][1], order[-1][0])) if order else []
        if not more:
            return order
        order += more


def test_send_order_pages_through_every_priority_and_indexes_only_urgent_rows(tmp_path: Path) -> None:
    """Priority first, then seq, however the rows are paged; only rows above priority 0 (positives,
    suspects, invalids, registrations) are in a send-order index — a negative result, most of them, is
    stored and deleted without one. A priority below 0 is refused."""
    path = tmp_path / "o.db"
    prios = [0, 3, 0, 0, 1, 2, 0, 3, 0, 0, 0, 1, 0, 2, 0, 0, 3, 0]
    with Outbox.open(path) as box:
        records = [RecordDrafts(n, (Draft.of("l", p, result_body(n)),)) for n, p in enumerate(prios, 1)]
        out = box.enqueue("i", 0, records[:9], _sign) + box.enqueue("i", 0, records[9:], _sign)
        reg, _ = box.enqueue_registration("AB12", {"kind": "sample"}, 4, _sign)
        expected = sorted([(e.seq, e.priority) for e in out] + [(reg.seq, 4)], key=lambda r: (-r[1], r[0]))
        for limit in (1, 2, 3, 5, 100):
            assert _send_order(box, limit) == expected, f"pages of {limit}"
        assert _index_entries(path, "outbox_urgent") == sum(p > 0 for p in prios) + 1
        box.ack(seqs=[s for s, p in expected[::2]])
        left = expected[1::2]
        for limit in (1, 4, 100):
            assert _send_order(box, limit) == left
        assert _index_entries(path, "outbox_urgent") == sum(p > 0 for _, p in left)
        with pytest.raises(ValueError, match="below 0"):
            box.enqueue("i", 0, [RecordDrafts(99, (Draft.of("l", -1, result_body(99)),))], _sign)
        assert box.stats().depth == len(left)


def test_an_ack_naming_ids_and_seqs_deletes_by_seq(tmp_path: Path) -> None:
    """The cloud names each result by id and seq: the rows go by seq (the primary key), the ids of the rows
    deleted that way are not looked up again, and nothing is counted unknown. An ack by ids alone (an older
    cloud) still applies, by the id index; a seq goes only with its id when the ack names ids."""
    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue("i", 0, [_record(n) for n in range(1, 7)], _sign)
        statements: list[str] = []
        box._db._conn.set_trace_callback(statements.append)
        res = box.ack(ids=[e.id for e in out[:3]], seqs=[e.seq for e in out[:3]])
        box._db._conn.set_trace_callback(None)
        assert (sorted(res.acked), res.unknown) == ([1, 2, 3], 0)
        assert not [q for q in statements if "WHERE id IN" in q], (
            "ids looked up although their seqs named them"
        )
        # an ack of 350 results: by the primary key, the ids only checked on the rows found (not a probe of
        # the id index per seq and id)
        sql = f"SELECT seq FROM outbox {delete_where('seq', 350, with_ids=True)}"  # noqa: S608
        params = [*range(1, 351), json.dumps([str(uuid.uuid4()) for _ in range(350)])]
        plan = " ".join(str(r[3]) for r in box._db._conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "INTEGER PRIMARY KEY" in plan, plan
        assert "sqlite_autoindex" not in plan, plan
        res = box.ack(ids=[out[3].id, out[0].id])  # ids alone; one of them acked already
        assert (res.acked, res.unknown) == ((4,), 1)
        res = box.ack(ids=[out[4].id], seqs=[out[5].seq])  # seq 6 without its id: only 5 goes, by id
        assert (sorted(res.acked), res.unknown) == ([5], 0)
        res = box.ack(seqs=[out[5].seq])  # seqs alone: by seq
        assert (res.acked, res.unknown) == ((6,), 0)
        assert box.stats().depth == 0


def test_an_outbox_from_before_0006_migrates_with_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outbox made by 0001–0005 (send order by a full priority index, payloads stored as text) opens
    migrated: the index holds the urgent rows only, the rows are sent in the same order with the same bytes,
    and acks and exact rejections apply to them."""
    path = tmp_path / "o.db"
    monkeypatch.setattr("gateway.outbox_db.MIGRATIONS", MIGRATIONS[:5])
    with Outbox.open(path) as box:
        out = box.enqueue(
            "i",
            0,
            [_record(n, verdict="positive" if n % 3 == 0 else "negative") for n in range(1, 10)],
            _sign,
        )
        sent = box.payloads([e.seq for e in out])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE outbox SET payload = CAST(payload AS TEXT)")  # as the old code stored them
    conn.commit()
    assert conn.execute("SELECT COUNT(*) FROM outbox WHERE typeof(payload) = 'text'").fetchone()[0] == 9
    conn.close()
    assert _index_entries(path, "outbox_urgent") is None
    monkeypatch.undo()
    with Outbox.open(path) as box:
        assert box.applied_migrations() == [m.name for m in MIGRATIONS]
        assert _index_entries(path, "outbox_by_priority") is None
        assert _index_entries(path, "outbox_urgent") == 3
        assert [s for s, _ in box.due_order(100)] == [3, 6, 9, 1, 2, 4, 5, 7, 8]
        assert box.payloads([e.seq for e in out]) == sent
        res = box.ack(
            rejected=[rejection(box, out[2].id, 3, "bad")], ids=[out[0].id, out[1].id], seqs=[out[1].seq]
        )
        assert (sorted(res.acked), res.rejected) == ([1, 2], (3,))
        assert [s for s, _ in box.due_order(100)] == [6, 9, 4, 5, 7, 8]


def test_config_is_stored_with_version(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        assert box.current_config() is None
        assert box.store_config("7", {"version": "7"})
        assert not box.store_config("7", {"version": "7"})
    with Outbox.open(path) as box:
        assert box.current_config() == ("7", {"version": "7"})
        assert box.stats().config_version == "7"


def test_corrupt_file_is_moved_aside_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        box.enqueue("i", 0, [_record(n) for n in range(1, 40)], _sign)
    # Overwrite the second page of the file: it becomes garbage.
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # (the page size, in the file's header)
    assert len(data) >= 3 * page
    data[page : 2 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupt) as info:
        Outbox.open(path)
    moved = info.value.moved_to
    assert moved is not None
    assert moved.exists(), "the corrupt file must be kept"
    assert "moved to" in str(info.value)
    assert not path.exists()
    with Outbox.open(path) as box:  # a new outbox never reuses a seq
        out = box.enqueue("i", 0, [_record(100)], _sign)
        assert out[0].seq > 39


def test_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(OutboxCorrupt, match="corrupt"):
        Outbox.open(path)
    assert info_files(tmp_path)


def info_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if ".corrupt-" in p.name)


def test_disk_full_rolls_back_and_keeps_cursor(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox.open(path, max_db_bytes=128 * 1024) as box:
        big = result_body(qc=("x" * 3000,))
        n = 0
        full: OutboxFull | None = None
        for n in range(1, 1000):  # until the cap is hit
            try:
                box.enqueue("i", 0, [RecordDrafts(n, (Draft.of("l", 0, big),))], _sign)
            except OutboxFull as exc:
                full = exc
                break
        assert full is not None, "the 128 KiB cap was never reached"
        assert "full" in str(full)
        before = box.stats()
        assert box.cursor("i") == Cursor(0, n - 1), "the failed record must not advance the cursor"
        assert before.last_seq == n - 1 == before.depth
        # space returns (acks delete rows) → the same record goes in
        box.ack(seqs=range(1, n))
        out = box.enqueue("i", 0, [RecordDrafts(n, (Draft.of("l", 0, big),))], _sign)
        assert out[0].seq == n


def test_a_transaction_larger_than_the_room_is_refused_before_it_is_written(tmp_path: Path) -> None:
    """The space guard counts what an enqueue writes, not one batch's worth: a group commit of many records
    with raw signals is refused before it eats into the free disk (SQLite would have written it here —
    the real disk has room — so without the count it goes in)."""
    with Outbox.open(tmp_path / "o.db") as box:
        box._db.space._disk_free = lambda _p: 150 * 1024  # a disk with 150 KiB left
        big = result_body(qc=("x" * 5000,))
        box.enqueue("i", 0, [RecordDrafts(1, (Draft.of("l", 0, big),))], _sign)  # (an empty outbox may grow)
        group = [RecordDrafts(n, (Draft.of("l", 0, big),)) for n in range(2, 42)]  # ≈ 200 KB of payloads
        with pytest.raises(OutboxFull, match=r"disk almost full \(\d+ bytes free, \d+ wanted"):
            box.enqueue("i", 0, group, _sign)
        assert box.stats().depth == 1, "nothing of a refused group is written"
        assert box.cursor("i") == Cursor(0, 1), "the cursor of a refused group does not move"
        # a part of it fits: committed one batch at a time, the records go in
        out = box.enqueue("i", 0, group[:8], _sign)
        assert [e.seq for e in out] == list(range(2, 10))
        assert box.cursor("i") == Cursor(0, 9)


def test_a_new_outbox_has_large_pages_where_there_is_room_and_an_old_one_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new outbox gets `PAGE_SIZE` pages on a roomy disk (with no cap, or a cap of at least 8 MiB) and
    SQLite's 4096 otherwise; its reserve holds as many pages either way. One made with 4096 pages (on a
    small disk, or by an earlier gateway) opens with them and works on: a WAL database's pages cannot change."""
    gib, mib = 1024**3, 1024**2
    assert outbox_db.page_size_for(None, 2 * gib) == outbox_db.PAGE_SIZE == 16384
    assert outbox_db.page_size_for(16 * mib, 2 * gib) == 16384
    assert outbox_db.page_size_for(4 * mib, 2 * gib) == 4096  # a small cap
    assert outbox_db.page_size_for(None, 500 * mib) == 4096  # a disk that may fill
    monkeypatch.setattr(outbox_db, "LARGE_PAGES_FREE", 0)  # (whatever this machine's disk)
    with Outbox.open(tmp_path / "new.db", reserve_bytes=512 * 1024) as box:
        assert box._db._conn.execute("PRAGMA page_size").fetchone()[0] == 16384
        assert box.space.reserve_bytes == 4 * 512 * 1024  # 128 pages, as at 4096
        assert box.space.reserve.stat().st_size == 4 * 512 * 1024
    monkeypatch.setattr(outbox_db, "LARGE_PAGES_FREE", 2**62)  # no disk is that roomy
    with Outbox.open(tmp_path / "old.db", reserve_bytes=512 * 1024) as box:
        assert box.space.reserve_bytes == 512 * 1024
        box.enqueue("i", 0, [_record(1)], _sign)
    monkeypatch.setattr(outbox_db, "LARGE_PAGES_FREE", 0)
    with Outbox.open(tmp_path / "old.db") as box:
        assert box._db._conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert [e.seq for e in box.enqueue("i", 0, [_record(2)], _sign)] == [2]
        assert box.ack(seqs=[1, 2]).acked == (1, 2)
        assert box.stats().depth == 0


def test_the_wal_bound_follows_the_cap_and_the_free_disk(tmp_path: Path) -> None:
    """SQLite checkpoints the WAL at half its bound and truncates it to the bound: 32 MiB on a roomy disk
    (`WAL_LIMIT`), a sixteenth of the free disk when that is less (64 KiB at least), a quarter of
    `storage.max_db_mb` when a cap is set."""
    with Outbox.open(tmp_path / "roomy.db") as box:
        box._db.space._disk_free = lambda _p: 64 * 1024**3
        box._db.space.configure()
        pragma = box._db._conn.execute
        assert box._db.space.wal_limit == WAL_LIMIT == 32 * 1024**2
        page = pragma("PRAGMA page_size").fetchone()[0]
        assert pragma("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_LIMIT // page // 2
        assert pragma("PRAGMA journal_size_limit").fetchone()[0] == WAL_LIMIT
        box._db.space._disk_free = lambda _p: 160 * 1024**2  # 160 MiB free: a sixteenth of it
        box._db.space.configure()
        assert box._db.space.wal_limit == 10 * 1024**2
        box._db.space._disk_free = lambda _p: 100 * 1024
        box._db.space.configure()
        assert box._db.space.wal_limit == 64 * 1024
    with Outbox.open(tmp_path / "capped.db", max_db_bytes=8 * 1024**2) as box:
        assert box._db.space.wal_limit == 2 * 1024**2


class _Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it on the way out)."""


class OutboxMachine(RuleBasedStateMachine):
    """Any interleaving of enqueue / ack / reject / requeue / crash+reopen loses nothing and never reuses a seq."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "o.db"
        self.box = Outbox.open(self.path, keep_record_keys=1)  # keys pruned almost at once
        self.generation = 0
        self.next_record = 1
        self.issued: dict[int, str] = {}  # seq → id, everything ever enqueued
        self.pending: set[int] = set()
        self.acked: set[int] = set()
        self.rejected: set[int] = set()

    def teardown(self) -> None:
        self.box.close()
        self.dir.cleanup()

    @rule(lines=st.integers(1, 3), records=st.integers(1, 3), reread=st.integers(0, 3), encoded=st.booleans())
    def enqueue(self, lines: int, records: int, reread: int, encoded: bool) -> None:
        start = max(1, self.next_record - reread)  # re-reads of records whose keys may be pruned
        make = _encoded if encoded else _record  # encoded: sealed ahead of the write lock where it can be
        recs = [make(n, lines) for n in range(start, self.next_record + records)]
        out = self.box.enqueue("inst", 0, recs, _sign)
        stored = self.box.payloads([e.seq for e in out])
        for e in out:
            doc = json.loads(stored[e.seq])
            assert (doc["id"], doc["seq"]) == (e.id, e.seq), "stored under another seq or id than it holds"
            assert verify_payload(doc, KEY)
            assert e.seq not in self.issued, f"seq {e.seq} reused"
            assert all(e.seq > s for s in self.issued), "seq not strictly increasing"
            self.issued[e.seq] = e.id
            self.pending.add(e.seq)
        self.next_record += records

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), by_id=st.booleans())
    def ack(self, data: st.DataObject, by_id: bool) -> None:
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.pending | self.acked)), min_size=1))
        if by_id:
            res = self.box.ack(ids=[self.issued[s] for s in chosen])
        else:
            res = self.box.ack(seqs=sorted(chosen))
        assert set(res.acked) == chosen & self.pending
        self.pending -= chosen
        self.acked |= chosen

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.pending)), min_size=1))
        res = self.box.ack(rejected=[rejection(self.box, self.issued[s], s, "test reason") for s in chosen])
        assert set(res.rejected) == chosen
        self.pending -= chosen
        self.rejected |= chosen

    @precondition(lambda self: bool(self.rejected))
    @rule(data=st.data(), everything=st.booleans())
    def requeue(self, data: st.DataObject, everything: bool) -> None:
        chosen = (
            set(self.rejected)
            if everything
            else data.draw(st.sets(st.sampled_from(sorted(self.rejected)), min_size=1))
        )
        moved = self.box.requeue_rejected(None if everything else sorted(chosen))
        assert set(moved) == chosen
        self.rejected -= chosen
        self.pending |= chosen

    @rule(after=st.integers(0, 4), encoded=st.booleans())
    def crash_inside_enqueue(self, after: int, encoded: bool) -> None:
        # The process dies in the middle of the enqueue transaction (after signing `after` results):
        # nothing of it may persist, the cursor must not move, no seq is consumed.
        calls = 0

        def dying_sign(data: bytes) -> str:
            nonlocal calls
            calls += 1
            if calls > after:
                raise _Crash
            return _sign(data)

        before = self.box.stats()
        with pytest.raises(_Crash):
            self.box.enqueue(
                "inst",
                0,
                [(_encoded if encoded else _record)(self.next_record + i, 3) for i in range(2)],
                dying_sign,
            )
        assert self.box.stats() == before

    @rule()
    def crash_and_reopen(self) -> None:
        # A killed process leaves only what is on disk: no close, no checkpoint. Copy the database and its
        # write-ahead log as they are at this instant and reopen the copy, as the restarted process would;
        # the old connection (never closed cleanly on the files used from here on) is then discarded.
        self.generation += 1
        crashed = self.path.with_name(f"crash-{self.generation}.db")
        for suffix in ("", "-wal"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                shutil.copyfile(src, f"{crashed}{suffix}")
        assert Path(f"{self.path}-wal").exists(), (
            "WAL mode: committed rows live in the log until a checkpoint"
        )
        old, self.box, self.path = self.box, Outbox.open(crashed, keep_record_keys=1), crashed
        old.close()

    @invariant()
    def nothing_lost(self) -> None:
        in_box = {s for s, _ in self.box.due_order(10_000)}
        assert in_box == self.pending, "outbox rows differ from un-acked results"
        st_ = self.box.stats()
        assert st_.enqueued_total == len(self.issued)
        assert st_.acked_total == len(self.acked)
        assert st_.rejected_total == len(self.rejected)
        assert {r.seq for r in self.box.rejected_rows(10_000)} == self.rejected
        payloads = self.box.payloads(sorted(self.pending))
        assert all(json.loads(p)["id"] == self.issued[s] for s, p in payloads.items()), "id/seq pairing kept"
        assert st_.last_seq == max(self.issued, default=0)
        cur = self.box.cursor("inst")
        assert (cur.last_record if cur else 0) == self.next_record - 1


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_failed_migration_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.db"
    Outbox.open(path).close()
    bad = Migration("9999_broken", ("CREATE TABLE half_done (x INTEGER)", "CREATE TABLE outbox (x INTEGER)"))
    monkeypatch.setattr("gateway.outbox_db.MIGRATIONS", (*MIGRATIONS, bad))
    with pytest.raises(OutboxError, match="migrating"):
        Outbox.open(path)
    monkeypatch.undo()
    with Outbox.open(path) as box:
        assert box.applied_migrations() == [m.name for m in MIGRATIONS]
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert "half_done" not in tables, "a failed migration must leave nothing behind"


def _verify(doc: dict[str, Any]) -> bool:
    return verify_payload(doc, KEY)


def _corrupt_middle(path: Path, pages: slice) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")  # (the page size, in the file's header)
    start, stop = pages.start * size, pages.stop * size
    assert len(data) > stop
    data[start:stop] = b"\xa5" * (stop - start)
    path.write_bytes(bytes(data))


def test_salvage_restores_unsent_results_cursors_and_dedup_keys(tmp_path: Path) -> None:
    """A corrupt outbox moved aside: everything readable is restored into the new one, so nothing un-sent
    is lost and re-reading the instrument is a no-op (no duplicates under new ids)."""
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        box.enqueue("i", 0, [_record(n, lines=2) for n in range(1, 31)], _sign)
        sent = box.payloads([1, 2])
        box.ack(ids=[json.loads(sent[1])["id"], json.loads(sent[2])["id"]], seqs=[], rejected=[])
        original = box.payloads(list(range(3, 61)))
    # a tampered row (as a bit flip would leave it) must not be restored
    conn = sqlite3.connect(path)
    conn.execute("UPDATE outbox SET payload = replace(payload, '\"n\":7.0', '\"n\":8.0') WHERE seq = 13")
    conn.commit()
    conn.close()
    aside = tmp_path / "o.db.corrupt-test"
    path.rename(aside)
    with Outbox.open(path) as box:
        assert box.unsalvaged() == [aside]
        report = box.salvage_from(aside, _verify)
        assert (report.results_found, report.results_restored, report.results_invalid) == (58, 57, 1)
        assert report.cursors_restored == 1
        assert report.records_restored == 60
        assert report.errors == ()
        assert box.unsalvaged() == [], "a salvaged file is marked and not processed again"
        restored = box.payloads(list(range(1, 61)))
        assert set(restored) == set(range(3, 61)) - {13}
        assert all(restored[s] == original[s] for s in restored), "restored byte for byte (signatures hold)"
        assert box.cursor("i") == Cursor(0, 30)
        assert box.enqueue("i", 0, [_record(30, lines=2)], _sign) == [], "re-read after salvage is a no-op"
        assert box.enqueue("i", 0, [_record(31)], _sign)[0].seq == 61
        again = box.salvage_from(aside, _verify)
        assert again.results_restored == 0  # idempotent


def test_salvage_without_cursors_continues_after_the_last_taken_record(tmp_path: Path) -> None:
    """Keys are pruned behind the cursor, so a corrupt outbox whose cursors cannot be read must not send the
    instrument back to its first record: the new cursor follows the newest key / the pruning horizon."""
    path = tmp_path / "o.db"
    with Outbox.open(path, keep_record_keys=2) as box:
        box.enqueue("i", 0, [_record(n) for n in range(1, 41)], _sign)
    for name, tables in (("cursors", ("cursors",)), ("keys-only", ("cursors", "record_horizon"))):
        aside = tmp_path / f"o.db.corrupt-{name}"
        shutil.copy(path, aside)
        conn = sqlite3.connect(aside)
        for table in tables:
            conn.execute(f"DROP TABLE {table}")  # unreadable, as far as salvage can tell
        conn.commit()
        conn.close()
    path.unlink()
    with Outbox.open(path, keep_record_keys=2) as box:
        report = box.salvage_from(tmp_path / "o.db.corrupt-cursors", _verify)
        assert report.results_restored == 40
        assert any(e.startswith("cursors") for e in report.errors), report.errors
        assert box.cursor("i") == Cursor(0, 40)
        out = box.enqueue("i", 0, [_record(n) for n in range(1, 42)], _sign)
        assert [e.seq for e in out] == [41], "the instrument read again from the start: only record 41 is new"
    path.unlink()
    with Outbox.open(path, keep_record_keys=2) as box:  # neither cursor nor horizon: from the keys alone
        report = box.salvage_from(tmp_path / "o.db.corrupt-keys-only", _verify)
        assert (report.records_restored, report.cursors_restored) == (2, 1)
        assert box.cursor("i") == Cursor(0, 40), "the worker goes on after record 40, not from record 1"


def test_salvage_of_a_damaged_file_keeps_only_verified_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        box.enqueue("i", 0, [_record(n, lines=3) for n in range(1, 200)], _sign)
    _corrupt_middle(path, slice(3, 5))
    with pytest.raises(OutboxCorrupt, match="salvaged into it automatically") as info:
        Outbox.open(path)
    moved = info.value.moved_to
    assert moved is not None
    with Outbox.open(path) as box:
        report = box.salvage_from(moved, _verify)
        restored = box.payloads(list(range(1, 600)))
        assert report.results_restored == len(restored) > 0
        assert all(_verify(json.loads(p)) for p in restored.values())
        if report.results_restored < 597:
            assert report.errors, "rows were lost: the report must say what could not be read"


def test_salvage_of_garbage_reports_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(OutboxCorrupt):
        Outbox.open(path)
    with Outbox.open(path) as box:
        [aside] = box.unsalvaged()
        report = box.salvage_from(aside, _verify)
        assert report.results_restored == 0
        assert report.errors
        assert box.unsalvaged() == []
