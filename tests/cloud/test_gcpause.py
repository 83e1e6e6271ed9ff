"""The cyclic garbage collector is paused while an ingest batch runs (cloud.gcpause): no collection during a
batch of one-result messages but the one as it returns, the collector back on afterwards — also after a
failure, across nested and concurrent batches — and left off when it was off before."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from cloud import gcpause
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid

STATIONS = ("370214101203-01", "370214101203-02", "370214101204-01", "370214102001-01")


@contextmanager
def _collections() -> Iterator[list[int]]:
    """The generations the cyclic collector collected meanwhile."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(int(info["generation"]))

    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)


def test_a_batch_runs_without_a_collection_and_the_collector_is_on_after(
    db: Database, grid: Grid, settings: Settings
) -> None:
    messages = []
    for n in range(400):
        station = STATIONS[n % 4]
        doc = grid.result(station)
        messages.append(
            Inbound(
                f"kj/v1/{station}/result", json.dumps(doc).encode(), T0 + timedelta(seconds=n), mid=1, qos=1
            )
        )
    assert gc.isenabled()
    with _collections() as seen:
        out = process_batch(db, messages, settings)
    assert out.stored == 400
    # at most the one the allocations counted meanwhile start as the batch returns (13, of generations 0 and 1,
    # without the pause)
    assert len(seen) <= 1, f"{len(seen)} collections during one batch (generations {sorted(set(seen))})"
    assert gc.isenabled()


def test_the_collector_comes_back_after_a_failure_and_after_the_last_of_nested_batches() -> None:
    def failing_batch() -> None:
        with gcpause.paused():
            assert not gc.isenabled()
            raise RuntimeError("a batch failed")

    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="a batch failed"):
        failing_batch()
    assert gc.isenabled()
    with gcpause.paused():
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch still runs
    assert gc.isenabled()


def test_concurrent_batches_keep_it_off_until_the_last_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    states: list[bool] = []

    def first() -> None:
        with gcpause.paused():
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=first)
    with gcpause.paused():
        thread.start()
        assert first_in.wait(10), "the other batch never started"
        second_in.set()
        assert first_out.wait(10), "the other batch never ended"
        states.append(gc.isenabled())  # the other batch ended first: still off for this one
    thread.join(10)
    assert not thread.is_alive()
    assert states == [False]
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
