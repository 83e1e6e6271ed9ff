"""The one timeout/retry configuration object of the driver layer (used by every session layer)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timing policy of a driver session.

    response_s: wait for a complete reply to one request.
    retries: re-sends of one request after timeout/NAK/corrupt reply (so attempts = retries + 1).
    inter_byte_s: a frame whose bytes stop arriving for this long is truncated and discarded.
    reconnect_initial_s / reconnect_max_s: exponential backoff bounds when (re)opening the link.
    """

    response_s: float = 1.0
    retries: int = 3
    inter_byte_s: float = 0.2
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.response_s <= 0 or self.inter_byte_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
