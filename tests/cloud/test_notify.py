"""Notifications over real HTTP on 127.0.0.1: case events and risk alerts reach the channels of the units
concerned in each channel's documented format (signed webhook, 企业微信 and 钉钉 robots, SMS gateway); a receiver
that is down for a while gets every event once it is back, none twice; the audit shows every attempt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud import cases
from cloud.auth import user_for_token
from cloud.cases import NewResult
from cloud.clock import ManualClock
from cloud.db import Database
from cloud.notify import queue, sender, store
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, bearer

CN = ZoneInfo("Asia/Shanghai")


class Receiver:
    """An HTTP server on a fixed loopback port that can be stopped and started again (down / back)."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.answer = answer
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.got.append((self.path, dict(self.headers.items()), body))
                answer = json.dumps(owner.answer or {"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


def _positive(grid: Grid, db: Database, settings: Settings, station: str, n: int, now: Any) -> int:
    case_id = cases.on_result(
        db,
        NewResult(
            id=f"00000000-0000-7000-8000-{n:012d}",
            station=station,
            node_id=int(db.execute("SELECT node_id FROM stations WHERE id = ?", [station]).fetchone()[0]),
            product="韭菜",
            analyte="carbofuran",
            verdict="positive",
            measured_at=now,
            sample_id=f"S{n}",
        ),
        settings,
        now,
    )
    assert case_id is not None
    return case_id


def test_receiver_down_gets_every_event_once_when_back(
    db: Database, grid: Grid, settings: Settings, receiver: Receiver
) -> None:
    village = user_for_token(db, grid.tokens["village_a"], T0)
    assert village is not None
    clock = ManualClock(T0)
    channel = store.add_channel(
        db, village, clock.now(), name="村网格群", kind="webhook", url=receiver.url, secret="s3cret"
    )
    # A case at a station of this village, and one in another town (not this channel's business).
    mine = _positive(grid, db, settings, "370214101203-01", 1, clock.now())
    _positive(grid, db, settings, "370214102001-01", 2, clock.now())
    assert queue.fan_out(db, clock.now(), CN) == 1  # the 'report' of case `mine`
    # Receiver down: the attempt fails and the row stays pending.
    report = sender.deliver_due(db, clock.now(), timeout=2)
    assert report.sent == 0
    assert report.failed == 1
    # More events while it is down: a reminder and an escalation by the scheduler.
    clock.advance(timedelta(hours=30))
    cases.tick(db, clock.now(), settings)
    queue.fan_out(db, clock.now(), CN)
    sender.deliver_due(db, clock.now(), timeout=2)
    pending = db.execute("SELECT COUNT(*) FROM notifications WHERE status = 'pending'").fetchone()[0]
    assert pending >= 2
    receiver.start()
    # Backoff: nothing is due a second after the failure; an hour later everything is.
    assert sender.deliver_due(db, clock.now() + timedelta(seconds=1)).sent == 0
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        sender.deliver_due(db, clock.now())
    queue.fan_out(db, clock.now(), CN)
    assert sender.deliver_due(db, clock.now()).sent == 0  # nothing new, nothing repeated
    keys = [h["X-Kuaijian-Event"] for _p, h, _b in receiver.got]
    assert len(keys) == len(set(keys)) == pending, keys
    expected = {
        f"case-action:{a}"
        for (a,) in db.execute("SELECT id FROM case_actions WHERE case_id = ? ORDER BY id", [mine]).fetchall()
    }
    assert set(keys) == expected
    for _path, headers, body in receiver.got:
        mac = hmac.new(b"s3cret", headers["X-Kuaijian-Timestamp"].encode() + b"." + body, hashlib.sha256)
        assert headers["X-Kuaijian-Signature"] == f"sha256={mac.hexdigest()}"
        doc = json.loads(body)
        assert doc["data"]["case_id"] == mine
        assert doc["title"].startswith("【快检】案件")
    log = db.execute(
        "SELECT status, attempts FROM notifications WHERE channel_id = ? ORDER BY id", [channel["id"]]
    ).fetchall()
    assert all(s == "sent" for s, _ in log)
    assert log[0][1] >= 2


def test_robot_and_sms_formats(db: Database, grid: Grid, settings: Settings, receiver: Receiver) -> None:
    receiver.answer = {"errcode": 0, "errmsg": "ok"}
    receiver.start()
    town = user_for_token(db, grid.tokens["town_a"], T0)
    assert town is not None
    now = T0
    store.add_channel(db, town, now, name="企业微信群", kind="wecom", url=receiver.url + "?key=abc")
    store.add_channel(
        db, town, now, name="钉钉群", kind="dingtalk", url=receiver.url + "?access_token=t", secret="SEC"
    )
    store.add_channel(
        db, town, now, name="短信", kind="sms", url=receiver.url, secret="tok", phones=["13800000001"]
    )
    _positive(grid, db, settings, "370214101204-01", 3, now)
    assert queue.fan_out(db, now, CN) == 3
    assert sender.deliver_due(db, now).sent == 3
    by_path = {
        urllib.parse.urlsplit(p).query.split("=")[0] if "?" in p else "": (p, h, b)
        for p, h, b in receiver.got
    }
    wecom = json.loads(by_path["key"][2])
    assert wecom["msgtype"] == "markdown"
    assert "案件" in wecom["markdown"]["content"]
    path, _h, body = by_path["access_token"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    ts = query["timestamp"][0]
    sign = base64.b64encode(hmac.new(b"SEC", f"{ts}\nSEC".encode(), hashlib.sha256).digest()).decode()
    assert query["sign"][0] == sign
    assert json.loads(body)["markdown"]["title"].startswith("【快检】")
    _p, headers, body = by_path[""]
    assert headers["Authorization"] == "Bearer tok"
    assert json.loads(body)["phones"] == ["13800000001"]


def test_robot_errcode_is_a_failure(db: Database, grid: Grid, settings: Settings, receiver: Receiver) -> None:
    receiver.answer = {"errcode": 310000, "errmsg": "sign not match"}
    receiver.start()
    town = user_for_token(db, grid.tokens["town_a"], T0)
    assert town is not None
    store.add_channel(db, town, T0, name="钉钉群", kind="dingtalk", url=receiver.url + "?access_token=t")
    _positive(grid, db, settings, "370214101204-01", 4, T0)
    queue.fan_out(db, T0, CN)
    report = sender.deliver_due(db, T0)
    assert report.sent == 0
    assert "310000" in report.errors[0]
    row = db.execute("SELECT status, last_status, last_error FROM notifications").fetchone()
    assert row[0] == "pending"
    assert row[1] == 200
    assert "310000" in row[2]


def test_channels_api_is_scoped_and_validates(api: Any, grid: Grid) -> None:
    town = bearer(grid.tokens["town_a"])
    bad = api.post(
        "/api/notify/channels",
        headers=town,
        json={"name": "x", "kind": "webhook", "url": "file:///etc/passwd"},
    )
    assert bad.status_code == 422
    other = api.post(
        "/api/notify/channels",
        headers=town,
        json={"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/h", "node": "370214102"},
    )
    assert other.status_code == 404  # another town's unit
    sms = api.post(
        "/api/notify/channels", headers=town, json={"name": "x", "kind": "sms", "url": "http://127.0.0.1:9/"}
    )
    assert sms.status_code == 422
    ok = api.post(
        "/api/notify/channels",
        headers=town,
        json={
            "name": "街道群",
            "kind": "wecom",
            "url": "http://127.0.0.1:9/send?key=k",
            "secret": "x",
            "events": ["escalate", "risk"],
        },
    )
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["has_secret"] is True
    assert "secret" not in body
    assert body["events"] == ["escalate", "risk"]
    assert [c["id"] for c in api.get("/api/notify/channels", headers=town).json()["items"]] == [body["id"]]
    assert api.get("/api/notify/channels", headers=bearer(grid.tokens["town_b"])).json()["items"] == []
    assert (
        api.delete(f"/api/notify/channels/{body['id']}", headers=bearer(grid.tokens["town_b"])).status_code
        == 404
    )
    assert api.delete(f"/api/notify/channels/{body['id']}", headers=town).status_code == 204
    assert api.get("/api/notify/channels", headers=town).json()["items"] == []
