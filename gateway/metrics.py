"""Prometheus metrics of the station gateway (prometheus-client), read at scrape time.

Does: `GatewayCollector(service)` yields, on each scrape, what the service already keeps — nothing is counted
twice or on the hot path:
    kj_gateway_results_enqueued_total        results (and registrations) put in the outbox, ever (persistent)
    kj_gateway_results_acked_total           results the cloud acknowledged: "results out" (persistent)
    kj_gateway_results_rejected_total        results the cloud rejected (kept in the rejected table)
    kj_gateway_records_skipped_total         analyzer records skipped as unreadable, ever (persistent)
    kj_gateway_outbox_depth                  results waiting for the cloud's ack
    kj_gateway_outbox_oldest_age_seconds     age of the oldest waiting result (0 when none waits)
    kj_gateway_mqtt_connected                1 while the link to the broker is up
    kj_gateway_instrument_state{instrument, driver, state}   1 for the instrument's current state, else 0
    kj_gateway_instrument_records_read_total{instrument, driver}  records read since the gateway started
The counters come from the outbox's own counters, so they survive restarts. `registry_for(service)` puts the
collector in a fresh registry (never the process-global one); the local web page serves it at `/metrics`.

Does not: serve HTTP (gateway.web) or count anything itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.worker import State

if TYPE_CHECKING:
    from gateway.service import GatewayService

STATES: tuple[str, ...] = get_args(State)


class GatewayCollector(Collector):
    """Reads the running service's outbox, link and workers on each `collect()`."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        outbox = svc.outbox
        if outbox is not None:
            st = outbox.stats()
            for name, value, doc in (
                ("kj_gateway_results_enqueued", st.enqueued_total, "results put in the outbox"),
                ("kj_gateway_results_acked", st.acked_total, "results acknowledged by the cloud"),
                ("kj_gateway_results_rejected", st.rejected_total, "results rejected by the cloud"),
                ("kj_gateway_records_skipped", st.skipped_total, "analyzer records skipped as unreadable"),
            ):
                yield CounterMetricFamily(name, doc, value=value)
            yield GaugeMetricFamily(
                "kj_gateway_outbox_depth", "results waiting for the cloud", value=st.depth
            )
            yield GaugeMetricFamily(
                "kj_gateway_outbox_oldest_age_seconds",
                "age of the oldest result waiting for the cloud (0 when none waits)",
                value=st.oldest_age_s(time.time()) or 0.0,
            )
        link = svc.link
        yield GaugeMetricFamily(
            "kj_gateway_mqtt_connected",
            "1 while the link to the broker is connected",
            value=1.0 if link is not None and link.connected else 0.0,
        )
        state = GaugeMetricFamily(
            "kj_gateway_instrument_state",
            "1 for the instrument's current state (ok, unavailable, error, starting), else 0",
            labels=["instrument", "driver", "state"],
        )
        records = CounterMetricFamily(
            "kj_gateway_instrument_records_read",
            "analyzer records read since the gateway started",
            labels=["instrument", "driver"],
        )
        for worker in svc.workers:
            ws = worker.state
            for s in STATES:
                state.add_metric([ws.name, ws.driver, s], 1.0 if ws.state == s else 0.0)
            records.add_metric([ws.name, ws.driver], ws.records_read)
        yield state
        yield records


def registry_for(service: GatewayService) -> CollectorRegistry:
    """A fresh registry holding only the gateway's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(service))
    return registry
