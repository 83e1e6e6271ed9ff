"""Background services of the web app: MQTT ingest (+ config publisher) and the case scheduler.

Does: start/stop the ingest worker when a broker is configured, run `cloud.cases.tick` every
`scheduler_interval_s` with the injected clock.
Does not: HTTP, or the logic of ingest/cases themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cloud.clock import Clock
from cloud.settings import Settings

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, clock: Clock, on_commit: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit

    def start(self) -> None:
        """Start ingest if a broker is configured (filled in with cloud.ingest)."""

    def stop(self) -> None:
        """Stop whatever `start` started."""

    async def run_scheduler(self) -> None:
        """Tick the case scheduler forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.settings.scheduler_interval_s)
