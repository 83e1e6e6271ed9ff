"""The port lifecycle the serial sessions share (gold-serial, astm-gold).

Does: `PortSession`, the base of a session that owns one `drivers.transport.Transport`: `open` (opens the
port if it is not), `close` (closes it, and a request waiting to reopen it gives up with `TransportError`
at once), `_reopen` — inside an attempt, under the lock, reopen a port an earlier attempt lost (raising
`Again(wait=True)` while it cannot be opened) — and `_retrying`, the shared policy of `drivers.backoff` run
with this session's lock, cancel event and counters. The receive buffer is cleared whenever the port opens
or closes.

Does not: speak a protocol, decide which failures are worth another attempt (each session raises `Again`),
or count protocol events (each session's own stats).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from drivers.backoff import Again, RetryStats, retrying
from drivers.errors import TransportError
from drivers.timeouts import Timeouts
from drivers.transport import Transport

T = TypeVar("T")


class PortSession:
    """One port, one lock (reentrant: open() then identify()), one retry policy."""

    def __init__(self, transport: Transport, timeouts: Timeouts) -> None:
        self.transport = transport
        self.timeouts = timeouts
        self.lock = threading.RLock()
        self.retry = RetryStats()
        self._closed = threading.Event()  # set by close(): no reopening, a backoff wait ends
        self._buf = bytearray()

    def open(self) -> None:
        self._closed.clear()
        with self.lock:
            if not self.transport.is_open:
                self._buf.clear()
                self.transport.open()

    def close(self) -> None:
        """Close the port; a request waiting to reopen it gives up with `TransportError` at once."""
        self._closed.set()
        with self.lock:
            self.transport.close()
            self._buf.clear()

    def _reopen(self) -> bool:
        """Reopen the same path if an earlier attempt lost the port; True if it did. TransportError once the
        session is closed; `Again(wait=True)` while the port cannot be opened."""
        if self.transport.is_open:
            return False
        if self._closed.is_set():
            raise TransportError(f"{self.transport.name} is not open")
        try:
            self._buf.clear()
            self.transport.open()
        except TransportError as exc:
            raise Again(exc, wait=True) from exc
        return True

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """`attempt` under `drivers.backoff.retrying` with this session's lock, cancel event and counters."""
        return retrying(self.lock, attempt, self.timeouts, cancel=self._closed, stats=self.retry)
