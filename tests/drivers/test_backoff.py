"""The one retry/backoff policy: its delays, and that both sessions wait with their lock released."""

from __future__ import annotations

import threading

import pytest

from drivers.backoff import Backoff
from drivers.errors import DriverError, TransportError
from drivers.gold_serial import GoldSerialAnalyzer
from drivers.modbus_session import ModbusSession
from drivers.timeouts import Timeouts
from firmware_sim.gold_serial import GoldSimulator
from tests.helpers import free_port, wait_for

# A backoff far longer than any test: a call that is waiting stays waiting until close() ends it.
LONG_WAIT = Timeouts(response_s=0.3, retries=3, reconnect_initial_s=60.0, reconnect_max_s=60.0)


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff.of(Timeouts(reconnect_initial_s=0.5, reconnect_max_s=3.0))
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next_delay() == 0.5
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(2.0, 1.0)


def _call_in_thread(call: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()  # type: ignore[operator]
        except DriverError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _lock_is_free(lock: threading.RLock) -> bool:
    """Whether ANOTHER thread can take `lock` (an RLock is always free for its owner)."""
    got: list[bool] = []

    def take() -> None:
        ok = lock.acquire(timeout=5)
        got.append(ok)
        if ok:
            lock.release()

    t = threading.Thread(target=take)
    t.start()
    t.join(10)
    return got == [True]


def test_modbus_reconnect_does_not_hold_the_session_lock_while_waiting() -> None:
    """Nothing listens on the port: the session waits to reconnect — with its lock free — and close()
    ends the wait at once instead of after the backoff."""
    session = ModbusSession(host="127.0.0.1", port=free_port(), timeouts=LONG_WAIT)
    thread, errors = _call_in_thread(lambda: session.read(0, 1))
    try:
        wait_for(lambda: session.stats.waits == 1, 10, "the session never started a reconnect wait")
        assert _lock_is_free(session.lock), "the session lock is held during the reconnect wait"
        assert session.stats.attempts == 1  # still waiting: no second attempt yet
    finally:
        session.close()
        thread.join(10)
    assert not thread.is_alive(), "close() did not end the reconnect wait"
    assert len(errors) == 1
    assert isinstance(errors[0], TransportError)
    assert "closed" in str(errors[0])


def test_gold_reopen_does_not_hold_the_session_lock_while_waiting() -> None:
    sim = GoldSimulator(serial="GR-0007", seed=1)
    sim.measure("imidacloprid-v1", 1, "S-1", "韭菜", 0.0)
    sim.start()
    reader = GoldSerialAnalyzer(sim.link_path, timeouts=LONG_WAIT)
    try:
        reader.open()
        sim.unplug()
        thread, errors = _call_in_thread(reader.latest_record)
        try:
            wait_for(lambda: reader.session.retry.waits == 1, 10, "the session never waited to reopen")
            assert _lock_is_free(reader.session.lock), "the session lock is held during the wait"
        finally:
            reader.close()
            thread.join(10)
        assert not thread.is_alive(), "close() did not end the wait"
        assert len(errors) == 1
        assert isinstance(errors[0], TransportError)
    finally:
        reader.close()
        sim.stop()
