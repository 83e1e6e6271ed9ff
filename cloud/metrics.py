"""Prometheus metrics of the cloud service (prometheus-client).

Does: `CloudMetrics` owns one registry per app (never the process-global one: several apps may share a
process) with
  - what this process's ingest worker did, counted per committed batch (`IngestWorker` calls `batch_done`):
        kj_cloud_results_ingested_total      results (and sample registrations) stored; a redelivery is not
        kj_cloud_results_duplicate_total     redeliveries of results already stored (acked, not stored)
        kj_cloud_results_rejected_total      results rejected back to their gateway
        kj_cloud_dead_letters_total          messages put in the dead-letter table
        kj_cloud_status_messages_total       station status messages applied
        kj_cloud_ingest_batch_seconds        histogram: commit + acknowledgement time of one batch
        kj_cloud_ingest_batch_size           histogram: messages per committed batch
  - what the database holds, read at scrape time (`DatabaseCollector`, one short read per scrape):
        kj_cloud_cases_open{level}           cases not closed, by the level holding them
        kj_cloud_cases_overdue{level}        of those, past their deadline
        kj_cloud_stations{state}             stations online / offline / unknown (never reported)
        kj_cloud_station_backlog{station}    results waiting at the station's gateway, as last reported
        kj_cloud_station_oldest_unsent_age_seconds{station}  age of its oldest waiting result, as reported
        kj_cloud_station_status_age_seconds{station}         how old that report is
        kj_cloud_dead_letters_stored         rows in the dead-letter table
Does not: serve HTTP or decide who may read them (cloud.api.routes.metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.db import connect

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
STATES = ("online", "offline", "unknown")


class DatabaseCollector(Collector):
    """Gauges read from the database on each scrape; `where()` gives the database (path or URL) and the time now."""

    def __init__(self, where: Callable[[], tuple[str, datetime]]) -> None:
        self.where = where

    def collect(self) -> Iterator[Metric]:
        path, now = self.where()
        db = connect(path)
        try:
            cases = db.execute(
                "SELECT level, COUNT(*), COALESCE(SUM(CASE WHEN deadline < ? THEN 1 ELSE 0 END), 0) "
                "FROM cases WHERE status != 'closed' GROUP BY level",
                [now.isoformat()],
            ).fetchall()
            stations = db.execute(
                "SELECT id, online, status_at, backlog, oldest_unsent_age_s FROM stations ORDER BY id"
            ).fetchall()
            dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        finally:
            db.close()
        open_ = GaugeMetricFamily("kj_cloud_cases_open", "cases not closed, by level", labels=["level"])
        overdue = GaugeMetricFamily(
            "kj_cloud_cases_overdue", "open cases past their deadline, by level", labels=["level"]
        )
        for level in ("station", "village", "town", "county"):
            row = next((r for r in cases if r[0] == level), None)
            open_.add_metric([level], int(row[1]) if row else 0)
            overdue.add_metric([level], int(row[2]) if row else 0)
        yield open_
        yield overdue
        by_state = dict.fromkeys(STATES, 0)
        backlog = GaugeMetricFamily(
            "kj_cloud_station_backlog",
            "results waiting at the station's gateway, as it last reported",
            labels=["station"],
        )
        oldest = GaugeMetricFamily(
            "kj_cloud_station_oldest_unsent_age_seconds",
            "age of the station's oldest waiting result when it last reported",
            labels=["station"],
        )
        status_age = GaugeMetricFamily(
            "kj_cloud_station_status_age_seconds",
            "seconds since the station's last status report",
            labels=["station"],
        )
        for sid, online, status_at, depth, oldest_s in stations:
            by_state["online" if online else ("offline" if status_at else "unknown")] += 1
            if depth is not None:
                backlog.add_metric([sid], float(depth))
            if oldest_s is not None:
                oldest.add_metric([sid], float(oldest_s))
            if status_at:
                age = (now - datetime.fromisoformat(str(status_at))).total_seconds()
                status_age.add_metric([sid], max(0.0, age))
        states = GaugeMetricFamily("kj_cloud_stations", "stations by state", labels=["state"])
        for state in STATES:
            states.add_metric([state], by_state[state])
        yield states
        yield backlog
        yield oldest
        yield status_age
        yield GaugeMetricFamily("kj_cloud_dead_letters_stored", "rows in the dead-letter table", value=dead)


class CloudMetrics:
    """The app's registry: ingest counters (updated by the worker) and the database collector."""

    def __init__(self, where: Callable[[], tuple[str, datetime]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)  # no database read at registration
        r = self.registry
        self.ingested = Counter(
            "kj_cloud_results_ingested", "results and sample registrations stored", registry=r
        )
        self.duplicates = Counter(
            "kj_cloud_results_duplicate", "redelivered results already stored", registry=r
        )
        self.rejected = Counter("kj_cloud_results_rejected", "results rejected to their gateway", registry=r)
        self.dead_letters = Counter("kj_cloud_dead_letters", "messages dead-lettered", registry=r)
        self.statuses = Counter("kj_cloud_status_messages", "station status messages applied", registry=r)
        self.batch_seconds = Histogram(
            "kj_cloud_ingest_batch_seconds",
            "commit and acknowledgement time of one ingest batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "kj_cloud_ingest_batch_size",
            "messages per committed ingest batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        r.register(DatabaseCollector(where))

    def batch_done(
        self,
        messages: int,
        seconds: float,
        *,
        stored: int,
        duplicates: int,
        rejected: int,
        dead: int,
        statuses: int,
    ) -> None:
        """Count one committed batch (called by the ingest worker after its acks are published)."""
        self.ingested.inc(stored)
        self.duplicates.inc(duplicates)
        self.rejected.inc(rejected)
        self.dead_letters.inc(dead)
        self.statuses.inc(statuses)
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(messages)
