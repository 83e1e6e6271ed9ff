"""Injectable clocks: the service reads time only through a `Clock`, so tests control it.

Does: `Clock` protocol, `SystemClock` (UTC wall clock), `ManualClock` (set/advance by tests), and `utc_iso`: the
one form every stored timestamp has (ISO-8601 in UTC, so stored times and filters compare as strings).
Does not: scheduling or sleeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("timezone-aware datetimes only")
        with self._lock:
            self._now = when

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def utc_iso(when: datetime) -> str:
    """`when` (timezone-aware, any offset) as an ISO-8601 UTC string; a time with no UTC form within the
    years 1–9999 (e.g. 0001-01-01T00:00+08:00) is kept as given."""
    if when.tzinfo is None:
        raise ValueError("timezone-aware datetimes only")
    try:
        return when.astimezone(UTC).isoformat()
    except OverflowError:
        return when.isoformat()
