"""The one check that a gold reading is exactly the simulated reader's record (its ground truth)."""

from __future__ import annotations

import numpy as np

from drivers.readings import GoldReading
from firmware_sim.record_store import SimRecord


def assert_matches(reading: GoldReading, truth: SimRecord) -> None:
    """`reading` carries `truth`'s number, metadata and time, and its profile bit for bit."""
    assert reading.record_no == truth.record_no
    assert (reading.channel, reading.kit, reading.sample_id, reading.product, reading.operator) == (
        truth.channel,
        truth.kit,
        truth.sample_id,
        truth.product,
        truth.operator,
    )
    assert reading.measured_at.tzinfo is not None
    assert reading.measured_at == truth.measured_at  # aware datetimes: the same instant
    assert reading.profile.dtype == np.float64
    assert reading.profile.shape == truth.profile.shape
    assert np.array_equal(reading.profile, truth.profile), "profile differs from the simulator's truth"
