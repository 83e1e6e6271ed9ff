"""The colloidal-gold interpretation of a gateway in a child process: the numpy core, the building of the
result bodies and their sealing run on another core than the outbox and the MQTT link (one GIL each).

Does:
- `GoldOffload.start`: fork one child (before the service starts its own threads); the child closes every
  descriptor it inherited except its socket, ignores SIGINT (a Ctrl-C reaches the whole process group: the
  gateway stops it) and ends when the gateway closes the socket or dies (end of file);
- `GoldOffload.submit` / `interpret`: send a batch of gold readings — their profiles as one contiguous
  buffer (float32 when that gives the numpy core the very same numbers, `_profiles`), the rest pickled —
  with the interpreter's settings and its spec book (each sent again only when it changed), run the very
  same `gateway.pipeline.Interpreter` code there, and return its drafts already encoded
  (`kuaijian_schema.wire.body_parts`: the outbox seals them without encoding them again, and this process
  never decodes them; the bodies hold only finite floats or None — `ResultBody.wire_of` makes them so);
  batches are answered in the order sent, several may wait in the child, and batches of one instrument
  already waiting when the child takes one are interpreted with it in one call (`COALESCE`: the core's
  cost per call is that of about a hundred strips);
- `GoldOffload.seal_with`: from then on the child also seals each draft (`Draft.sealed`: a new id, the seq it
  guesses — from `Outbox.next_seq` for a child's first request, then counting on — and the HMAC of the signer
  the offload was made with, which the child has from the fork); the outbox stores a right guess as it is,
  seals a wrong one again and reports what came next (`_SealedBatch.settled`), which goes to the child with
  the next request and moves its later guesses by the error once (`_steer`);
- failures: an exception in the child comes back as `OffloadError` with its text (the child goes on); a child
  that is gone (killed, crashed) is reaped and `OffloadError` raised — the caller interprets in its own thread
  then — and the next call forks a new one, at most `MAX_RESTARTS` times (after that the offload stays off).

Does not: decide anything about results (gateway.pipeline does, in either process), decide the seqs (the
outbox's transaction does: a guess is only ever checked), touch the outbox, the MQTT link, a file or a log from
the child, or interpret enzyme runs (a few per hour; they stay in the worker).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import pickle
import signal
import socket
import struct
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from drivers.readings import DeviceInfo, GoldReading
from gateway.errors import OffloadError
from gateway.outbox_types import Draft, RecordDrafts, Sealed
from kuaijian_schema.wire import BodyParts, Signer, body_parts, new_result_ids, seal_parts

if TYPE_CHECKING:
    from gateway.pipeline import Interpreter, SpecBook

MAX_RESTARTS = 3
"""Children forked again after one was lost; then the workers interpret in their own threads."""
SOCKET_BUFFER = 4 << 20
"""Send and receive buffer of both ends of the child's socket, bytes (the kernel caps it at its
net.core.wmem_max / rmem_max): a whole batch of profiles fits, so the worker hands it over in one write and
goes on reading instead of waiting, chunk by chunk, for the child to take it."""
_STOP_WAIT_S = 5.0


class _Child:
    """One forked child: its socket, and a thread reading its answers as they come (so a big answer never
    waits for the next request to be sent: no deadlock), kept by ticket until taken."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.cond = threading.Condition()
        self.answers: dict[int, bytearray] = {}
        self.sent = 0  # tickets given: requests are answered in the order they were sent
        self.lost: str | None = None
        self.settings: tuple[Any, ...] | None = None  # the last sent (the child keeps them)
        self.book: SpecBook | None = None
        self.hinted = False  # the seq to seal from was sent (the child's guesses go on from there)
        self.anchor: tuple[int, int, int] | None = None  # (chain, guessed next, actual next), to send
        self._reader = threading.Thread(target=self._read, name=f"offload-{pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        n = 0
        while True:
            try:
                answer = _receive(self.sock)
            except (EOFError, OSError) as exc:
                with self.cond:
                    self.lost = f"{type(exc).__name__}: {exc}" if str(exc) else "it ended"
                    self.cond.notify_all()
                return
            with self.cond:
                self.answers[n] = answer
                n += 1
                self.cond.notify_all()

    def answer(self, ticket: int) -> bytearray:
        with self.cond:
            while ticket not in self.answers:
                if self.lost is not None:
                    raise OffloadError(f"the interpretation process is gone ({self.lost})")
                self.cond.wait()
            return self.answers.pop(ticket)

    def end(self, timeout: float) -> None:
        """Shut the socket (the child sees end of file and exits; so does the reader) and reap the child."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        _reap(self.pid, timeout)
        self._reader.join(timeout)
        self.sock.close()


class GoldOffload:
    """One child process interpreting gold batches for every worker of a gateway (see the module docstring)."""

    def __init__(self, sign: Signer | None = None) -> None:
        self._lock = threading.Lock()  # sending, forking
        self._child: _Child | None = None
        self._sign = sign  # the station's signer: the child has it from the fork
        self._next_seq: Callable[[], int] | None = None  # `seal_with`
        self.restarts = 0
        self.closed = False
        self.answered = 0  # batches whose drafts the child made

    def seal_with(self, next_seq: Callable[[], int]) -> None:
        """Have the child seal the drafts it makes (`Draft.sealed`), with the signer given at construction and
        seqs guessed from `next_seq()` (the outbox's `Outbox.next_seq`, asked once per child) on; the outbox
        stores those it guessed right as they are and tells their batch what came next when they were not
        (another instrument's or a registration's enqueue came first: the child's next guesses move by the
        difference, once — the batches sealed before it heard are sealed again by the outbox)."""
        if self._sign is None:
            raise ValueError("sealing in the interpretation process needs the station's signer")
        with self._lock:
            self._next_seq = next_seq

    @property
    def pid(self) -> int | None:
        """The child's process id (None when none runs)."""
        child = self._child
        return None if child is None or child.lost is not None else child.pid

    def start(self) -> None:
        """Fork the child (once; `submit` forks again after a loss)."""
        with self._lock:
            if self._child is None and not self.closed:
                self._child = _fork(self._sign)

    def takes(self, readings: Sequence[GoldReading]) -> bool:
        """Whether to send `readings` here: a child runs or may be forked again, and it interprets them
        exactly as the worker's thread would — float64 profiles (what every driver makes; sent as float32
        when that gives the core the same numbers, `_profiles`; a profile of another type is interpreted
        where it is)."""
        if self.closed or (self.pid is None and self.restarts >= MAX_RESTARTS):
            return False
        return all(rd.profile.dtype == np.float64 for rd in readings)

    def interpret(
        self, interpreter: Interpreter, book: SpecBook, info: DeviceInfo, readings: Sequence[GoldReading]
    ) -> list[RecordDrafts]:
        """`interpreter`'s drafts of `readings` (gold, `takes(readings)`), made in the child with `book`;
        `OffloadError` when the child failed or is gone."""
        return self.submit(interpreter, book, info, readings)()

    def submit(
        self, interpreter: Interpreter, book: SpecBook, info: DeviceInfo, readings: Sequence[GoldReading]
    ) -> Callable[[], list[RecordDrafts]]:
        """Send `readings` to the child and return what waits for their drafts (`interpret`'s) when called.
        Requests queue in the child in the order sent: a worker sends its next batch before it takes the
        drafts of the ones before (`gateway.worker.AHEAD`), so the child never waits for it."""
        settings = interpreter.settings()
        metas = _metas(readings)
        profiles = _profiles(readings)
        with self._lock:
            child = self._running()
            hint = None
            if self._next_seq is not None and not child.hinted:
                hint = self._next_seq()
                child.hinted = True
            anchor, child.anchor = child.anchor, None
            head = _head(
                None if settings == child.settings else settings,
                None if book is child.book else book,
                info,
                metas,
                profiles,
                (hint, anchor),
            )
            try:
                _send(child.sock, head)
                _send(child.sock, profiles.data)
            except OSError as exc:
                raise OffloadError(f"the interpretation process is gone: {exc}") from exc
            child.settings, child.book = settings, book
            ticket = child.sent
            child.sent += 1

        def drafts() -> list[RecordDrafts]:
            answer = child.answer(ticket)
            if answer[:1] == b"E":
                raise OffloadError(f"interpretation process: {answer[1:].decode(errors='replace')}")
            self.answered += 1
            chain, made = pickle.loads(memoryview(answer)[1:])  # noqa: S301
            if chain is None:  # not sealed
                return [
                    RecordDrafts(no, tuple(Draft(line, prio, None, parts) for line, prio, parts in drafts))
                    for no, drafts in made
                ]
            if self._sign is None:  # (a child seals only with the signer it was forked with)
                raise OffloadError("the interpretation process sealed drafts without a signer")
            batch = _SealedBatch(self, child, chain, self._sign)
            return [
                RecordDrafts(
                    no,
                    tuple(
                        Draft(line, prio, None, parts, Sealed(rid, seq, payload, batch))
                        for line, prio, parts, rid, seq, payload in drafts
                    ),
                )
                for no, drafts in made
            ]

        return drafts

    def _settled(self, child: _Child, chain: int, guessed_next: int, actual_next: int) -> None:
        """`_SealedBatch.settled`: sent to the child with the next request (the latest one only)."""
        with self._lock:
            if child is self._child:
                child.anchor = (chain, guessed_next, actual_next)

    def _running(self) -> _Child:
        """The child, forked again when it was lost (called with the lock held)."""
        child = self._child
        if child is not None and child.lost is None:
            return child
        if child is not None:
            child.end(_STOP_WAIT_S)
            self._child = None
        if self.closed or self.restarts >= MAX_RESTARTS:
            raise OffloadError("no interpretation process")
        self.restarts += 1
        self._child = _fork(self._sign)
        return self._child

    def close(self) -> None:
        """End the child: it finishes what it holds, sees end of file and exits (killed after
        `_STOP_WAIT_S`); drafts not taken yet are lost (`OffloadError`: the caller interprets them)."""
        with self._lock:
            self.closed = True
            child, self._child = self._child, None
        if child is not None:
            child.end(_STOP_WAIT_S)


class _SealedBatch:
    """`gateway.outbox_types.SealedBatch` of the drafts of one answer the child sealed (`Sealed.batch`)."""

    __slots__ = ("_chain", "_child", "_offload", "sign")

    def __init__(self, offload: GoldOffload, child: _Child, chain: int, sign: Signer) -> None:
        self._offload = offload
        self._child = child
        self._chain = chain  # the child's guesses it was sealed under (`_steer`)
        self.sign = sign

    def settled(self, guessed_next: int, actual_next: int) -> None:
        self._offload._settled(self._child, self._chain, guessed_next, actual_next)


def _fork(sign: Signer | None) -> _Child:
    """Fork a child serving `_serve` (sealing with `sign`) on one end of a new socket pair."""
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    gc.freeze()  # the child's collections then leave the objects it shares with us untouched (no copies)
    try:
        pid = os.fork()
    except OSError as exc:
        gc.unfreeze()
        ours.close()
        theirs.close()
        raise OffloadError(f"cannot start the interpretation process: {exc}") from exc
    if pid == 0:  # the child: nothing here may return into the gateway's code
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            keep = theirs.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, _max_fd())
            _serve(theirs, sign)
        except BaseException:  # noqa: BLE001 - the child only ever exits
            code = 1
        finally:
            os._exit(code)
    gc.unfreeze()
    theirs.close()
    return _Child(pid, ours)


def _reap(pid: int, timeout: float) -> None:
    done = threading.Event()

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        done.set()

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()
    if not done.wait(timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        done.wait(timeout)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _metas(readings: Sequence[GoldReading]) -> list[tuple[Any, ...]]:
    """What the child needs of each reading besides its profile."""
    return [
        (
            rd.record_no,
            rd.channel,
            rd.kit,
            rd.sample_id,
            rd.product,
            rd.measured_at,
            rd.operator,
            rd.profile.shape,
        )
        for rd in readings
    ]


def _head(
    settings: tuple[Any, ...] | None,
    book: SpecBook | None,
    info: DeviceInfo,
    metas: list[tuple[Any, ...]],
    profiles: npt.NDArray[np.floating[Any]],
    steer: tuple[int | None, tuple[int, int, int] | None] = (None, None),
) -> bytes:
    """The first message of a request (settings and book None: unchanged since the last request; `steer`:
    the seq to seal from and the latest `settled` report, `_steer`)."""
    return pickle.dumps((settings, book, info, metas, profiles.dtype.str, steer), pickle.HIGHEST_PROTOCOL)


_F4_BOUND = 1e30


def _profiles(readings: Sequence[GoldReading]) -> npt.NDArray[np.floating[Any]]:
    """The profiles of `readings` end to end, as float32 when they are all of one shape and every value
    converts to a float32 within ±1e30 — else as float64, as they are.

    The numpy core reads a profile as float32 (it gathers the line regions into a float32 buffer; the raw
    signal a result carries is float32 too): a profile converted here gives it the very same numbers, in
    half the bytes to send, receive and hold. What it reads as float64 — the sum that proves a profile
    finite — is finite either way within that bound, so an unusable profile is refused with the same
    reason in both processes; non-finite values or values beyond the bound go as float64. (One call makes
    the whole array, the GIL held: copying the profiles one by one lets go of it for each.)"""
    if len({rd.profile.shape for rd in readings}) == 1:
        f32 = np.array([rd.profile for rd in readings], dtype=np.float32)
        if f32.size and f32.max() <= _F4_BOUND and f32.min() >= -_F4_BOUND:
            return f32.reshape(-1)
    return np.concatenate([rd.profile.ravel() for rd in readings])


_LENGTH = struct.Struct("<Q")


def _send(sock: socket.socket, data: bytes | memoryview) -> None:
    """One message: its length, then its bytes."""
    sock.sendall(_LENGTH.pack(len(memoryview(data).cast("B"))))
    sock.sendall(data)


def _receive(sock: socket.socket) -> bytearray:
    """One message (`_send`), read straight into its buffer; EOFError when the other end is gone."""
    (size,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    return _exactly(sock, size)


def _exactly(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("end of file")
        got += n
    return buf


COALESCE = 4
"""Batches waiting in the child interpreted in one call, at most (the numpy core's cost per call is about
that of a hundred strips: one call for two batches of 128 is ~25 % cheaper per strip than two calls)."""


def _serve(sock: socket.socket, sign: Signer | None = None) -> None:
    """The child's loop: a batch in — and every batch already waiting behind it, up to `COALESCE` —, their
    drafts (b"D" + pickle) or an error (b"E" + text) out, one answer per batch in order, until end of file."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread, as in the gateway (gateway.service): set again here, whatever a fork leaves of it
    threadpool_limits(limits=1, user_api="blas")
    state = _child_state(sign)
    while True:
        try:
            requests = [(_receive(sock), _receive(sock))]
            while len(requests) < COALESCE and _waiting(sock):
                requests.append((_receive(sock), _receive(sock)))
        except (EOFError, OSError):
            return
        for answer in _answers(state, requests):
            _send(sock, answer)


def _child_state(sign: Signer | None) -> dict[str, Any]:
    """A new child's state: its spec book and interpreter (none until the first request's settings), its
    signer, "next" — the seq the next sealed draft is guessed to get (None: not sealing yet) — and "chain" —
    how often the guesses were corrected (`_steer`)."""
    from gateway.pipeline import SpecHolder

    return {"holder": SpecHolder(), "interpreter": None, "sign": sign, "next": None, "chain": 0}


def _waiting(sock: socket.socket) -> bool:
    """Whether the parent has begun sending another request."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False


def _answers(state: dict[str, Any], requests: list[tuple[bytearray, bytearray]]) -> Iterator[bytes]:
    """One answer per request, in order, each given as soon as it is made (the parent waits for the first
    while the child seals the others): consecutive requests of the same instrument that change no setting
    are interpreted in one call, any other on its own; a failure answers every request of its call. Each
    request's drafts are sealed (`_seal`) when the child seals, after its `steer` (`_steer`)."""
    # (device info, readings, steer) of one call
    group: list[tuple[DeviceInfo, list[GoldReading], tuple[Any, Any]]] = []

    def flush() -> Iterator[bytes]:
        if not group:
            return
        calls = group[:]
        group.clear()
        try:
            made = _drafts(state, calls[0][0], [rd for _info, rds, _steer in calls for rd in rds])
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which interprets itself
            for _info, _rds, steer in calls:
                _steer(state, *steer)
            text = b"E" + f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}".encode()
            yield from (text for _ in calls)
            return
        at = 0
        for _info, rds, steer in calls:
            _steer(state, *steer)
            part = made[at : at + len(rds)]
            if state["next"] is None or state["sign"] is None:
                answer: tuple[int | None, list[Any]] = (None, part)
            else:
                answer = (state["chain"], _seal(state, part))
            yield b"D" + pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
            at += len(rds)

    for head, buffer in requests:
        try:
            settings, book, info, readings, steer = _decode(head, buffer)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which interprets itself
            yield from flush()
            yield b"E" + f"{type(exc).__name__}: {exc}".encode()
            continue
        if settings is not None or book is not None or (group and info != group[0][0]):
            yield from flush()
            _apply(state, settings, book)
        group.append((info, readings, steer))
    yield from flush()


def _steer(state: dict[str, Any], hint: int | None, anchor: tuple[int, int, int] | None) -> None:
    """Before sealing a request's drafts: start guessing seqs at `hint` (the parent's `Outbox.next_seq`,
    sent with a child's first request once sealing is on); correct the guesses by an `anchor` — (chain,
    guessed next, actual next) of the last batch an enqueue stored — when that batch was sealed under the
    guesses now in force (`chain`: a report about a batch sealed before the last correction says nothing
    new) and its guess was wrong: every guess from here on moves by the difference."""
    if hint is not None and state["next"] is None:
        state["next"] = hint
    if anchor is not None and state["next"] is not None:
        chain, guessed, actual = anchor
        if chain == state["chain"] and guessed != actual:
            state["next"] += actual - guessed
            state["chain"] += 1


def _seal(
    state: dict[str, Any], made: list[tuple[int, list[tuple[str, int, BodyParts]]]]
) -> list[tuple[int, list[tuple[str, int, BodyParts, str, int, bytes]]]]:
    """`made` sealed (`seal_parts`) with new ids and the seqs guessed from `state["next"]` on, in order:
    (record no, [(line, priority, parts, id, seq, payload)]) per reading."""
    sign: Signer = state["sign"]
    ids = iter(new_result_ids(sum(len(drafts) for _no, drafts in made)))
    seq = state["next"]
    out = []
    for no, drafts in made:
        row = []
        for line, prio, parts in drafts:
            rid = next(ids)
            row.append((line, prio, parts, rid, seq, seal_parts(parts, rid, seq, sign)[0]))
            seq += 1
        out.append((no, row))
    state["next"] = seq
    return out


def _decode(
    head: bytearray, buffer: bytearray
) -> tuple[Any, Any, DeviceInfo, list[GoldReading], tuple[Any, Any]]:
    """(settings or None, spec book or None, device info, readings, steer) of one request."""
    settings, book, info, metas, dtype, steer = pickle.loads(head)  # noqa: S301 - from our own parent process
    profiles = np.frombuffer(buffer, dtype=np.dtype(dtype))
    readings: list[GoldReading] = []
    at = 0
    for no, channel, kit, sample_id, product, measured_at, operator, shape in metas:
        n = math.prod(shape)
        readings.append(
            GoldReading(
                no,
                channel,
                kit,
                sample_id,
                product,
                measured_at,
                profiles[at : at + n].reshape(shape),
                operator,
            )
        )
        at += n
    return settings, book, info, readings, steer


def _apply(state: dict[str, Any], settings: Any, book: Any) -> None:
    """Take new interpreter settings and a new spec book (either None: unchanged)."""
    from gateway.pipeline import Interpreter

    if settings is not None:
        state["interpreter"] = Interpreter.from_settings(settings, state["holder"])
    if book is not None:
        state["holder"].set(book)


def _drafts(
    state: dict[str, Any], info: DeviceInfo, readings: list[GoldReading]
) -> list[tuple[int, list[tuple[str, int, BodyParts]]]]:
    """The drafts of `readings` in the child, encoded: (record no, [(line, priority, parts)]) per reading."""
    interpreter = state["interpreter"]
    if interpreter is None:
        raise OffloadError("no interpreter settings received")
    out = interpreter(info, readings)
    return [
        (
            r.record_no,
            [(d.line, d.priority, d.parts if d.parts is not None else body_parts(d.wire)) for d in r.drafts],
        )
        for r in out
    ]
