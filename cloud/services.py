"""Background services of the web app: MQTT ingest (+ config publisher), the case scheduler, risk scans and
the notifier.

Does: start/stop the ingest worker when a broker is configured (or a publish-only link when ingest is
disabled), and run the scheduler loop: every `scheduler_interval_s`, `cloud.cases.tick(now)` with the
injected clock, the monthly results partitions ahead (PostgreSQL, cloud.partitions), a risk scan when `risk_scan_interval_s` has passed since the last one, then publish pending
configs; and the notifier loop: every `notify_interval_s`, fan new case actions and risk alerts out to the
channels and deliver what is due (cloud.notify).
Does not: HTTP, or the logic of ingest/cases themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from cloud import cases, configs, partitions, risk
from cloud.clock import Clock
from cloud.db import connect
from cloud.errors import DatabaseError
from cloud.ingest_worker import IngestWorker, MqttLink
from cloud.metrics import CloudMetrics
from cloud.notify import queue, sender
from cloud.settings import Settings

log = logging.getLogger(__name__)


class Services:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        on_commit: Callable[[], None] | None = None,
        metrics: CloudMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit
        self.metrics = metrics
        self.ingest: IngestWorker | None = None
        self.link: MqttLink | None = None
        self._last_risk_scan: datetime | None = None
        self.partitions_created: list[str] = []
        """The results partitions the last scheduler pass created (PostgreSQL)."""

    @property
    def publisher(self) -> configs.Publisher | None:
        return self.link

    def start(self) -> None:
        if not self.settings.broker_url:
            return
        if self.settings.ingest_enabled:
            self.ingest = IngestWorker(self.settings, self.clock, self.on_commit, self.metrics)
            self.link = self.ingest.link
            self.ingest.start()
        else:
            self.link = MqttLink(self.settings, name="publisher")
            self.link.start()

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        elif self.link is not None:
            self.link.stop()

    def scheduler_step(self) -> cases.TickReport:
        """One scheduler pass (blocking): tick cases at clock.now(), then publish pending configs."""
        db = connect(self.settings.database)
        try:
            now = self.clock.now()
            report = cases.tick(db, now, self.settings)
            self.partitions_created = partitions.maintain_db(db, now)
            if self.partitions_created:
                log.info("results partitions created: %s", ", ".join(self.partitions_created))
            interval = timedelta(seconds=self.settings.risk_scan_interval_s)
            if self._last_risk_scan is None or now - self._last_risk_scan >= interval:
                risk.scan(db, now, risk.params_from(self.settings))
                self._last_risk_scan = now
            if self.link is not None:
                configs.publish_pending(db, self.link, now)
            return report
        finally:
            db.close()

    def notify_step(self) -> sender.DeliveryReport:
        """One notifier pass (blocking): queue new events for their channels, then deliver what is due."""
        db = connect(self.settings.database)
        try:
            now = self.clock.now()
            queue.fan_out(db, now, self.settings.tz)
            return sender.deliver_due(db, now)
        finally:
            db.close()

    async def run_notifier(self) -> None:
        """Run `notify_step` forever, every `notify_interval_s` (cancel the task to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.notify_step)
            except DatabaseError:
                log.exception("notifier step failed; retrying next interval")
            await asyncio.sleep(self.settings.notify_interval_s)

    async def run_scheduler(self) -> None:
        """Run `scheduler_step` forever, every `scheduler_interval_s` (cancel the task to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.scheduler_step)
            except DatabaseError:
                log.exception("scheduler step failed; retrying next interval")
            await asyncio.sleep(self.settings.scheduler_interval_s)
