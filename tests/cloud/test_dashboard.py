"""Dashboard data endpoint and the SSE live feed (real uvicorn on 127.0.0.1, real SQLite).

The overview is checked figure by figure against independent computations over the generated dataset of
test_reports; the live feed is checked for scoping, resume (after / Last-Event-ID), early wake-up through
the hub, and prompt shutdown with a stream still open."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from cloud.app import create_app
from cloud.auth import create_user
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.live import hub_for
from cloud.settings import Settings, db_setting
from tests.cloud.engines import Databases
from tests.cloud.test_reports import (
    NOW,
    Dataset,
    api_client,
    build_dataset,
    expect_counts,
    local_day,
    results_in,
)
from tests.helpers import free_port, wait_for


@contextmanager
def running_app(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL.

    Stopping closes the live hub first (so open SSE streams end), then asks uvicorn to exit, and fails
    the test if the server does not stop within 10 s."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 15, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        hub_for(app).close()
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture(scope="module")
def dataset(module_dbs: Databases) -> Dataset:
    ds = build_dataset(module_dbs.new(), seed=7, n_results=500)
    db = open_db(ds.db)
    try:  # station status as ingest records it: one online with a backlog, one offline, the rest unknown
        db.execute(
            "UPDATE stations SET online = 1, backlog = 17, last_seen = ?, status_at = ? WHERE id = ?",
            [NOW.isoformat(), NOW.isoformat(), "370214101201-01"],
        )
        db.execute(
            "UPDATE stations SET online = 0, backlog = 0, last_seen = ?, status_at = ? WHERE id = ?",
            [(NOW - timedelta(hours=5)).isoformat(), NOW.isoformat(), "370214102201-01"],
        )
    finally:
        db.close()
    return ds


@pytest.fixture(scope="module")
def tokens(dataset: Dataset) -> dict[str, str]:
    db = open_db(dataset.db)
    try:
        return {
            "admin": create_user(db, "admin", "admin", None, NOW),
            "county": create_user(db, "cy", "county", "370214", NOW),
            "town": create_user(db, "lt", "town", "370214101", NOW),
        }
    finally:
        db.close()


def _settings(ds: Dataset) -> Settings:
    return Settings(**db_setting(ds.db), broker_url=None, scheduler_enabled=False, ingest_enabled=False)


@pytest.fixture
def client(dataset: Dataset, tokens: dict[str, str]) -> Iterator[Any]:
    with api_client(create_app(_settings(dataset), clock=ManualClock(NOW))) as tc:
        yield tc


def _get(tc: Any, token: str, path: str, **params: Any) -> Any:
    return tc.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_page_and_assets_are_served_locally(client: Any) -> None:
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/dashboard/app.js"' in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text  # no CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        resp = client.get(f"/dashboard/{name}")
        assert resp.status_code == 200
        assert kind in resp.headers["content-type"]
    assert client.get("/dashboard/../cloud.db").status_code == 404
    assert client.get("/dashboard/secrets.txt").status_code == 404


def test_overview_figures(client: Any, dataset: Dataset, tokens: dict[str, str]) -> None:
    resp = _get(client, tokens["county"], "/api/dashboard/overview", days=14)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    today = local_day(NOW)
    first = today - timedelta(days=13)
    assert doc["window"] == {"from": first.isoformat(), "to": today.isoformat(), "days": 14}
    assert doc["node"]["id"] == "370214"
    assert [p["id"] for p in doc["path"]] == ["370214"]  # a county officer does not see above its county
    expected = expect_counts(results_in(dataset, "370214", first, today))
    assert {k: doc["totals"][k] for k in ("tests", "valid", "positives", "suspects", "positive_rate")} == {
        k: expected[k] for k in ("tests", "valid", "positives", "suspects", "positive_rate")
    }
    stations = dataset.stations_under("370214")
    assert doc["totals"]["stations_total"] == len(stations)
    assert doc["totals"]["stations_online"] == 1
    # drill-down children: the county's towns with their own figures
    assert [c["id"] for c in doc["children"]] == ["370214101", "370214102"]
    for child in doc["children"]:
        exp = expect_counts(results_in(dataset, child["id"], first, today))
        assert (child["tests"], child["positives"], child["positive_rate"]) == (
            exp["tests"],
            exp["positives"],
            exp["positive_rate"],
        )
        assert child["stations_total"] == len(dataset.stations_under(child["id"]))
    # station tiles grouped by town, with state and backlog
    tiles = {t["id"]: t for t in doc["stations"]}
    assert set(tiles) == stations
    assert tiles["370214101201-01"]["state"] == "online"
    assert tiles["370214101201-01"]["outbox_depth"] == 17
    assert tiles["370214101201-01"]["group_name"] == "流亭街道"
    assert tiles["370214102201-01"]["state"] == "offline"
    assert tiles["370214101202-01"]["state"] == "unknown"
    # open cases, soonest deadline first, overdue flagged at NOW
    open_cases = [c for c in dataset.cases if c["station"] in stations and c["closed"] is None]
    assert doc["totals"]["open_cases"] == len(open_cases) > 0
    assert doc["totals"]["overdue_cases"] == sum(c["deadline_dt"] < NOW for c in open_cases)
    assert [c["overdue"] for c in doc["cases"]] == [
        c["deadline_dt"] < NOW for c in sorted(open_cases, key=lambda c: c["deadline_dt"])
    ]
    # charts
    assert sum(d["tests"] for d in doc["per_day"]) == expected["tests"]
    assert len(doc["per_day"]) == 14
    assert {a["analyte"]: a["positives"] for a in doc["by_analyte"]} == {
        a: expect_counts([r for r in results_in(dataset, "370214", first, today) if r["analyte"] == a])[
            "positives"
        ]
        for a in {r["analyte"] for r in results_in(dataset, "370214", first, today)}
    }
    # recent feed: newest first, only this county
    county_results = [r for r in dataset.results if r["station"] in stations]
    assert [r["id"] for r in doc["recent"]] == [r["id"] for r in county_results[::-1][:30]]
    assert doc["cursor"] == len(dataset.results)


def test_overview_is_scoped(client: Any, tokens: dict[str, str]) -> None:
    assert client.get("/api/dashboard/overview").status_code == 401
    own = _get(client, tokens["town"], "/api/dashboard/overview").json()
    assert own["node"]["id"] == "370214101"
    assert {r["station"][:9] for r in own["recent"]} == {"370214101"}
    for node in ("370214102", "370214", "370215", "nope"):
        assert _get(client, tokens["town"], "/api/dashboard/overview", node=node).status_code == 404
    admin = _get(client, tokens["admin"], "/api/dashboard/overview", node="370214101201").json()
    assert [p["level"] for p in admin["path"]] == ["all", "county", "town", "village"]
    everything = _get(client, tokens["admin"], "/api/dashboard/overview").json()
    assert [c["id"] for c in everything["children"]] == ["370214", "370215"]


# ------------------------------------------------------------------ live feed


def _insert_result(target: str, station: str, verdict: str = "positive") -> str:
    db = open_db(target)
    try:
        node_id = db.execute("SELECT node_id FROM stations WHERE id = ?", [station]).fetchone()[0]
        rid = str(uuid.uuid4())
        seq = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM results WHERE station = ?", [station]
        ).fetchone()[0]
        db.execute(
            """INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model,
               instrument_driver, sample_id, product, method, analyte, channel, measured_at, verdict,
               values_json, qc_json, algorithm, config_version, sig, received_at)
               VALUES (?, ?, ?, ?, 'GR-1', 'KJ-G100', 'gold', 'S-live', '菠菜', 'gold', '毒死蜱', 0, ?, ?,
                       '{}', '[]', 'gold/1', 'v1', ?, ?)""",
            [rid, seq, station, node_id, NOW.isoformat(), verdict, "0" * 64, NOW.isoformat()],
        )
        return rid
    finally:
        db.close()


def _max_rowid(target: str) -> int:
    db = open_db(target)
    try:
        return int(db.execute("SELECT MAX(rowid) FROM results").fetchone()[0])
    finally:
        db.close()


class SseReader:
    """Reads SSE events from a streaming httpx response in a thread (so the test never blocks)."""

    def __init__(self, client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, str]] = []
        self.status: int | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._client, self._url, self._headers = client, url, headers or {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url, headers=self._headers) as resp:
                self.status = resp.status_code
                event: dict[str, str] = {}
                for line in resp.iter_lines():
                    if not line:
                        if event:
                            with self._lock:
                                self.events.append(event)
                            event = {}
                        continue
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    event[key] = value.lstrip(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.done.set()

    def results(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                json.loads(e["data"]) | {"_id": e.get("id")}
                for e in self.events
                if e.get("event") == "result"
            ]

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def test_live_feed_scoped_resumable_and_stops_promptly(dataset: Dataset, tokens: dict[str, str]) -> None:
    app = create_app(_settings(dataset), clock=ManualClock(NOW))
    with running_app(app) as base, httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
        assert http.get("/api/live", params={"token": "kjc_wrong"}).status_code == 401
        assert http.get("/api/live").status_code == 401
        other = http.get("/api/live", params={"token": tokens["town"], "node": "370214102"})
        assert other.status_code == 404
        cursor = _max_rowid(dataset.db)
        elsewhere = _insert_result(dataset.db, "370214102201-01")
        mine = _insert_result(dataset.db, "370214101201-02")
        reader = SseReader(http, f"/api/live?token={tokens['town']}&after={cursor}")
        wait_for(lambda: reader.results(), 10, "no result event on the live feed")
        assert reader.status == 200
        assert [r["id"] for r in reader.results()] == [mine]  # the other town's result is not sent
        assert reader.results()[0]["station_name"] == "东流亭村 02号站"
        # a notify() from ingest wakes the stream at once (well inside the 1 s poll interval)
        later = _insert_result(dataset.db, "370214101202-01", verdict="negative")
        t0 = time.monotonic()
        hub_for(app).notify()
        wait_for(lambda: len(reader.results()) == 2, 10, "second result not delivered")
        assert time.monotonic() - t0 < 0.9
        assert reader.results()[1]["id"] == later
        # EventSource reconnects with Last-Event-ID: resume exactly after it
        first_rowid = reader.results()[0]["_id"]
        resumed = SseReader(http, f"/api/live?token={tokens['town']}", headers={"Last-Event-ID": first_rowid})
        wait_for(lambda: resumed.results(), 10, "resumed stream sent nothing")
        assert [r["id"] for r in resumed.results()] == [later]
        assert elsewhere not in {r["id"] for r in reader.results() + resumed.results()}
        # the streams are still open here; leaving the block stops the server, which must end them promptly
        t_stop = time.monotonic()
    assert reader.join(5)
    assert resumed.join(5)
    assert time.monotonic() - t_stop < 5


def test_today_window_default(client: Any, tokens: dict[str, str]) -> None:
    doc = _get(client, tokens["admin"], "/api/dashboard/overview").json()
    assert doc["window"]["days"] == 14
    assert doc["window"]["to"] == date(2026, 11, 25).isoformat()


def test_station_user_sees_only_its_station(client: Any, dataset: Dataset) -> None:
    db = open_db(dataset.db)
    try:
        token = create_user(db, "st01", "station", "370214101201-01", NOW)
    finally:
        db.close()
    doc = _get(client, token, "/api/dashboard/overview").json()
    assert doc["node"]["id"] == "370214101201-01"
    assert doc["children"] == []
    assert [s["id"] for s in doc["stations"]] == ["370214101201-01"]
    assert {r["station"] for r in doc["recent"]} == {"370214101201-01"}
    assert _get(client, token, "/api/dashboard/overview", node="370214101201-02").status_code == 404


def test_live_hub_wakes_from_threads_and_closes() -> None:
    """notify() from many threads wakes every subscriber; close() ends waiting and later subscribers."""
    import asyncio

    from cloud.live import LiveHub

    hub = LiveHub()

    async def scenario() -> None:
        async with hub.subscribe() as a, hub.subscribe() as b:
            assert hub.subscriber_count == 2
            assert not await a.wait(0.01)  # nothing yet: times out
            threads = [threading.Thread(target=hub.notify) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert await a.wait(2)
            assert await b.wait(2)
            waiter = asyncio.create_task(a.wait(30))
            await asyncio.sleep(0)
            threading.Thread(target=hub.close).start()
            assert await asyncio.wait_for(waiter, 5)
            assert a.closed
            assert b.closed
        assert hub.subscriber_count == 0
        async with hub.subscribe() as late:
            assert late.closed

    asyncio.run(scenario())


def test_station_map_groups_by_town_then_village(
    client: Any, dataset: Dataset, tokens: dict[str, str]
) -> None:
    """The whole-grid (admin) and county views show one box per town; a town view one box per village."""

    def groups(token: str, **params: Any) -> dict[str, str | None]:
        resp = _get(client, token, "/api/dashboard/overview", **params)
        assert resp.status_code == 200, resp.text
        return {t["id"]: t["group_id"] for t in resp.json()["stations"]}

    everything = groups(tokens["admin"])
    assert everything, "the dataset has stations"
    assert all(g == sid[:9] for sid, g in everything.items())  # town code = first 9 digits
    assert groups(tokens["county"]) == {s: g for s, g in everything.items() if s.startswith("370214")}
    town = groups(tokens["town"])
    assert town
    assert all(g == sid[:12] for sid, g in town.items())  # village code = first 12 digits
