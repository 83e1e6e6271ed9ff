"""Verdict codes, QC flag bits and algorithm versions of the interpretation core.

Does: define the integer codes stored in result arrays and their wire names.
Does not: compute anything.
"""

from __future__ import annotations

import functools
from enum import IntEnum, IntFlag
from typing import Final

from kuaijian_schema.wire import VerdictName

GOLD_ALGORITHM: Final = "gold/2.2"
ENZYME_ALGORITHM: Final = "enzyme/1.1"


class Verdict(IntEnum):
    """Verdict codes in result arrays (int8); `.wire` is the name in MQTT payloads."""

    NEGATIVE = 0
    POSITIVE = 1
    SUSPECT = 2
    INVALID = 3

    @property
    def wire(self) -> VerdictName:
        return _WIRE[self]


_WIRE: Final[dict[Verdict, VerdictName]] = {
    Verdict.NEGATIVE: "negative",
    Verdict.POSITIVE: "positive",
    Verdict.SUSPECT: "suspect",
    Verdict.INVALID: "invalid",
}


class GoldFlag(IntFlag):
    """QC flag bits of a colloidal-gold result (per strip and test line, uint16)."""

    CONTROL_MISSING = 1  # control signal < 30 % of min_control_signal → invalid
    CONTROL_WEAK = 2  # control signal < min_control_signal → invalid
    CONTROL_OUT_OF_PLACE = 4  # control peak at the edge of its search window → invalid
    SATURATED = 8  # a line region darker than saturation_reflectance → invalid
    BELOW_CALIBRATION = 16  # ratio beyond the 4PL zero-concentration asymptote → concentration NaN
    ABOVE_CALIBRATION = 32  # ratio beyond the 4PL saturation asymptote → concentration NaN
    CONTROL_SHAPE = 64  # the control "line" is not shaped like a line of this kit (speck) → invalid
    TEST_SHAPE = 128  # a test line with signal not shaped like a line, or off its window → suspect


GOLD_INVALIDATING: Final = (
    GoldFlag.CONTROL_MISSING
    | GoldFlag.CONTROL_WEAK
    | GoldFlag.CONTROL_OUT_OF_PLACE
    | GoldFlag.CONTROL_SHAPE
    | GoldFlag.SATURATED
)


class EnzymeFlag(IntFlag):
    """QC flag bits of an enzyme-inhibition result (per run and channel, uint8)."""

    CONTROL_CHANNEL = 1  # this channel is the run's enzyme control (no sample)
    CONTROL_WEAK = 2  # control ΔA below min_control_delta → whole run invalid
    CONTROL_FALLING = 4  # control absorbance falls → whole run invalid
    FALLING = 8  # this channel's absorbance falls by more than fall_tolerance → invalid
    NOT_FINITE = 16  # this channel's record holds NaN/inf (or overflows) → this channel invalid
    CONTROL_NOT_FINITE = 32  # the control channel's record holds NaN/inf → whole run invalid


ENZYME_INVALIDATING: Final = (
    EnzymeFlag.CONTROL_WEAK
    | EnzymeFlag.CONTROL_FALLING
    | EnzymeFlag.FALLING
    | EnzymeFlag.NOT_FINITE
    | EnzymeFlag.CONTROL_NOT_FINITE
)


@functools.lru_cache(maxsize=1024)
def flag_names(kind: type[GoldFlag] | type[EnzymeFlag], value: int) -> tuple[str, ...]:
    """Wire names (lower case) of the bits set in `value`, in bit order (remembered per value: the gateway
    asks once per result, and a kit yields a handful of combinations)."""
    return tuple(str(f.name).lower() for f in kind if int(f) & int(value))
