"""Supervised acquisition worker: one thread per instrument, pulling records into the outbox.

Does: open the analyzer, identify it, then loop: `latest_record()`, read the records after the cursor
(at most `read_batch`), interpret them (`gateway.pipeline`) and commit all their results + the cursor +
the seq in ONE outbox transaction — before anything else happens with them. A record is only ever
"taken" by that commit, so a crash anywhere re-reads it and the outbox's unique key makes that a no-op.
A batch is handed to the interpretation before the drafts of the batches read earlier are taken (`AHEAD`:
with an interpretation process, `gateway.offload`, they are interpreted there while the worker reads on).
The commit runs in a second thread (one per worker) while the worker reads and interprets the next batches:
under a backlog the batches are committed `QUEUED_BATCHES` at a time, in one transaction (group commit: one
fsync, one write lock hand-over for all of them; the next group gathers while one commits), and whatever
waits is committed as soon as the worker has caught up; the commits are waited for before anything else
touches the cursor (a new epoch, a skipped record, idling) and whenever the loop ends.
New memory (cleared, or the analyzer replaced by one with the same serial while the gateway was away) is
detected two ways: a record counter below the cursor, and — on every (re)connect — the record at the cursor
re-read and compared with the identity stored with the cursor (`drivers.readings.record_identity`: time,
sample id, checksum of the raw signal), which also catches a new memory that already holds MORE records than
the cursor. Either starts a new cursor epoch at record 0 — every record of the new memory is read — and is
logged, recorded in the outbox (`memory_resets`) and reported as the instrument's `last_event` in the status.

Failure policy (supervisor): any `DriverError` marks the instrument unavailable, closes it and retries
with exponential backoff (`drivers.backoff.Backoff`, the policy the driver sessions use too:
`Timeouts.reconnect_initial_s` doubling up to `reconnect_max_s`); records read
before the failure are committed first. Any other exception out of a driver (or the interpretation of its
records) is a bug, not a reason to lose the instrument: it is logged with its traceback, the instrument is
marked `error` with the exception as the reason (in the status the cloud sees) and retried the same way —
the thread never dies of it. `OutboxFull` pauses reading (the instrument keeps its records)
and retries every `full_retry_s` until space returns. Other outbox failures stop this worker and are
reported to the service through `on_fatal`. A failing worker never stops the others.

Does not: talk MQTT or decide verdicts (the interpretation core does).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from drivers.backoff import Backoff
from drivers.errors import DriverError, ProtocolError
from drivers.readings import Analyzer, ClockSync, DeviceInfo, Reading, record_identity
from drivers.timeouts import Timeouts
from gateway.errors import OutboxError, OutboxFull
from gateway.outbox import Cursor, Enqueued, Outbox, RecordDrafts
from kuaijian_schema.labels import fault_text
from kuaijian_schema.wire import Signer

log = logging.getLogger("gateway.worker")

State = Literal["ok", "unavailable", "error", "starting"]


@dataclass(frozen=True, slots=True)
class WorkerState:
    name: str
    driver: str
    state: State = "starting"
    serial: str | None = None
    model: str | None = None
    last_error: str | None = None
    last_event: str | None = None  # e.g. memory cleared / replaced (not an error: reading goes on)
    last_record: int | None = None
    records_read: int = 0


Interpret = Callable[[DeviceInfo, list[Reading]], list[RecordDrafts]]
"""Readings → one `RecordDrafts` each. One with a `submit` method of the `Submit` shape (gateway.pipeline's
`Interpreter`) is started before the worker reads the next batch and finished after it."""
Submit = Callable[[DeviceInfo, list[Reading]], Callable[[], list[RecordDrafts]]]


def _at_once(interpret: Interpret) -> Submit:
    """`interpret` as a `Submit` that interprets when called and hands the drafts over when asked."""

    def submit(info: DeviceInfo, readings: list[Reading]) -> Callable[[], list[RecordDrafts]]:
        drafts = interpret(info, readings)
        return lambda: drafts

    return submit


QUEUED_BATCHES = 4
"""Read batches of one instrument committed together under a backlog: a commit is handed the waiting
batches when they are this many, or when the worker has caught up with the instrument (then however few).
While one group commits the next gathers; a full group waits for the commit before it (at most one commit
running and one waiting: bounds the drafts held in memory)."""


AHEAD = 8
"""Read batches handed to the interpretation whose drafts are not taken yet: an interpretation process
works on them while the worker reads the next, and takes those that wait in one call (`gateway.offload.
COALESCE`) — answering them only when the call is done, so the worker keeps twice that many in flight
(measured under a backlog, 8 alternated benchmark pairs: 23.9 % of the raw link on average against 22.4 %
at 4, gateway RSS 73.3-76.3 against 71.3-74.1 MiB). (Their readings stay in memory until their drafts are
taken: about 8 MiB at read_batch 128 and 1024-px profiles.)"""


@dataclass(frozen=True, slots=True)
class _Batch:
    """Read and interpreted records of one instrument, waiting for their commit."""

    epoch: int
    drafts: list[RecordDrafts]
    identity: str | None  # of the last record
    records: int


class InstrumentWorker:
    """Supervised pull loop for one instrument (a daemon thread)."""

    def __init__(
        self,
        *,
        name: str,
        driver: str,
        make_analyzer: Callable[[], Analyzer],
        interpret: Interpret,
        outbox: Outbox,
        sign: Signer,
        timeouts: Timeouts,
        poll_interval_s: float,
        read_batch: int,
        start_from: Literal["first", "latest"],
        full_retry_s: float,
        skip_unreadable_after: int = 0,
        max_clock_drift_s: float = 0.0,
        on_enqueued: Callable[[list[Enqueued]], None] = lambda _e: None,
        on_state: Callable[[WorkerState], None] = lambda _s: None,
        on_fatal: Callable[[str, Exception], None] = lambda _n, _e: None,
    ) -> None:
        self.name = name
        self._make = make_analyzer
        submit = getattr(interpret, "submit", None)
        self._submit: Submit = submit if callable(submit) else _at_once(interpret)
        self._outbox = outbox
        self._sign = sign
        self._timeouts = timeouts
        self._poll = poll_interval_s
        self._batch = read_batch
        self._start_from = start_from
        self._full_retry = full_retry_s
        self._skip_after = skip_unreadable_after
        self._max_drift = max_clock_drift_s
        self._failing: tuple[str, int, int] | None = None  # (instrument, record, consecutive failures)
        self._on_enqueued = on_enqueued
        self._on_state = on_state
        self._on_fatal = on_fatal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = WorkerState(name=name, driver=driver)

    @property
    def state(self) -> WorkerState:
        with self._lock:
            return self._state

    def _set(self, **changes: object) -> None:
        with self._lock:
            old = self._state
            self._state = replace(old, **changes)  # type: ignore[arg-type]
            new = self._state
        if (old.state, old.last_error, old.last_event) != (new.state, new.last_error, new.last_event):
            self._on_state(new)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=f"worker-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ supervision
    def _supervise(self) -> None:
        backoff = Backoff.of(self._timeouts)
        delay = backoff.next_delay()
        while not self._stop.is_set():
            analyzer: Analyzer | None = None
            try:
                analyzer = self._make()
                analyzer.open()
                info = analyzer.identify()
                self._check_clock(analyzer)
                self._set(state="ok", serial=info.serial, model=info.model, last_error=None)
                backoff.reset()
                delay = backoff.next_delay()
                self._pull(analyzer, info)
            except DriverError as exc:
                self._set(state="unavailable", last_error=fault_text(exc))
                log.warning("instrument %s unavailable (retry in %.1fs): %s", self.name, delay, exc)
            except OutboxError as exc:
                self._set(state="unavailable", last_error=f"本地缓存故障（outbox: {exc}）")
                log.error("instrument %s stopped: outbox failure: %s", self.name, exc)  # noqa: TRY400
                self._on_fatal(self.name, exc)
                return
            except Exception as exc:
                self._set(state="error", last_error=fault_text(exc))
                log.exception("instrument %s failed unexpectedly (retry in %.1fs)", self.name, delay)
            finally:
                if analyzer is not None:
                    try:
                        analyzer.close()
                    except Exception as exc:  # noqa: BLE001 - closing a broken driver must not kill us
                        log.debug("instrument %s: close failed: %s", self.name, exc)
            if self._stop.wait(delay):
                break
            delay = backoff.next_delay()

    def _check_clock(self, analyzer: Analyzer) -> None:
        """Set the analyzer's clock when it is off by more than `max_clock_drift_s` (its results carry its
        own timestamps); 0 disables. Analyzers without a settable clock are left alone."""
        if self._max_drift <= 0 or not isinstance(analyzer, ClockSync):
            return
        try:
            drift = (analyzer.get_clock() - datetime.now(UTC)).total_seconds()
            if abs(drift) > self._max_drift:
                analyzer.sync_clock(datetime.now(UTC))
                log.warning("instrument %s: clock was off by %+.0f s; set to UTC now", self.name, drift)
        except ProtocolError as exc:
            # an analyzer that refuses clock commands still measures: read it anyway (transport errors
            # propagate: the link is gone)
            log.warning("instrument %s: could not check or set its clock: %s", self.name, exc)

    def _pull(self, analyzer: Analyzer, info: DeviceInfo) -> None:
        # The commit of a group of batches (serialising, signing, the fsync) runs in a second thread while
        # this one reads and interprets the next batches (`queued`, `_commit_queued`). The commits are
        # waited for before anything else touches this instrument's cursor and whenever this loop ends, for
        # whatever reason.
        with ThreadPoolExecutor(1, thread_name_prefix=f"commit-{self.name}") as committer:
            pending: list[Future[bool]] = []
            try:
                self._pull_records(analyzer, info, committer, pending)
            finally:
                while pending:
                    pending.pop(0).result()

    def _pull_records(
        self, analyzer: Analyzer, info: DeviceInfo, committer: ThreadPoolExecutor, pending: list[Future[bool]]
    ) -> None:
        queue: list[_Batch] = []  # read and interpreted, not yet taken by a commit (the committer's lock)
        lock = threading.Lock()
        # read and handed to the interpretation, drafts not taken yet: (what gives them, the batch without them)
        started: deque[tuple[Callable[[], list[RecordDrafts]], _Batch]] = deque()

        def queued(keep: int, leave: int = 0) -> bool:
            """Take the drafts of the started batches but the last `leave` into the commit queue, in order —
            handed to a commit whenever `QUEUED_BATCHES` wait, and with `keep` 0 whatever waits — then wait
            until at most `keep` commits are pending; False when stop was requested while one waited for
            space."""
            while len(started) > leave:
                take, batch = started.popleft()
                batch = replace(batch, drafts=take())
                with lock:
                    queue.append(batch)
                    full = len(queue) >= QUEUED_BATCHES
                if full and not commit(keep=1):
                    return False
            with lock:
                waiting = bool(queue)
            if keep == 0 and waiting and not commit(keep=1):
                return False
            return settled(keep)

        def commit(keep: int) -> bool:
            """Hand what waits in the queue to a commit once at most `keep` are pending (the commit takes
            every batch that waits when it starts); False when stop was requested while one waited."""
            if not settled(keep):
                return False
            pending.append(committer.submit(self._commit_queued, key, queue, lock))
            return True

        def settled(keep: int = 0) -> bool:
            """Wait until at most `keep` commits are pending; False when stop was requested while one
            waited for space."""
            ok = True
            while len(pending) > keep:
                ok = pending.pop(0).result() and ok
            return ok

        key = f"{info.driver}:{info.serial}"
        cursor = self._outbox.cursor(key)
        verified = False  # the record at the cursor is checked once per connection
        try:
            while not self._stop.is_set():
                latest = analyzer.latest_record()
                if (cursor is None or latest <= cursor.last_record or not verified) and not queued(0):
                    return
                if cursor is None:
                    start = 0 if self._start_from == "first" else latest
                    cursor = Cursor(0, start, self._identity_at(analyzer, start))
                    self._outbox.set_cursor(key, cursor)
                    verified = True
                elif latest < cursor.last_record:
                    reason = f"record counter went back from {cursor.last_record} to {latest}"
                    cursor = self._new_memory(key, cursor, latest, reason)
                    verified = True
                elif not verified:
                    verified = True
                    reason_or_cursor = self._verify_cursor(analyzer, key, cursor)
                    if isinstance(reason_or_cursor, str):
                        cursor = self._new_memory(key, cursor, latest, reason_or_cursor)
                    else:
                        cursor = reason_or_cursor
                if latest <= cursor.last_record:
                    self._stop.wait(self._poll)
                    continue
                upto = min(latest, cursor.last_record + self._batch)
                readings: list[Reading] = []
                failure: DriverError | None = None
                for n in range(cursor.last_record + 1, upto + 1):
                    try:
                        readings.append(analyzer.read_record(n))
                    except DriverError as exc:
                        failure = exc
                        break
                if failure is not None and not readings:
                    if not queued(0):
                        return
                    if self._unreadable(key, cursor, failure, latest):
                        cursor = Cursor(cursor.epoch, cursor.last_record + 1)
                        continue
                if readings:
                    identity = record_identity(readings[-1])
                    # handed over before the batches read earlier are taken to their commit: an
                    # interpretation process always holds the next ones (`AHEAD`)
                    started.append(
                        (self._submit(info, readings), _Batch(cursor.epoch, [], identity, len(readings)))
                    )
                    cursor = Cursor(cursor.epoch, readings[-1].record_no, identity)
                    self._failing = None
                    if not queued(QUEUED_BATCHES, leave=AHEAD):
                        return  # stop requested while waiting for disk space
                if failure is not None:
                    queued(0)  # what was read before the failure is committed first
                    raise failure
            queued(0)  # stop requested: what was read is committed
        finally:
            while started:  # leaving on an error: these records are read again next time
                with contextlib.suppress(Exception):
                    started.popleft()[0]()

    def _identity_at(self, analyzer: Analyzer, record_no: int) -> str | None:
        """Identity of record `record_no` (None for 0, or when the analyzer will not give that record)."""
        if record_no <= 0:
            return None
        try:
            return record_identity(analyzer.read_record(record_no))
        except ProtocolError as exc:
            log.info("instrument %s: record %d cannot be read to check it: %s", self.name, record_no, exc)
            return None

    def _verify_cursor(self, analyzer: Analyzer, key: str, cursor: Cursor) -> Cursor | str:
        """Re-read the record at the cursor: the reason it is a different memory, else the cursor (with the
        identity learnt when none was stored — a cursor from before identities, or after a skip)."""
        if cursor.last_record <= 0:
            return cursor
        identity = self._identity_at(analyzer, cursor.last_record)
        if identity is None:
            return cursor  # rolled out of the memory (or unreadable): nothing to compare with
        if cursor.identity is None:
            learnt = Cursor(cursor.epoch, cursor.last_record, identity)
            self._outbox.set_cursor(key, learnt)
            return learnt
        if identity != cursor.identity:
            return (
                f"record {cursor.last_record} at the cursor is not the record read before "
                "(time, sample id or signal differ)"
            )
        return cursor

    def _new_memory(self, key: str, cursor: Cursor, latest: int, reason: str) -> Cursor:
        new = self._outbox.new_epoch(key, cursor, latest, reason)
        event = (
            f"仪器记录已清空或更换 (memory cleared or analyzer replaced): {reason}; "
            f"reading its {latest} record(s) from the first (epoch {new.epoch})"
        )
        log.warning("instrument %s: %s", self.name, event)
        self._set(last_event=event)
        return new

    def _unreadable(self, key: str, cursor: Cursor, exc: DriverError, latest: int) -> bool:
        """Count protocol failures on the record after the cursor; True when it was skipped now.

        Transport failures (unplugged, timeouts) never count: the record is still there. A record that keeps
        failing with a protocol error (e.g. rolled out of the instrument's memory) must not block every newer
        record forever: after `skip_unreadable_after` attempts it is recorded in the `skipped` table and the
        cursor moves past it, in one transaction.
        """
        n = cursor.last_record + 1
        if not isinstance(exc, ProtocolError) or self._skip_after <= 0 or n >= latest:
            return False
        count = self._failing[2] + 1 if self._failing is not None and self._failing[:2] == (key, n) else 1
        self._failing = (key, n, count)
        if count < self._skip_after:
            return False
        reason = f"unreadable after {count} attempts: {type(exc).__name__}: {exc}"
        self._outbox.skip_record(key, cursor.epoch, n, reason)
        self._failing = None
        self._set(last_error=f"第 {n} 条记录无法读取，已跳过（record {n} skipped: {reason}）")
        log.error("instrument %s: record %d skipped: %s", self.name, n, reason)
        return True

    def _commit_queued(self, key: str, queue: list[_Batch], lock: threading.Lock) -> bool:
        """Commit every batch waiting in `queue` in one transaction (group commit: one fsync for all of
        them); nothing when an earlier call took them already. They share an epoch: the worker waits for
        every commit before it changes the epoch. When they do not fit in one transaction (a nearly full
        disk, a small `max_db_mb`: one big transaction needs more room in the WAL than several small ones
        with a checkpoint between), they are committed one batch at a time, each waiting for space."""
        with lock:
            batches = queue[:]
            queue.clear()
        if len(batches) > 1:
            drafts = [d for b in batches for d in b.drafts]
            try:
                enqueued = self._outbox.enqueue(
                    key, batches[0].epoch, drafts, self._sign, batches[-1].identity
                )
            except OutboxFull:
                pass  # one batch at a time, below
            else:
                self._committed(enqueued, drafts, sum(b.records for b in batches))
                return True
        return all(self._commit(key, b.epoch, b.drafts, b.identity, b.records) for b in batches)

    def _commit(
        self, key: str, epoch: int, drafts: list[RecordDrafts], identity: str | None, records: int
    ) -> bool:
        """Enqueue records (in the committer thread), waiting while the outbox is full; False when stop
        was requested meanwhile."""
        while True:
            try:
                enqueued = self._outbox.enqueue(key, epoch, drafts, self._sign, identity)
            except OutboxFull as exc:
                reason = f"本地缓存已满，暂停读取新记录（outbox full, not reading new records: {exc}）"
                if self.state.last_error != reason:  # once per pause, not once per retry
                    log.error("instrument %s paused: %s", self.name, exc)  # noqa: TRY400
                self._set(state="unavailable", last_error=reason)
                if self._stop.wait(self._full_retry):
                    return False
                continue
            self._committed(enqueued, drafts, records)
            return True

    def _committed(self, enqueued: list[Enqueued], drafts: list[RecordDrafts], records: int) -> None:
        if self.state.state != "ok":
            self._set(state="ok", last_error=None)
        last = max(r.record_no for r in drafts)
        self._set(last_record=last, records_read=self.state.records_read + records)
        self._on_enqueued(enqueued)
