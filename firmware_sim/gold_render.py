"""Rendering of the colloidal-gold signal model: optical density and background of drawn strips.

Does: per strip (rows of a `Render`), the background reflectance (level, linear drift, low-frequency
ripple), each line's unit-area band (split Gaussian mixed with a Lorentzian), the OD of all lines of a
profile or of every row of an image (with the image's "smile"), and the OD of dust specks.

Does not: draw random parameters (`gold_truth`), add noise or clip (`signal_model`, which owns the
random stream of the pixels).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from firmware_sim.gold_truth import Render

__all__ = ["background", "band_od", "speck_od", "unit_band"]

F64 = npt.NDArray[np.float64]
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)


def background(r: Render, rows: slice, x: F64) -> F64:
    length = x.shape[-1]
    lvl = r.level[rows, None]
    drift = 1.0 + r.drift[rows, None] * (x / length - 0.5)
    rip = 1.0 + r.ripple[rows, None] * np.sin(2 * math.pi * x / r.period[rows, None] + r.phase[rows, None])
    out: F64 = lvl * drift * rip
    return out


def unit_band(d: F64, sig: F64, eta: F64, tail: F64) -> F64:
    """Unit-area band at displacement d (px): (1 − η)·split Gaussian (sd σ before the centre,
    σ·(1 + t) after it) + η·Lorentzian of the same FWHM as the Gaussian."""
    far = sig * (1.0 + tail)
    side = np.where(d > 0, far, sig)
    g = 2.0 / (_SQRT_2PI * (sig + far)) * np.exp(-0.5 * (d / side) ** 2)
    gamma = sig * math.sqrt(2.0 * math.log(2.0))
    out: F64 = (1.0 - eta) * g + eta * gamma / (math.pi * (d * d + gamma * gamma))
    return out


def band_od(r: Render, rows: slice, x: F64, smile: F64 | None = None) -> F64:
    """OD of rows `rows`; `smile` (m, H) adds a per-image-row displacement → (m, H, L).

    Each band is evaluated only over the columns within 7 sd of where it can be in these rows (the whole
    profile when some band has Lorentzian tails).
    """
    sig = r.sigma[rows]
    eta = r.eta[rows]
    tail = r.tail[rows]
    m = sig.shape[0]
    length = x.shape[0]
    reach = float(length) if eta.max() > 0 else 7.0 * float((sig * (1.0 + tail)).max())
    bend = 0.0 if smile is None else float(np.abs(smile).max())
    od = np.zeros((m, length) if smile is None else (m, smile.shape[1], length))
    area = r.amplitude[rows] * (sig[:, None] * _SQRT_2PI)  # (m, J)
    for j in range(r.centres.shape[1]):
        cj = r.centres[rows, j]
        lo = max(0, math.floor(cj.min() - bend - reach))
        hi = min(length, math.ceil(cj.max() + bend + reach) + 1)
        if lo >= hi:
            continue
        xs = x[lo:hi]
        if smile is None:
            d = xs[None, :] - cj[:, None]
            od[:, lo:hi] += area[:, j, None] * unit_band(d, sig[:, None], eta[:, None], tail[:, None])
        else:
            d = xs[None, None, :] - (cj[:, None, None] + smile[:, :, None])
            od[:, :, lo:hi] += area[:, j, None, None] * unit_band(
                d, sig[:, None, None], eta[:, None, None], tail[:, None, None]
            )
    return od


def speck_od(r: Render, rows: slice, x: F64) -> F64:
    """OD (m, L) of the dust specks of rows `rows` (zero without one)."""
    pos = r.speck_position[rows, None]
    has = ~np.isnan(pos)
    sd = r.speck_sigma[rows, None]
    z = (x[None, :] - np.where(has, pos, 0.0)) / sd
    out: F64 = np.where(has, r.speck_od[rows, None] / (sd * _SQRT_2PI) * np.exp(-0.5 * z * z), 0.0)
    return out
