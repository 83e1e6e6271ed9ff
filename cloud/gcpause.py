"""Python's cyclic garbage collector paused while ingest batches run (`cloud.ingest.process_batch`).

A batch holds its decoded messages, validated models and rows until it ends. They outlive the collector's
young generation, so the older generations traverse them again and again — about 21 µs per result with one
result per message, in batches of 500 (timed with `gc.callbacks`: 733 collections per 20,000 results) —
although reference counting frees nearly all of them the moment the batch returns. Paused for the batch, the
collector runs once as it ends (the allocations are counted meanwhile), over a young generation the batch's
objects have left.

Does: count the batches running in this process (any thread), turn the collector off while at least one runs,
and back on when the last one ends — unless it was off before the first began (then it stays off).
Does not: collect, change thresholds, or pause anything but the cyclic collector (reference counting, which
frees almost everything, never pauses).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_running = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off for the duration (see the module docstring); nests and is thread-safe."""
    global _running, _was_enabled
    with _lock:
        if _running == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _was_enabled:
                gc.enable()
