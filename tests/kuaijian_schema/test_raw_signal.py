"""RawSignal.curve: the plot points the cloud shows in a case (decoded with bounds, never trusted)."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest

from kuaijian_schema import RawSignal


def _raw(arr: np.ndarray, dtype: str = "<f4", shape: tuple[int, ...] | None = None) -> RawSignal:
    data = np.ascontiguousarray(arr, dtype=dtype)
    return RawSignal(
        dtype=dtype,  # type: ignore[arg-type]
        shape=shape or data.shape,
        data=base64.b64encode(zlib.compress(data.tobytes())).decode(),
    )


def test_curve_is_the_first_row_binned_to_max_points() -> None:
    profile = np.linspace(0.0, 1.0, 1000)
    points = _raw(profile).curve(max_points=100)
    assert len(points) == 100
    assert points[0] == pytest.approx(profile[:10].mean(), abs=1e-6)
    assert points[-1] == pytest.approx(profile[-10:].mean(), abs=1e-6)
    image = np.vstack([np.full(50, 2.0), np.full(50, 9.0)])
    assert _raw(image, "<u2").curve() == [2.0] * 50  # (H, W): the first row


def test_bad_raw_signals_are_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        _raw(np.zeros(10), shape=(11,)).curve()  # fewer bytes than the shape declares
    with pytest.raises(ValueError, match="too large"):
        _raw(np.zeros(10), shape=(1 << 21,)).curve()
    bomb = RawSignal(
        dtype="<f4", shape=(4,), data=base64.b64encode(zlib.compress(b"\0" * 10_000_000)).decode()
    )
    with pytest.raises(ValueError, match="needs 16"):
        bomb.curve()  # inflated no further than the declared size (+1 byte)
    with pytest.raises(ValueError, match="does not decode"):
        RawSignal(dtype="<f4", shape=(4,), data="not base64!").curve()
