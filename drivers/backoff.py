"""The one retry/reconnect policy of the driver layer: attempts, exponential backoff, and where it waits.

Does: `Backoff` — delays from `Timeouts` (reconnect_initial_s, doubling, capped at reconnect_max_s),
used by every session and by the gateway worker; `retrying(lock, attempt, timeouts, …)` — the one
retry loop every session runs. An attempt runs with the session lock held and either returns, raises
a `DriverError` (final), or raises `Again(error, wait=…)`:

- ``wait=False`` (a lost or corrupt reply, a torn multi-request read): the next attempt follows at once,
  still under the lock, so a protocol exchange (sequence numbers, NAKs) is not interleaved with
  another thread's;
- ``wait=True`` (the link is down, the device is busy): the lock is RELEASED, the loop waits the next
  backoff delay on an `threading.Event` (set by the session's `close()`, which ends the wait at once),
  then takes the lock again for the next attempt (which reconnects).

Attempts per call = `timeouts.retries + 1`, whatever the failures were; the last one's error is raised.

Does not: know any protocol, open links or classify errors (each session decides what is `Again`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TypeVar

from drivers.errors import DriverError, TransportError
from drivers.timeouts import Timeouts

T = TypeVar("T")


@dataclass(slots=True)
class Backoff:
    """Exponential backoff: `initial_s`, then ×2 per delay, never above `max_s`; `reset()` starts over."""

    initial_s: float
    max_s: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self._next = self.initial_s

    @classmethod
    def of(cls, timeouts: Timeouts) -> Backoff:
        return cls(timeouts.reconnect_initial_s, timeouts.reconnect_max_s)

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class Again(Exception):
    """Raised by an attempt: retry, after a backoff wait with the lock released when `wait` is True."""

    def __init__(self, error: DriverError, *, wait: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


@dataclass(slots=True)
class RetryStats:
    """What `retrying` did, summed over a session's life (diagnostics and tests)."""

    attempts: int = 0
    retries: int = 0
    waits: int = 0
    waited_s: float = 0.0


def retrying(
    lock: AbstractContextManager[object],
    attempt: Callable[[], T],
    timeouts: Timeouts,
    *,
    cancel: threading.Event,
    stats: RetryStats,
    on_wait: Callable[[float], None] = lambda _d: None,
) -> T:
    """Run `attempt` under `lock` until it returns, raises a final error or the attempts are spent.

    `cancel` set (the session was closed) ends a backoff wait with `TransportError`. `on_wait(delay)`
    is called, without the lock, just before each wait.
    """
    budget = timeouts.retries + 1
    backoff = Backoff.of(timeouts)
    used = 0
    while True:
        with lock:
            while True:
                used += 1
                stats.attempts += 1
                try:
                    return attempt()
                except Again as again:
                    if used >= budget:
                        raise again.error from again.error.__cause__
                    stats.retries += 1
                    if again.wait:
                        break
        # the lock is released here: other callers (status, close) go on while this one waits
        delay = backoff.next_delay()
        stats.waits += 1
        stats.waited_s += delay
        on_wait(delay)
        if cancel.wait(delay):
            raise TransportError("the session was closed while waiting to retry")
