"""Demo colloidal-gold kit tables (`StripSpec`) for the simulator, the offline CLI and tests.

Does: define a handful of realistic kits as data — four competitive single-line pesticide strips
(imidacloprid, carbendazim, carbofuran, procymidone), a three-line nitrofuran-metabolite card and a
sandwich allergen strip — on the 1024 px profile of the demo reader. Cutoffs are the T/C ratio the kit's
4PL calibration gives at the decision concentration (e.g. the MRL).

Does not: stand in for real kit-lot calibrations; in production the cloud pushes the lot's `StripSpec`
on the retained config topic and the gateway uses that.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from kuaijian_schema.specs import Calibration4PL, StripSpec, TestLine

PROFILE_LENGTH: Final = 1024
"""Pixels along the strip of the demo reader's line-scan sensor."""


def _competitive(name: str, analyte: str, cal: Calibration4PL, cutoff: float, band: float) -> StripSpec:
    return StripSpec(
        name=name,
        version="1",
        length=PROFILE_LENGTH,
        format="competitive",
        control_position=720.0,
        lines=(TestLine(analyte=analyte, position=480.0, cutoff=cutoff, suspect_band=band, calibration=cal),),
        tolerance=16.0,
        line_width=24.0,
        min_control_signal=1.0,
    )


_KITS: tuple[StripSpec, ...] = (
    # decision at 0.5 mg/kg (leafy vegetables)
    _competitive(
        "imidacloprid-v1", "imidacloprid", Calibration4PL(a=1.15, b=1.6, c=0.35, d=0.03), 0.43, 0.12
    ),
    # decision at 0.5 mg/kg
    _competitive("carbendazim-v1", "carbendazim", Calibration4PL(a=1.05, b=1.3, c=0.25, d=0.04), 0.33, 0.10),
    # banned pesticide: decision at the 0.02 mg/kg detection limit
    _competitive("carbofuran-v1", "carbofuran", Calibration4PL(a=1.2, b=1.4, c=0.015, d=0.02), 0.49, 0.12),
    # decision at 2 mg/kg (cucurbits)
    _competitive("procymidone-v1", "procymidone", Calibration4PL(a=1.1, b=1.5, c=1.2, d=0.05), 0.38, 0.10),
    StripSpec(
        name="nitrofurans-card-v1",
        version="1",
        length=PROFILE_LENGTH,
        format="competitive",
        control_position=780.0,
        lines=(
            TestLine(
                analyte="AOZ",
                position=300.0,
                cutoff=0.45,
                suspect_band=0.12,
                calibration=Calibration4PL(a=1.1, b=1.4, c=0.0008, d=0.03),
            ),
            TestLine(
                analyte="AMOZ",
                position=460.0,
                cutoff=0.45,
                suspect_band=0.12,
                calibration=Calibration4PL(a=1.0, b=1.5, c=0.0009, d=0.03),
            ),
            TestLine(
                analyte="SEM",
                position=620.0,
                cutoff=0.45,
                suspect_band=0.12,
                calibration=Calibration4PL(a=1.2, b=1.3, c=0.0010, d=0.04),
            ),
        ),
        tolerance=14.0,
        line_width=22.0,
        min_control_signal=1.0,
    ),
    # sandwich: T line grows with concentration; decision at 2.5 mg/kg
    StripSpec(
        name="peanut-allergen-v1",
        version="1",
        length=PROFILE_LENGTH,
        format="sandwich",
        control_position=700.0,
        lines=(
            TestLine(
                analyte="peanut-allergen",
                position=460.0,
                cutoff=0.24,
                suspect_band=0.08,
                calibration=Calibration4PL(a=0.01, b=1.2, c=10.0, d=1.5),
            ),
        ),
        tolerance=16.0,
        line_width=24.0,
        min_control_signal=1.0,
    ),
)

DEMO_KITS: Final = MappingProxyType({k.name: k for k in _KITS})
"""Kit name → StripSpec (read-only)."""
