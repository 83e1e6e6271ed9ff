"""Foreground run loop shared by the `kuaijian sim …` verbs: run until Ctrl-C / SIGTERM or a duration."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while inside the block; the previous handlers are restored after.

    Off the main thread (tests calling the verb in a thread) no handlers are installed: set the event or
    use a duration instead.
    """
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield done
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def wait_until(done: threading.Event, duration_s: float) -> None:
    """Block until `done` is set, or `duration_s` seconds passed when it is > 0."""
    deadline = time.monotonic() + duration_s if duration_s > 0 else float("inf")
    while not done.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return
