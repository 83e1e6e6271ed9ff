"""Exceptions of the interpretation core.

    InterpretError
    └── InputError              the arrays are unusable: wrong type/dtype/shape, empty, NaN/inf (not in absorbance: a flag),
        │                       values out of the physical range, bad control indices
        └── SpecMismatchError   the spec does not fit the data (profile length ≠ spec.length,
                                detection window without enough samples, lines off the profile)

The core never retries and never logs; callers (gateway worker, CLI) decide what to do. Messages say
what was wrong and what was expected.
"""

from __future__ import annotations


class InterpretError(Exception):
    """Base of every error raised by `gateway.interpret`."""


class InputError(InterpretError, ValueError):
    """Input arrays that cannot be interpreted."""


class SpecMismatchError(InputError):
    """A spec that does not fit the data it is applied to."""
