"""Kinetics model of the simulated enzyme-inhibition (AChE, 412 nm) analyzer, with exact ground truth.

Does: absorbance (runs, channels, time) rising linearly at a rate set by the control channel's activity
times (1 − inhibition); faults: weak control, falling absorbance, noisy channel. Ground-truth verdict
codes are the integers of `gateway.interpret.Verdict` (see `firmware_sim.truth`).

Typical use by an instrument simulator::

    run = one_enzyme_run(GB_T_5009_199, 8, rng, inhibition=[0, 10, 55, 80, 0, 0, 30, 45])
    run.times_s, run.absorbance, run.control_channel

Does not: interpret anything (that is `gateway.interpret`), speak any protocol, or sleep. Colloidal-gold
strips are `firmware_sim.signal_model`, which also re-exports this module's names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from firmware_sim.truth import INVALID, NEGATIVE, POSITIVE, SUSPECT
from kuaijian_schema.specs import EnzymeSpec

__all__ = [
    "EnzymeConditions",
    "EnzymeFault",
    "EnzymeRun",
    "KineticsBatch",
    "generate_kinetics",
    "one_enzyme_run",
]

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

EnzymeFault = Literal["weak_control", "falling", "noisy"]


@dataclass(frozen=True, slots=True)
class EnzymeConditions:
    """Ranges the kinetics generator draws from and fault probabilities."""

    sample_interval_s: float = 3.0
    extra_s: float = 6.0  # recording continues this long after spec.window_end_s
    a0: tuple[float, float] = (0.05, 0.45)  # absorbance at t = 0
    control_delta: tuple[float, float] = (1.5, 3.0)  # valid control ΔA, × spec.min_control_delta
    weak_control_delta: tuple[float, float] = (0.1, 0.6)  # weak control ΔA, × spec.min_control_delta
    noise_sd: tuple[float, float] = (0.001, 0.003)  # absorbance noise per reading
    zero_fraction: float = 0.25  # drawn inhibitions: fraction exactly 0
    p_weak_control: float = 0.0  # per run
    p_falling: float = 0.0  # per sample channel
    p_noisy: float = 0.0  # per sample channel: noise × noisy_factor
    noisy_factor: float = 6.0


@dataclass(frozen=True, slots=True)
class KineticsBatch:
    """R runs of a C-channel analyzer: absorbance (R, C, T) over times_s (T,) and the truth."""

    times_s: F64  # (T,)
    absorbance: F64  # (R, C, T)
    control: npt.NDArray[np.intp]  # (R,) control channel per run
    inhibition: F64  # (R, C) true inhibition % of the sample (0 for the control channel)
    delta_a: F64  # (R, C) true ΔA over the detection window (negative for falling channels)
    noise_sd: F64  # (R, C)
    weak_control: B  # (R,)
    falling: B  # (R, C)
    noisy: B  # (R, C)
    verdict: I8  # (R, C) expected verdict; control channel: NEGATIVE, or INVALID when the run is


@dataclass(frozen=True, slots=True)
class EnzymeRun:
    """One analyzer run: times (T,), absorbance (C, T), control channel, and the truth per channel."""

    times_s: F64
    absorbance: F64
    control_channel: int
    inhibition: F64  # (C,)
    delta_a: F64  # (C,)
    verdict: I8  # (C,)


def generate_kinetics(
    spec: EnzymeSpec,
    runs: int,
    channels: int,
    rng: np.random.Generator,
    *,
    inhibition: npt.ArrayLike | None = None,
    control: npt.ArrayLike | None = None,
    conditions: EnzymeConditions | None = None,
    fault: EnzymeFault | None = None,
) -> KineticsBatch:
    """Generate kinetics for `runs` runs of a `channels`-channel analyzer.

    `inhibition` (R, C) % fixes the sample inhibitions (the control channel's entry is ignored);
    `control` (R,) fixes the control channel per run (random otherwise). `fault` forces one fault:
    "weak_control" on every run, "falling"/"noisy" on the first sample channel of every run.
    """
    cond = conditions or EnzymeConditions()
    if runs < 1 or channels < 2:
        raise ValueError(f"need runs ≥ 1 and channels ≥ 2, got {runs}, {channels}")
    r_idx = np.arange(runs)
    ctrl = (
        rng.integers(0, channels, runs)
        if control is None
        else np.broadcast_to(np.asarray(control, dtype=np.intp), (runs,)).copy()
    )
    if np.any((ctrl < 0) | (ctrl >= channels)):
        raise ValueError(f"control channels must be in [0, {channels})")
    is_ctrl = np.zeros((runs, channels), dtype=bool)
    is_ctrl[r_idx, ctrl] = True
    if inhibition is None:
        inh = rng.uniform(0.0, 100.0, (runs, channels))
        inh[rng.random((runs, channels)) < cond.zero_fraction] = 0.0
    else:
        inh = np.broadcast_to(np.asarray(inhibition, dtype=np.float64), (runs, channels)).copy()
        if np.any((inh < 0) | (inh > 100)) or not np.all(np.isfinite(inh)):
            raise ValueError("inhibition must be finite percentages in [0, 100]")
    inh[is_ctrl] = 0.0

    weak = rng.random(runs) < cond.p_weak_control
    falling = (rng.random((runs, channels)) < cond.p_falling) & ~is_ctrl
    noisy = (rng.random((runs, channels)) < cond.p_noisy) & ~is_ctrl
    first_sample = np.where(ctrl == 0, 1, 0)
    if fault == "weak_control":
        weak[:] = True
    elif fault == "falling":
        falling[r_idx, first_sample] = True
    elif fault == "noisy":
        noisy[r_idx, first_sample] = True

    mcd = spec.min_control_delta
    dctrl = np.where(
        weak, rng.uniform(*cond.weak_control_delta, runs) * mcd, rng.uniform(*cond.control_delta, runs) * mcd
    )
    delta = dctrl[:, None] * (1.0 - inh / 100.0)
    fall = -(spec.fall_tolerance + rng.uniform(0.03, 0.2, (runs, channels)))
    delta = np.where(falling, fall, delta)

    span = spec.window_end_s - spec.window_start_s
    times = np.arange(0.0, spec.window_end_s + cond.extra_s + 1e-9, cond.sample_interval_s)
    rate = delta / span  # absorbance units per second
    a0 = rng.uniform(*cond.a0, (runs, channels))
    sd = rng.uniform(*cond.noise_sd, (runs, channels)) * np.where(noisy, cond.noisy_factor, 1.0)
    absorb = a0[..., None] + rate[..., None] * times[None, None, :]
    absorb += rng.standard_normal(absorb.shape) * sd[..., None]

    verdict = np.where(
        inh >= spec.positive_pct, POSITIVE, np.where(inh >= spec.suspect_low_pct, SUSPECT, NEGATIVE)
    ).astype(np.int8)
    verdict[is_ctrl] = NEGATIVE
    verdict[falling] = INVALID
    verdict[weak] = INVALID
    return KineticsBatch(
        times_s=times,
        absorbance=absorb,
        control=ctrl.astype(np.intp),
        inhibition=inh,
        delta_a=delta,
        noise_sd=sd,
        weak_control=weak,
        falling=falling,
        noisy=noisy,
        verdict=verdict,
    )


def one_enzyme_run(
    spec: EnzymeSpec,
    channels: int,
    rng: np.random.Generator,
    *,
    inhibition: Sequence[float] | None = None,
    control_channel: int = 0,
    fault: EnzymeFault | None = None,
    conditions: EnzymeConditions | None = None,
) -> EnzymeRun:
    """One run of a `channels`-channel analyzer; `inhibition` has one % per channel (control ignored)."""
    inh = None if inhibition is None else np.asarray(inhibition, dtype=np.float64).reshape(1, channels)
    b = generate_kinetics(
        spec, 1, channels, rng, inhibition=inh, control=[control_channel], conditions=conditions, fault=fault
    )
    return EnzymeRun(
        times_s=b.times_s,
        absorbance=b.absorbance[0],
        control_channel=int(b.control[0]),
        inhibition=b.inhibition[0],
        delta_a=b.delta_a[0],
        verdict=b.verdict[0],
    )
