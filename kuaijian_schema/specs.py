"""Interpretation specs: colloidal-gold strip layouts (`StripSpec`) and enzyme-inhibition profiles
(`EnzymeSpec`). They are data — per kit lot / per analyte — pushed from the cloud on the retained
config topic and used directly by `gateway.interpret`.

Verdict rules (per test line, ratio = signal_T / signal_C):
- competitive: ratio < cutoff → positive; cutoff ≤ ratio < cutoff + suspect_band → suspect; else negative.
- sandwich:    ratio ≥ cutoff → positive; cutoff − suspect_band ≤ ratio < cutoff → suspect; else negative.
Enzyme: inhibition ≥ positive_pct → positive; suspect_low_pct ≤ inhibition < positive_pct → suspect.
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Calibration4PL(_Frozen):
    """4-parameter logistic ratio = d + (a − d) / (1 + (x / c)^b), x in mg/kg.

    a: ratio at zero concentration, d: ratio at infinite concentration, c: inflection (mg/kg), b: slope.
    """

    a: float
    b: float = Field(gt=0)
    c: float = Field(gt=0)
    d: float


class TestLine(_Frozen):
    """One test (T) line of a card: its analyte, nominal position and decision thresholds."""

    __test__ = False  # not a pytest class

    analyte: str = Field(min_length=1)
    position: float = Field(ge=0, description="nominal centre, px along the profile")
    cutoff: float = Field(gt=0, description="T/C ratio decision threshold")
    suspect_band: float = Field(default=0.0, ge=0, description="ratio width of the retest band")
    calibration: Calibration4PL | None = None


class StripSpec(_Frozen):
    """Layout and decision rules of one colloidal-gold kit (strip or multi-line card)."""

    name: str = Field(min_length=1, description="kit id, e.g. 'imidacloprid-v2'")
    version: str = "1"
    length: int = Field(gt=8, description="profile length in px")
    format: Literal["competitive", "sandwich"] = "competitive"
    control_position: float = Field(ge=0)
    lines: tuple[TestLine, ...] = Field(min_length=1)
    tolerance: float = Field(default=12.0, gt=0, description="± px search window around nominal")
    line_width: float = Field(default=10.0, gt=0, description="integration window width, px")
    min_control_signal: float = Field(default=1.0, gt=0, description="min integrated OD of C line")
    saturation_reflectance: float = Field(default=0.02, ge=0, lt=1, description="R below this = saturated")

    @model_validator(mode="after")
    def _check_layout(self) -> Self:
        margin = self.tolerance + self.line_width / 2
        positions = [self.control_position, *(ln.position for ln in self.lines)]
        for p in positions:
            if p - margin < 0 or p + margin > self.length:
                raise ValueError(
                    f"line at {p} px with tolerance {self.tolerance} and width {self.line_width} "
                    f"does not fit a profile of {self.length} px"
                )
        srt = sorted(positions)
        for a, b in itertools.pairwise(srt):
            if b - a < self.line_width:
                raise ValueError(f"lines at {a} and {b} px overlap (line_width {self.line_width})")
        return self

    @property
    def analytes(self) -> tuple[str, ...]:
        return tuple(ln.analyte for ln in self.lines)


class EnzymeSpec(_Frozen):
    """An enzyme-inhibition (AChE, 412 nm) interpretation profile."""

    name: str = Field(min_length=1)
    version: str = "1"
    window_start_s: float = Field(default=0.0, ge=0)
    window_end_s: float = Field(default=180.0, gt=0)
    positive_pct: float = Field(default=50.0, gt=0, le=100)
    suspect_low_pct: float = Field(default=40.0, ge=0, le=100)
    min_control_delta: float = Field(default=0.3, gt=0, description="min ΔA of the control over the window")
    fall_tolerance: float = Field(default=0.02, ge=0, description="ΔA below −this = falling = invalid")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.window_end_s <= self.window_start_s:
            raise ValueError("window_end_s must be after window_start_s")
        if self.suspect_low_pct > self.positive_pct:
            raise ValueError("suspect_low_pct must not exceed positive_pct")
        return self


GB_T_5009_199 = EnzymeSpec(name="GB/T 5009.199-2003", positive_pct=50.0, suspect_low_pct=40.0)
NY_T_448 = EnzymeSpec(name="NY/T 448", positive_pct=70.0, suspect_low_pct=60.0)
