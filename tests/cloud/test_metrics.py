"""The cloud's Prometheus metrics (GET /metrics) through a real Mosquitto: who may read them, and that they
move — N results ingested grow the counter by N, a redelivery counts as duplicates, a forged result as
rejected and dead-lettered, a positive opens a case that turns overdue with the clock, and a station's
reported backlog is exported with the age of its report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, api_client_class, batch_payload, bearer
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, wait_for

A1 = "370214101203-01"
METRICS_TOKEN = "prometheus-scrape-token-for-tests"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def live_api(settings: Settings, clock: ManualClock, grid: Grid, mosquitto: Mosquitto) -> Iterator[Any]:
    cfg = settings.model_copy(update={"broker_url": mosquitto.url, "metrics_token": METRICS_TOKEN})
    with api_client_class()(create_app(cfg, clock=clock)) as client:
        services = client.app.state.services
        wait_for(lambda: services.link.connected.is_set(), 10, "cloud ingest did not connect")
        yield client


@pytest.fixture
def station(mosquitto: Mosquitto) -> Iterator[Recorder]:
    client = Recorder(mosquitto.port, "gw-a1").start()
    client.subscribe(f"kj/v1/{A1}/ack")
    try:
        yield client
    finally:
        client.stop()


def scrape(api: Any, token: str = METRICS_TOKEN) -> Samples:
    reply = api.get("/metrics", headers=bearer(token))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported; have {sorted({k[0] for k in samples})}"
    return samples[key]


def test_metrics_need_the_metrics_token_or_an_admin(live_api: Any, grid: Grid) -> None:
    assert live_api.get("/metrics").status_code == 401
    assert live_api.get("/metrics", headers=bearer("not-the-token")).status_code == 401
    assert live_api.get("/metrics", headers=bearer(grid.tokens["county"])).status_code == 403
    assert live_api.get("/metrics", headers=bearer(grid.tokens["admin"])).status_code == 200
    assert live_api.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200


def test_metrics_move_with_ingest_cases_and_station_status(
    live_api: Any, station: Recorder, grid: Grid, clock: ManualClock
) -> None:
    before = scrape(live_api)
    assert value(before, "kj_cloud_results_ingested_total") == 0
    assert value(before, "kj_cloud_stations", state="unknown") == len(grid.enrolments)
    assert value(before, "kj_cloud_cases_open", level="station") == 0

    n = 7
    results = [grid.result(A1) for _ in range(n - 1)] + [grid.result(A1, verdict="positive")]
    payload = batch_payload(results)
    station.publish(f"kj/v1/{A1}/result", payload)
    m = wait_for(
        lambda: (s := scrape(live_api)) and value(s, "kj_cloud_results_ingested_total") == n and s,
        10,
        f"ingested counter did not reach {n}",
    )
    assert value(m, "kj_cloud_ingest_batch_seconds_count") >= 1
    assert value(m, "kj_cloud_ingest_batch_seconds_sum") > 0
    assert value(m, "kj_cloud_ingest_batch_size_sum") >= 1
    assert value(m, "kj_cloud_cases_open", level="station") == 1
    assert value(m, "kj_cloud_cases_overdue", level="station") == 0

    # the same batch again: duplicates, not new results
    station.publish(f"kj/v1/{A1}/result", payload)
    m = wait_for(
        lambda: (s := scrape(live_api)) and value(s, "kj_cloud_results_duplicate_total") == n and s,
        10,
        "duplicate counter did not move",
    )
    assert value(m, "kj_cloud_results_ingested_total") == n

    # a forged result: rejected to its gateway and dead-lettered
    forged = grid.result(A1)
    forged["values"] = {"ratio": 0.01}
    station.publish(f"kj/v1/{A1}/result", batch_payload([forged]))
    m = wait_for(
        lambda: (s := scrape(live_api)) and value(s, "kj_cloud_results_rejected_total") == 1 and s,
        10,
        "rejected counter did not move",
    )
    assert value(m, "kj_cloud_dead_letters_total") == 1
    assert value(m, "kj_cloud_dead_letters_stored") == 1

    # a status: the station's backlog as reported, and how old that report is
    status = {
        "station": A1,
        "state": "online",
        "at": T0.isoformat(),
        "outbox_depth": 229,
        "oldest_unsent_age_s": 95.0,
    }
    station.publish(f"kj/v1/{A1}/status", json.dumps(status).encode(), retain=True)
    m = wait_for(  # the counters move after the commit that the gauges read: wait for both
        lambda: (
            (s := scrape(live_api))
            and value(s, "kj_cloud_stations", state="online") == 1
            and value(s, "kj_cloud_status_messages_total") == 1
            and s
        ),
        10,
        "station not counted online",
    )
    assert value(m, "kj_cloud_station_backlog", station=A1) == 229
    assert value(m, "kj_cloud_station_oldest_unsent_age_seconds", station=A1) == 95.0
    assert value(m, "kj_cloud_status_messages_total") == 1
    age0 = value(m, "kj_cloud_station_status_age_seconds", station=A1)

    # time passes: the report ages, the case passes its deadline
    clock.advance(timedelta(days=5))
    m = scrape(live_api, grid.tokens["admin"])
    assert value(m, "kj_cloud_station_status_age_seconds", station=A1) == age0 + 5 * 86400
    assert value(m, "kj_cloud_cases_overdue", level="station") == 1
