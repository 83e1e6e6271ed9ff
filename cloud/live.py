"""Live-event hub for the dashboard's Server-Sent Events feed.

HOW INGEST USES IT (cloud core engineer): nothing is required. The SSE endpoint tails the `results`
table by SQLite rowid, so every committed result reaches the dashboard within `poll_interval` seconds
even when ingest runs in another process (several ingest workers behind MQTT 5 shared subscriptions).
To cut that latency to ~0 when ingest runs inside the web process, call, after each committed batch:

    from cloud.live import hub_for
    hub_for(app).notify()          # thread-safe, never blocks, never raises

`hub_for(app)` lazily creates one `LiveHub` on `app.state.live_hub`. `LiveHub.close()` (e.g. in the
app's lifespan shutdown) wakes every subscriber so SSE streams end promptly.

Does: wake-up fan-out from any thread to asyncio subscribers (`notify`), shutdown signalling (`close`).
Does not: carry result data (the database is the single source of truth, so a missed wake-up can only
delay an event, never lose it), touch the database, or know about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any


class Subscription:
    """One subscriber's wake-up flag, bound to the event loop that created it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self.closed = False

    def _wake(self) -> None:
        self._event.set()

    def wake_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing left to wake
            self._loop.call_soon_threadsafe(self._wake)

    async def wait(self, timeout: float) -> bool:
        """Wait until notified or `timeout` s pass; True if notified. Clears the flag."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class LiveHub:
    """Thread-safe wake-up fan-out: `notify()` from any thread wakes every async subscriber."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def notify(self) -> None:
        """Wake all subscribers (new data is committed). Safe from any thread; never blocks."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.wake_threadsafe()

    def close(self) -> None:
        """Mark the hub closed and wake everyone so streams end; later subscribers end at once."""
        with self._lock:
            self._closed = True
            subs = list(self._subs)
            for sub in subs:  # every flag is set before anyone is woken
                sub.closed = True
        for sub in subs:
            sub.wake_threadsafe()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """Register a subscriber for the duration of the `async with` block."""
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            sub.closed = self._closed
            self._subs.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subs.discard(sub)


_CREATE_LOCK = threading.Lock()


def hub_for(app: Any) -> LiveHub:
    """The app's hub, created on first use and kept on `app.state.live_hub` (thread-safe)."""
    state = app.state
    with _CREATE_LOCK:
        hub = getattr(state, "live_hub", None)
        if not isinstance(hub, LiveHub):
            hub = LiveHub()
            state.live_hub = hub
    return hub
