"""Rate-limited log of an MQTT connection's state changes (used by `gateway.link`).

Does: turn the stream of connect / connect-failure / disconnect events of one client into a readable log:
every change of state is logged (connected → INFO; disconnected, and the first failed attempt while the
broker is unreachable → WARNING with the reason), while the repeated failures of an unreachable broker are
summarised — at most one "still unreachable" WARNING per `repeat_s` with the number of attempts, the time
down and the last reason — so an offline station says what is wrong without flooding its log. A client that
flaps (connects and is thrown off again and again, e.g. two processes sharing a client id) is summarised the
same way: at most one connected/disconnected pair per `repeat_s`, the next one saying how many were not logged.

Does not: connect, retry or decide anything (paho reconnects; this only reports).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ConnectionLog:
    """Thread-safe; call `connected`, `failed` and `disconnected` from the client's callbacks."""

    def __init__(
        self,
        logger: logging.Logger,
        target: str,
        repeat_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._target = target
        self._repeat = repeat_s
        self._clock = clock
        self._lock = threading.Lock()
        self.up = False
        self.failures = 0  # failed attempts since the last successful connect
        self.failures_total = 0
        self._down_since: float | None = clock()
        self._last_failure_log: float | None = None
        self._last_flap_log: float | None = None
        self._flaps_unlogged = 0

    def connected(self, detail: str = "") -> None:
        with self._lock:
            now = self._clock()
            was = self.failures, (None if self._down_since is None else now - self._down_since)
            self.up, self.failures, self._down_since, self._last_failure_log = True, 0, None, None
            quiet = self._last_flap_log is not None and now - self._last_flap_log < self._repeat
            if quiet:
                self._flaps_unlogged += 1
                return
            self._last_flap_log = now
            flaps, self._flaps_unlogged = self._flaps_unlogged, 0
        failures, down_s = was
        extra = (
            f" after {failures} failed attempt(s), {down_s:.0f} s without a connection" if failures else ""
        )
        more = f"; {flaps} more reconnect(s) not logged (flapping)" if flaps else ""
        self._log.info("connected to %s%s%s%s", self._target, f" ({detail})" if detail else "", extra, more)

    def disconnected(self, reason: str) -> None:
        with self._lock:
            if not self.up:
                return
            now = self._clock()
            self.up, self._down_since = False, now
            quiet = self._last_flap_log is not None and now - self._last_flap_log < self._repeat
            if quiet and self._flaps_unlogged:
                return  # the connect of this flap was not logged either
        self._log.warning("disconnected from %s: %s; reconnecting", self._target, reason)

    def failed(self, reason: str) -> None:
        with self._lock:
            now = self._clock()
            self.up = False
            if self._down_since is None:
                self._down_since = now
            self.failures += 1
            self.failures_total += 1
            if self._last_failure_log is not None and now - self._last_failure_log < self._repeat:
                return
            first = self._last_failure_log is None
            self._last_failure_log = now
            failures, down_s = self.failures, now - self._down_since
        if first:
            self._log.warning("cannot reach %s: %s; retrying in the background", self._target, reason)
        else:
            self._log.warning(
                "still cannot reach %s: %d failed attempt(s), %.0f s without a connection; last: %s",
                self._target,
                failures,
                down_s,
                reason,
            )
