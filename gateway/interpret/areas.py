"""Weighted least-squares line areas of the colloidal-gold core (step 6 of `lines`), for all lines at once.

Does:
- `band`: the line template of gold/2.2, a unit-area band at sub-pixel centre d: (1 − η)·split Gaussian
  (sd s_l left of the centre, s_r right of it) + η·Lorentzian of the FWHM of the narrower side, and its
  derivatives by d, s_l, s_r and η.
- `fit_shape`: the band's shape on each control line — two Gauss–Newton steps of the weighted fit
  OD = a + b·x + A·band(x; d, s_l, s_r, η), each one linear least-squares solve with the four
  derivative columns (7 unknowns), steps bounded.
- `fit_areas`: for each line's window, the linear least-squares fit of OD = a + b·x + A·band(x) with a
  given shape and centre; returns the area A, Var(A) and χ²/dof per unit noise variance.
Every pixel is weighted by its inverse noise variance under noise additive in reflectance
((R/R_baseline)² = 10^(−2·S·band) from the line's window signal S). No per-row loop: the normal
equations come from element-wise products and small matrix products over L2-sized chunks of rows and
are solved by a Cholesky factorisation written out over the rows.

Does not: locate lines, pick the starting width or decide which estimate a strip uses (`lines`),
check its input, retry or log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["SHAPE_STEPS", "Shape", "band", "fit_areas", "fit_shape", "fit_width"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SHAPE_STEPS: Final = 2
"""Gauss–Newton steps of the control's shape fit (measured: a third changes the p95 by < 2 %)."""
MAX_SHIFT_STEP: Final = 1.0
"""Largest change of the band centre per step, px."""
MAX_SHIFT: Final = 3.0
"""Largest distance of the fitted centre from the centre of its window, px."""
MAX_WIDTH_STEP: Final = 0.3
"""Largest relative change of a side's sd per step."""
_FIT_BYTES: Final = 256 << 10  # one float32 temporary of a least-squares chunk
_LOG10_2: Final = math.log10(2.0)
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)
_FWHM_K: Final = math.sqrt(2.0 * math.log(2.0))  # Lorentzian half width / Gaussian sd at equal FWHM
_TINY: Final = 1e-30


@dataclass(frozen=True, slots=True)
class Shape:
    """Band shape per row: centre offset from the window centre (px), side sds (px), Lorentz fraction."""

    d: F64
    left: F64
    right: F64
    eta: F64


def band(u: F32, left: F32, right: F32, eta: F32, *, deriv: bool) -> tuple[F32, list[F32]]:
    """Unit-area band at displacements u (rows, P) from its centre; left/right/eta (rows, 1).
    Returns the band and, with `deriv`, its derivatives by the centre, left sd, right sd and η."""
    inv_l, inv_r = np.float32(1.0) / left, np.float32(1.0) / right
    symmetric = not deriv and bool((left == right).all())
    on_left = np.zeros((1, 1), dtype=bool) if symmetric else u < 0
    inv_sd = inv_l if symmetric else np.where(on_left, inv_l, inv_r)
    z2 = u * inv_sd
    z2 *= z2
    np.minimum(z2, np.float32(50.0), out=z2)  # ≥ e^−25: no float32 subnormals (slow) downstream
    inv_total = np.float32(1.0) / (left + right)
    one_eta = np.float32(1.0) - eta
    gam = np.float32(_FWHM_K) * np.minimum(left, right)
    # sg = split Gaussian, lor = Lorentzian (unit areas); a = (1 − η)·sg, b = η·lor; the band is a + b
    sg = np.exp(np.float32(-0.5) * z2)
    sg *= inv_total * np.float32(2.0 / _SQRT_2PI)
    if not deriv and not eta.any():
        return sg, []  # every row Gaussian (the common case): no Lorentzian part to evaluate
    q = u * u
    q += gam * gam
    inv_q = np.float32(1.0) / q
    lor = inv_q * (gam * np.float32(1.0 / math.pi))
    a = sg * one_eta
    b = lor * eta
    v = a + b
    if not deriv:
        return v, []
    d_d = a * inv_sd
    d_d *= inv_sd
    d_d += np.float32(2.0) * b * inv_q
    d_d *= u
    az2 = a * z2
    side_l = np.where(on_left, az2 * inv_l, np.float32(0.0))
    side_r = az2 * inv_sd
    side_r -= side_l
    # ∂b/∂γ · ∂γ/∂s of the narrower side
    dg = b * (np.float32(1.0) / gam) - np.float32(2.0) * gam * b * inv_q
    dg *= np.float32(_FWHM_K)
    narrow_l = (left <= right).astype(np.float32)
    common = a * -inv_total
    d_left = common + side_l
    d_left += dg * narrow_l
    d_right = common
    d_right += side_r
    d_right += dg * (np.float32(1.0) - narrow_l)
    d_eta = lor - sg
    return v, [d_d, d_left, d_right, d_eta]


def _chunks(rows: int, p: int) -> range:
    return range(0, rows, max(64, _FIT_BYTES // (p * 4)))


def fit_width(win: F32, frac: F32, s: F64, signal: F64, half: int) -> tuple[F64, F64]:
    """Width correction B/A and χ²/dof (per unit noise variance) of the weighted fit
    OD = a + b·x + B·g·(z² − 1) + A·g to each window (rows, P) of log2 R, g = N(x − frac; s) of unit
    area, z = (x − frac)/s: s·(1 + B/A) is the Gaussian width that fits best, and χ² says whether a
    Gaussian fits at all. Over L2-sized chunks of rows."""
    step = _chunks(win.shape[0], win.shape[1]).step
    parts = [
        _width(win[i : i + step], frac[i : i + step], s[i : i + step], signal[i : i + step], half)
        for i in range(0, win.shape[0], step)
    ]
    return np.concatenate([pt[0] for pt in parts]), np.concatenate([pt[1] for pt in parts])


def _width(win: F32, frac: F32, s: F64, signal: F64, half: int) -> tuple[F64, F64]:
    x = np.arange(-half, half + 1, dtype=np.float32)
    basis = _basis(x, half)
    inv_s = (1.0 / s).astype(np.float32)[:, None]
    z2 = (x[None, :] - frac[:, None]) * inv_s
    z2 *= z2
    np.minimum(z2, np.float32(50.0), out=z2)  # g ≥ e^−25/s: no float32 subnormals (slow) downstream
    g = np.exp(np.float32(-0.5) * z2)
    g *= inv_s * np.float32(1.0 / _SQRT_2PI)
    w = _weights(np.maximum(signal, 0.0).astype(np.float32)[:, None], g)
    z2 -= np.float32(1.0)
    gs = z2
    gs *= g
    normal, rhs, ssq = _normal([gs, g], w, win, basis)
    chol, z = _cholesky(normal, rhs)
    amp = z[3] / chol[3][3]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel: F64 = (z[2] - chol[3][2] * amp) / chol[2][2] / amp  # B/A (the scale of log2 cancels)
    resid = np.maximum(ssq - (z[0] * z[0] + z[1] * z[1] + z[2] * z[2] + z[3] * z[3]), 0.0)
    chi2: F64 = resid * (_LOG10_2 * _LOG10_2) / (win.shape[1] - 4)
    return rel, chi2


def fit_shape(win: F32, frac: F32, s0: F64, signal: F64, half: int, lo: float, hi: float) -> Shape:
    """The band shape of each control window (rows, P) of log2 R centred on its line: start at the
    located centre `frac`, s_l = s_r = s0, η = 0, then SHAPE_STEPS Gauss–Newton steps (centre steps
    ≤ MAX_SHIFT_STEP px, sd steps ≤ MAX_WIDTH_STEP, sds within [lo, hi], η within [0, 1])."""
    step = _chunks(win.shape[0], win.shape[1]).step
    parts = [
        _shape(win[i : i + step], frac[i : i + step], s0[i : i + step], signal[i : i + step], half, lo, hi)
        for i in range(0, win.shape[0], step)
    ]
    return Shape(*(np.concatenate([getattr(pt, k) for pt in parts]) for k in ("d", "left", "right", "eta")))


def _shape(win: F32, frac: F32, s0: F64, signal: F64, half: int, lo: float, hi: float) -> Shape:
    x = np.arange(-half, half + 1, dtype=np.float32)
    basis = _basis(x, half)
    d = frac.astype(np.float64)
    left = s0.astype(np.float64)
    right = left.copy()
    eta = np.zeros_like(left)
    strength = np.maximum(signal, 0.0).astype(np.float32)[:, None]
    for _ in range(SHAPE_STEPS):
        u = x[None, :] - d.astype(np.float32)[:, None]
        v, der = band(u, _col(left), _col(right), _col(eta), deriv=True)
        w = _weights(strength, v)
        coef = _solve_all(*_normal([v, *der], w, win, basis))
        amp = coef[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            dd, dl, dr, de = (np.nan_to_num(c / amp, nan=0.0, posinf=0.0, neginf=0.0) for c in coef[3:])
        d = np.clip(d + np.clip(dd, -MAX_SHIFT_STEP, MAX_SHIFT_STEP), -MAX_SHIFT, MAX_SHIFT)
        left = np.clip(left + np.clip(dl, -MAX_WIDTH_STEP * left, MAX_WIDTH_STEP * left), lo, hi)
        right = np.clip(right + np.clip(dr, -MAX_WIDTH_STEP * right, MAX_WIDTH_STEP * right), lo, hi)
        eta = np.clip(eta + de, 0.0, 1.0)
    return Shape(d=d, left=left, right=right, eta=eta)


def fit_areas(win: F32, shape: Shape, signal: F64, half: int) -> tuple[F64, F64, F64]:
    """Area A, Var(A) and χ²/dof (both per unit noise variance, OD²) of OD = a + b·x + A·band(x) over
    each centred window (rows, P) of log2 R, `shape` per row; over chunks of rows whose temporaries stay
    in L2 cache (measured under load: one pass over a whole block of 20,000 lines took 2–3× the wall
    time)."""
    step = _chunks(win.shape[0], win.shape[1]).step
    parts = []
    for i in range(0, win.shape[0], step):
        sl = slice(i, i + step)
        sub = Shape(shape.d[sl], shape.left[sl], shape.right[sl], shape.eta[sl])
        parts.append(_areas(win[sl], sub, signal[sl], half))
    a, v, c = (np.concatenate([pt[k] for pt in parts]) for k in range(3))
    return a, v, c


def _areas(win: F32, shape: Shape, signal: F64, half: int) -> tuple[F64, F64, F64]:
    """A is the last unknown of (1, x, band): A = z_A/L_AA, Var(A) = 1/L_AA², Σw·r² = Σw·y² − |z|²."""
    p = win.shape[1]
    x = np.arange(-half, half + 1, dtype=np.float32)
    basis = _basis(x, half)
    u = x[None, :] - shape.d.astype(np.float32)[:, None]
    v, _ = band(u, _col(shape.left), _col(shape.right), _col(shape.eta), deriv=False)
    w = _weights(np.maximum(signal, 0.0).astype(np.float32)[:, None], v)
    normal, rhs, ssq = _normal([v], w, win, basis)
    chol, z = _cholesky(normal, rhs)
    laa = chol[2][2]
    a_log2 = z[2] / laa
    area: F64 = a_log2 * -_LOG10_2
    var: F64 = 1.0 / (laa * laa)
    resid = np.maximum(ssq - (z[0] * z[0] + z[1] * z[1] + z[2] * z[2]), 0.0)
    chi2: F64 = resid * (_LOG10_2 * _LOG10_2) / (p - 3)
    return area, var, chi2


def _col(a: F64) -> F32:
    out: F32 = a.astype(np.float32)[:, None]
    return out


def _basis(x: F32, half: int) -> F32:
    """(P, 3): 1, x/half, (x/half)² — the baseline columns and the second moment of x."""
    xs = x / np.float32(half)
    out: F32 = np.stack([np.ones_like(x), xs, xs * xs], axis=1)
    return out


def _weights(strength: F32, v: F32) -> F32:
    """(R / R_baseline)² = 10^(−2·S·band): OD noise variance ∝ 1/R² under additive reflectance noise."""
    w: F32 = np.exp(np.float32(-2.0 * math.log(10.0)) * strength * v)
    return w


def _normal(cols: list[F32], w: F32, y: F32, basis: F32) -> tuple[list[list[F64]], list[F64], F64]:
    """Normal equations over the unknowns (1, x/half, *cols) of the weighted fit to y (log2 R): the
    lower triangle N[i][j] (j ≤ i), the right-hand side and Σw·y², each (rows,) float64."""
    dot = np.einsum
    s_w = (w @ basis).astype(np.float64)
    wy = w * y
    s_y = (wy @ basis[:, :2]).astype(np.float64)
    n: list[list[F64]] = [[s_w[:, 0]], [s_w[:, 1], s_w[:, 2]]]
    rhs: list[F64] = [s_y[:, 0], s_y[:, 1]]
    weighted: list[F32] = []
    for c in cols:
        wc = w * c
        s_c = (wc @ basis[:, :2]).astype(np.float64)
        row = [s_c[:, 0], s_c[:, 1]]
        row += [dot("ij,ij->i", prev, c).astype(np.float64) for prev in weighted]
        row.append(dot("ij,ij->i", wc, c).astype(np.float64))
        n.append(row)
        rhs.append(dot("ij,ij->i", wy, c).astype(np.float64))
        weighted.append(wc)
    ssq = dot("ij,ij->i", wy, y).astype(np.float64)
    return n, rhs, ssq


def _cholesky(n: list[list[F64]], rhs: list[F64]) -> tuple[list[list[F64]], list[F64]]:
    """Lower Cholesky factor L of N (over rows) and z = L⁻¹·rhs."""
    p = len(n)
    chol: list[list[F64]] = []
    for i in range(p):
        row: list[F64] = []
        for j in range(i + 1):
            other = row if j == i else chol[j]
            acc = n[i][j].copy()
            for k in range(j):
                acc -= row[k] * other[k]
            row.append(np.sqrt(np.maximum(acc, _TINY)) if i == j else acc / chol[j][j])
        chol.append(row)
    z: list[F64] = []
    for i in range(p):
        acc = rhs[i].copy()
        for k in range(i):
            acc -= chol[i][k] * z[k]
        z.append(acc / chol[i][i])
    return chol, z


def _solve_all(n: list[list[F64]], rhs: list[F64], _ssq: F64) -> list[F64]:
    """Every unknown of N·c = rhs (over rows), by the Cholesky factor and back-substitution."""
    chol, z = _cholesky(n, rhs)
    p = len(n)
    c: list[F64] = [np.zeros_like(z[0])] * p
    for i in reversed(range(p)):
        acc = z[i].copy()
        for k in range(i + 1, p):
            acc -= chol[k][i] * c[k]
        c[i] = acc / chol[i][i]
    return c
