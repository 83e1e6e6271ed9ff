"""The gateway's Prometheus metrics, scraped over HTTP from its local web server while it runs against a real
Mosquitto broker: the outbox depth and oldest age while nobody acknowledges, results out once the cloud
(the test acker) acknowledges, the link state and each instrument's state."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.service import GatewayService
from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for


def scrape(svc: GatewayService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics as {(name, sorted labels): value}."""
    assert svc.web is not None
    reply = httpx.get(f"http://127.0.0.1:{svc.web.port}/metrics", timeout=5)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported; have {sorted(k[0] for k in samples)}"
    return samples[key]


def test_metrics_follow_the_outbox_the_link_and_the_instruments(tmp_path: Path, mosquitto: Mosquitto) -> None:
    total = 40
    good = fast_instrument("good", serial="FAST-GOOD", total=total, rate=2000.0)
    bad = fast_instrument("bad", serial="FAST-BAD", fail_open_until=time.time() + 3600, total=5)
    cfg = write_station(tmp_path, mosquitto.port, [good, bad], web={"enabled": True, "port": 0})
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        # 1. Connected to the broker but no cloud acknowledges: everything waits in the outbox.
        wait_for(lambda: box.stats().enqueued_total == total, 10, "acquisition stalled")
        wait_for(
            lambda: value(scrape(svc), "kj_gateway_mqtt_connected") == 1.0, 10, "link never shown connected"
        )
        m = scrape(svc)
        assert value(m, "kj_gateway_results_enqueued_total") == total
        assert value(m, "kj_gateway_results_acked_total") == 0
        assert value(m, "kj_gateway_outbox_depth") == total
        assert value(m, "kj_gateway_outbox_oldest_age_seconds") > 0
        assert value(m, "kj_gateway_instrument_state", instrument="good", driver="plugin", state="ok") == 1
        assert value(m, "kj_gateway_instrument_state", instrument="good", driver="plugin", state="error") == 0
        assert (
            value(m, "kj_gateway_instrument_records_read_total", instrument="good", driver="plugin") == total
        )
        bad_states = {
            s: value(m, "kj_gateway_instrument_state", instrument="bad", driver="plugin", state=s)
            for s in ("ok", "unavailable", "error", "starting")
        }
        assert sum(bad_states.values()) == 1, bad_states
        assert bad_states["ok"] == 0, bad_states

        # 2. The cloud comes: results go out, the backlog empties.
        acker = Acker(mosquitto.port, STATION, KEY_BYTES)
        acker.start()
        try:
            wait_for(
                lambda: value(scrape(svc), "kj_gateway_results_acked_total") == total,
                30,
                "acked counter did not reach the number of results",
            )
            m = scrape(svc)
            assert value(m, "kj_gateway_outbox_depth") == 0
            assert value(m, "kj_gateway_outbox_oldest_age_seconds") == 0
            assert len(acker.received) == total
        finally:
            acker.stop()


def test_metrics_can_be_turned_off(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = write_station(
        tmp_path,
        mosquitto.port,
        [fast_instrument(total=1)],
        web={"enabled": True, "port": 0, "metrics": False},
    )
    with RunningService(cfg) as svc:
        assert svc.web is not None
        assert httpx.get(f"http://127.0.0.1:{svc.web.port}/metrics", timeout=5).status_code == 404
