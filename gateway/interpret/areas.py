"""Weighted least-squares line areas of the colloidal-gold core (step 6 of `lines`), for all lines at once.

Does: for each line's window of log2 R centred on the line (rows, P), the linear least-squares fit of
OD = a + b·x [+ B·s·∂g/∂s] + A·g, g a unit-area Gaussian of sd s at the line's sub-pixel offset, each
pixel weighted by its inverse noise variance under noise additive in reflectance ((R/R_baseline)²,
from the line's window signal S: 10^(−2·S·g)). Returns the area A, the width correction B/A, Var(A)
and χ²/dof per unit noise variance. No iteration: the normal equations come from element-wise
products and small matrix products over L2-sized chunks of rows and are solved by a Cholesky
factorisation written out over the rows.

Does not: locate lines, choose the template width or decide which estimate a strip uses (`lines`),
check its input, retry or log.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["fit_areas"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_FIT_BYTES: Final = 256 << 10  # one float32 temporary of a least-squares chunk
_LOG10_2: Final = math.log10(2.0)
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)


def fit_areas(
    win: F32, frac: F32, s: F64, signal: F64, half: int, *, width: bool
) -> tuple[F64, F64, F64, F64]:
    """`_fit` over chunks of rows whose temporaries stay in L2 cache (measured under load: one pass over
    a whole block of 20,000 lines took 2–3× the wall time)."""
    step = max(64, _FIT_BYTES // (win.shape[1] * 4))
    parts = [
        _fit(win[i : i + step], frac[i : i + step], s[i : i + step], signal[i : i + step], half, width=width)
        for i in range(0, win.shape[0], step)
    ]
    a, r, v, c = (np.concatenate([pt[k] for pt in parts]) for k in range(4))
    return a, r, v, c


def _fit(win: F32, frac: F32, s: F64, signal: F64, half: int, *, width: bool) -> tuple[F64, F64, F64, F64]:
    """Weighted least squares of OD = a + b·x [+ B·g·(z² − 1)] + A·g over each centred window (rows, P)
    of log2 R, g = N(x − frac; s) of unit area, z = (x − frac)/s, weights 10^(−2·max(S, 0)·g); the
    B term (`width`) is s·∂g/∂s, so s·(1 + B/A) is the width that fits best.
    Returns A (the area), B/A (0 without `width`), Var(A) and χ²/dof, both per unit noise variance (OD²).
    The normal equations are solved by a Cholesky factorisation written out over all rows at once
    (A is the last unknown, so A = z_A/L_AA and Var(A) = 1/L_AA²; Σw·r² = Σw·y² − |z|²)."""
    p = win.shape[1]
    x = np.arange(-half, half + 1, dtype=np.float32)
    basis = np.stack([np.ones_like(x), x / np.float32(half)], axis=1)  # (P, 2)
    basis3 = np.concatenate([basis, (basis[:, 1] ** 2)[:, None]], axis=1)
    inv_s = (1.0 / s).astype(np.float32)[:, None]
    z2 = (x[None, :] - frac[:, None]) * inv_s
    z2 *= z2
    np.minimum(z2, np.float32(50.0), out=z2)  # g ≥ e^−25/s: no float32 subnormals (slow) downstream
    g = np.exp(np.float32(-0.5) * z2)
    g *= inv_s * np.float32(1.0 / _SQRT_2PI)
    # weights (R / R_baseline)² = 10^(−2·S·g): OD noise variance ∝ 1/R² under additive reflectance noise
    w = np.exp(np.float32(-2.0 * math.log(10.0)) * np.maximum(signal, 0.0).astype(np.float32)[:, None] * g)
    wg = w * g
    wy = w * win  # log2 R: scaled to OD at the end
    dot = np.einsum
    s_w = (w @ basis3).astype(np.float64)
    s_g = (wg @ basis).astype(np.float64)
    s_y = (wy @ basis).astype(np.float64)
    n_gg = dot("ij,ij->i", wg, g).astype(np.float64)
    r_g = dot("ij,ij->i", wy, g).astype(np.float64)
    ssq = dot("ij,ij->i", wy, win).astype(np.float64)
    tiny = 1e-30
    # Cholesky of the normal matrix over (1, x, [g·(z² − 1)], g)
    l00 = np.sqrt(s_w[:, 0])
    l10 = s_w[:, 1] / l00
    l11 = np.sqrt(np.maximum(s_w[:, 2] - l10 * l10, tiny))
    z0 = s_y[:, 0] / l00
    z1 = (s_y[:, 1] - l10 * z0) / l11
    la0 = s_g[:, 0] / l00
    la1 = (s_g[:, 1] - la0 * l10) / l11
    if width:
        z2 -= np.float32(1.0)
        gs = z2
        gs *= g
        wgs = w * gs
        s_gs = (wgs @ basis).astype(np.float64)
        l20 = s_gs[:, 0] / l00
        l21 = (s_gs[:, 1] - l20 * l10) / l11
        l22 = np.sqrt(np.maximum(dot("ij,ij->i", wgs, gs).astype(np.float64) - l20 * l20 - l21 * l21, tiny))
        la2 = (dot("ij,ij->i", wg, gs).astype(np.float64) - la0 * l20 - la1 * l21) / l22
        zb = (dot("ij,ij->i", wy, gs).astype(np.float64) - l20 * z0 - l21 * z1) / l22
    else:
        la2 = zb = np.zeros_like(l00)
        l22 = np.ones_like(l00)
    laa = np.sqrt(np.maximum(n_gg - la0 * la0 - la1 * la1 - la2 * la2, tiny))
    za = (r_g - la0 * z0 - la1 * z1 - la2 * zb) / laa
    a_log2 = za / laa
    with np.errstate(divide="ignore", invalid="ignore"):
        rel: F64 = (zb - la2 * a_log2) / l22 / a_log2  # B/A (the scale of log2 cancels)
    area: F64 = a_log2 * -_LOG10_2
    var: F64 = 1.0 / (laa * laa)
    resid = np.maximum(ssq - (z0 * z0 + z1 * z1 + zb * zb + za * za), 0.0)
    chi2: F64 = resid * (_LOG10_2 * _LOG10_2) / (p - (4 if width else 3))
    return area, rel, var, chi2
