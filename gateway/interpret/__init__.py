"""The numpy interpretation core of the station gateway.

Does: turn raw analyzer signals into verdicts and values, fully vectorized —
`interpret_strips` (colloidal-gold reflectance profiles (N, L) → T/C ratios, verdicts, mg/kg),
`interpret_strip_images` (strip images → profiles → the same), and `interpret_kinetics`
(enzyme-inhibition absorbance (R, C, T) → ΔA, inhibition %, verdicts). Every result carries the
algorithm version (`GOLD_ALGORITHM`, `ENZYME_ALGORITHM`) and the spec name/version it used.

Does not: talk to devices, store, publish, retry or log; errors are raised from `errors.py`.
See docs/interpret.md for the algorithms, flags and verdict rules.
"""

from gateway.interpret.codes import (
    ENZYME_ALGORITHM,
    GOLD_ALGORITHM,
    EnzymeFlag,
    GoldFlag,
    Verdict,
    flag_names,
)
from gateway.interpret.enzyme import KineticsResults, interpret_kinetics
from gateway.interpret.errors import InputError, InterpretError, SpecMismatchError
from gateway.interpret.gold import StripResults, interpret_strips
from gateway.interpret.images import interpret_strip_images, profiles_from_images

__all__ = [
    "ENZYME_ALGORITHM",
    "GOLD_ALGORITHM",
    "EnzymeFlag",
    "GoldFlag",
    "InputError",
    "InterpretError",
    "KineticsResults",
    "SpecMismatchError",
    "StripResults",
    "Verdict",
    "flag_names",
    "interpret_kinetics",
    "interpret_strip_images",
    "interpret_strips",
    "profiles_from_images",
]
