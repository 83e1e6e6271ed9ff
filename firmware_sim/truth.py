"""Ground-truth verdict codes shared by the simulators' signal models.

Does: name the integers of `gateway.interpret.Verdict` (NEGATIVE=0, POSITIVE=1, SUSPECT=2, INVALID=3)
without importing `gateway` (firmware_sim stands on its own).
Does not: anything else.
"""

from __future__ import annotations

from typing import Final

NEGATIVE: Final = 0
POSITIVE: Final = 1
SUSPECT: Final = 2
INVALID: Final = 3
