"""Enzyme-inhibition (AChE, 412 nm) interpretation, vectorized over runs and channels.

Algorithm (GB/T 5009.199-2003 / NY/T 448 style):
1. The detection window is the samples with window_start_s ≤ t ≤ window_end_s (≥ 3 required).
2. Least-squares slope of every (run, channel) over the window as one matrix-vector product with the
   weights (t − t̄) / Σ(t − t̄)²; ΔA = slope × (window_end_s − window_start_s).
3. inhibition % = (ΔA_control − ΔA_sample) / ΔA_control × 100, clamped to [0, 100].
4. Validity: ΔA_control < min_control_delta → CONTROL_WEAK; ΔA_control < −fall_tolerance →
   CONTROL_FALLING (either invalidates the whole run); a sample with ΔA < −fall_tolerance → FALLING.
   A record holding NaN/inf anywhere (or overflowing the slope) makes only that cell invalid:
   NOT_FINITE on a sample channel, CONTROL_NOT_FINITE on every channel of a run whose control is
   not finite. The rest of the batch is interpreted as if that cell were not there.
5. Verdict: inhibition ≥ positive_pct → positive; ≥ suspect_low_pct → suspect; else negative.
   The control channel's own cell carries the CONTROL_CHANNEL flag, inhibition 0 and verdict negative
   (invalid when the run is); publishers skip it.

Does not: retry, log, read devices or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.interpret.codes import ENZYME_ALGORITHM, ENZYME_INVALIDATING, EnzymeFlag, Verdict, flag_names
from gateway.interpret.errors import InputError, SpecMismatchError
from kuaijian_schema.specs import EnzymeSpec
from kuaijian_schema.wire import VerdictName

__all__ = ["KineticsResults", "interpret_kinetics"]

F64 = npt.NDArray[np.float64]

MIN_WINDOW_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class KineticsResults:
    """Interpretation of R runs × C channels (arrays indexed [run, channel] or [run])."""

    spec_name: str
    spec_version: str
    algorithm: str
    control: npt.NDArray[np.intp]  # (R,) control channel per run
    delta_a: F64  # (R, C) ΔA over the detection window
    delta_a_control: F64  # (R,)
    inhibition: F64  # (R, C) %, clamped to [0, 100]; NaN when ΔA_control ≤ 0 or not finite
    verdict: npt.NDArray[np.int8]  # (R, C) `Verdict` codes
    flags: npt.NDArray[np.uint8]  # (R, C) `EnzymeFlag` bits

    def __len__(self) -> int:
        return int(self.control.shape[0])

    def is_control(self, r: int, c: int) -> bool:
        return int(self.control[r]) == c

    def verdict_for(self, r: int, c: int) -> VerdictName:
        """Wire name of the verdict of run r, channel c."""
        return Verdict(int(self.verdict[r, c])).wire

    def values_for(self, r: int, c: int) -> dict[str, float | None]:
        """Wire `values` of run r, channel c (NaN → None)."""
        return {
            "inhibition_pct": _num(self.inhibition[r, c]),
            "delta_a_sample": _num(self.delta_a[r, c]),
            "delta_a_control": _num(self.delta_a_control[r]),
        }

    def flags_for(self, r: int, c: int) -> tuple[str, ...]:
        """QC flag names of run r, channel c."""
        return flag_names(EnzymeFlag, int(self.flags[r, c]))


def _num(v: float | np.floating[Any]) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def _float_array(
    name: str, value: object, ndim: int, shape_text: str, *, check_finite: bool = True
) -> npt.NDArray[np.floating[Any]]:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{name} must be a numpy array {shape_text}, got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise InputError(f"{name} must be numeric {shape_text}, got dtype {value.dtype}")
    if value.ndim != ndim:
        hint = " (one run: pass absorbance[None])" if name == "absorbance" and value.ndim == 2 else ""
        raise InputError(f"{name} must have shape {shape_text}, got shape {value.shape}{hint}")
    if value.size == 0:
        raise InputError(f"{name} is empty (shape {value.shape}); expected {shape_text}")
    arr = value if value.dtype.kind == "f" else value.astype(np.float64)
    # one streaming pass: NaN/inf propagate into the sum (no temporary mask array)
    if check_finite and not math.isfinite(float(arr.sum(dtype=np.float64))):
        _raise_not_finite(name, arr)
    return arr


def _raise_not_finite(name: str, arr: npt.NDArray[np.floating[Any]]) -> None:
    """InputError naming the first row (all but the last axis) holding NaN/inf."""
    flat = arr.reshape(-1, arr.shape[-1])
    bad_rows = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad_rows.size == 0:
        raise InputError(f"{name} holds values too large to fit a slope (overflow)")
    where = np.unravel_index(int(bad_rows[0]), arr.shape[:-1])
    at = f" at index {tuple(int(i) for i in where)}" if arr.ndim > 1 else ""
    raise InputError(f"{name} contains NaN or inf{at}")


def interpret_kinetics(
    times_s: npt.NDArray[np.floating[Any]],
    absorbance: npt.NDArray[np.floating[Any]],
    control: npt.ArrayLike,
    spec: EnzymeSpec,
) -> KineticsResults:
    """Interpret absorbance (R, C, T) sampled at times_s (T,) with control channel per run (R,).

    `control` may be a scalar (same control channel in every run). Raises InputError for unusable
    arrays and SpecMismatchError when the detection window holds fewer than 3 samples.
    """
    t = _float_array("times_s", times_s, 1, "(T,) seconds")
    # absorbance is checked for NaN/inf through the slopes below (NaN·0 = NaN, so a non-finite value
    # anywhere in a channel's record makes its ΔA non-finite): no separate pass over the input, and a
    # bad record invalidates its own cell (or run, for the control), never the batch
    a = _float_array("absorbance", absorbance, 3, "(R, C, T)", check_finite=False)
    r_n, c_n, t_n = a.shape
    if t_n != t.shape[0]:
        raise InputError(f"absorbance has {t_n} time points but times_s has {t.shape[0]}")
    if c_n < 2:
        raise InputError(f"absorbance has {c_n} channel(s); need ≥ 2 (a control and a sample)")
    if t_n > 1 and not (np.diff(t) > 0).all():
        raise InputError("times_s must be strictly increasing")
    ctrl_in = np.asarray(control)
    if ctrl_in.dtype.kind not in "iu" or ctrl_in.ndim > 1:
        raise InputError(
            f"control must be integer channel indices, shape (R,) or scalar; got {ctrl_in.dtype}"
        )
    if ctrl_in.ndim == 1 and ctrl_in.shape[0] != r_n:
        raise InputError(f"control has {ctrl_in.shape[0]} entries for {r_n} runs")
    ctrl = np.broadcast_to(ctrl_in, (r_n,)).astype(np.intp)
    if ((ctrl < 0) | (ctrl >= c_n)).any():
        raise InputError(f"control channel indices must be in [0, {c_n}), got {ctrl.min()}..{ctrl.max()}")

    win = np.flatnonzero((t >= spec.window_start_s) & (t <= spec.window_end_s))
    if win.size < MIN_WINDOW_SAMPLES:
        raise SpecMismatchError(
            f"profile {spec.name}: detection window {spec.window_start_s:g}–{spec.window_end_s:g} s holds "
            f"{win.size} samples of times {t[0]:g}–{t[-1]:g} s; need ≥ {MIN_WINDOW_SAMPLES}"
        )
    tw = t[win].astype(np.float64)
    dt = tw - tw.mean()
    span = spec.window_end_s - spec.window_start_s
    # least-squares slope × span as one matrix-vector product over the whole (contiguous) record,
    # with zero weight outside the detection window
    weights = np.zeros(t_n)
    weights[win] = dt * (span / float(dt @ dt))
    flat = a.reshape(r_n * c_n, t_n)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite records are flagged just below
        delta = (flat @ weights.astype(flat.dtype, copy=False)).astype(np.float64).reshape(r_n, c_n)
    bad = ~np.isfinite(delta)
    delta[bad] = np.nan  # ±inf (overflow) reads as "no value" like NaN

    runs = np.arange(r_n)
    dac = delta[runs, ctrl]
    ctrl_bad = bad[runs, ctrl]
    with np.errstate(divide="ignore", invalid="ignore"):
        inh = np.where(dac[:, None] > 0, (dac[:, None] - delta) / dac[:, None] * 100.0, np.nan)
    np.clip(inh, 0.0, 100.0, out=inh)
    is_ctrl = np.zeros((r_n, c_n), dtype=bool)
    is_ctrl[runs, ctrl] = True
    inh[is_ctrl] = np.where(dac > 0, 0.0, np.nan)

    with np.errstate(invalid="ignore"):
        ctrl_falling = dac < -spec.fall_tolerance
        ctrl_weak = ~ctrl_falling & (dac < spec.min_control_delta)
        sample_falling = ~is_ctrl & (delta < -spec.fall_tolerance)
    run_flags = (
        ctrl_weak * int(EnzymeFlag.CONTROL_WEAK)
        | ctrl_falling * int(EnzymeFlag.CONTROL_FALLING)
        | ctrl_bad * int(EnzymeFlag.CONTROL_NOT_FINITE)
    ).astype(np.uint8)
    flags = np.broadcast_to(run_flags[:, None], (r_n, c_n)).copy()
    flags |= (is_ctrl * int(EnzymeFlag.CONTROL_CHANNEL)).astype(np.uint8)
    flags |= (sample_falling * int(EnzymeFlag.FALLING)).astype(np.uint8)
    flags |= ((~is_ctrl & bad) * int(EnzymeFlag.NOT_FINITE)).astype(np.uint8)

    with np.errstate(invalid="ignore"):
        verdict = np.where(
            inh >= spec.positive_pct,
            Verdict.POSITIVE,
            np.where(inh >= spec.suspect_low_pct, Verdict.SUSPECT, Verdict.NEGATIVE),
        ).astype(np.int8)
    verdict[is_ctrl] = Verdict.NEGATIVE
    verdict[(flags & int(ENZYME_INVALIDATING)) != 0] = Verdict.INVALID
    return KineticsResults(
        spec_name=spec.name,
        spec_version=spec.version,
        algorithm=ENZYME_ALGORITHM,
        control=ctrl,
        delta_a=delta,
        delta_a_control=dac,
        inhibition=inh,
        verdict=verdict,
        flags=flags,
    )
