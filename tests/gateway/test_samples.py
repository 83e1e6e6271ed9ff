"""Sample registration at the station: the desk, the local page (real HTTP, uvicorn) and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.errors import DuplicateCode, RegistrationError
from gateway.outbox import Outbox
from gateway.samples import SampleDesk, SampleForm
from gateway.web import WebServer
from kuaijian.cli import main
from kuaijian_schema import SampleRegistration, StationConfig, verify_payload
from kuaijian_schema.wire import ProducerInfo, hmac_signer
from tests.gateway.conftest import KEY_BYTES, STATION, write_station
from tests.helpers import free_port

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
COOP = ProducerInfo(
    ref="P1", kind="合作社", name="南万蔬菜专业合作社", village="370214101203", products=("韭菜",)
)


def _config(*producers: ProducerInfo) -> dict[str, object]:
    return StationConfig(version="7", issued_at=NOW, producers=producers).model_dump(mode="json")


def _desk(box: Outbox) -> SampleDesk:
    return SampleDesk(STATION, box, hmac_signer(KEY_BYTES), clock=lambda: NOW)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox.open(tmp_path / "outbox.db")
    outbox.store_config("7", _config(COOP))
    try:
        yield outbox
    finally:
        outbox.close()


def _form(**over: object) -> SampleForm:
    base: dict[str, object] = {
        "producer": "P1",
        "product": "韭菜",
        "batch": "2026-12-01-A",
        "quantity_kg": 300.0,
        "sampler": "张三",
    }
    base.update(over)
    return SampleForm(**base)  # type: ignore[arg-type]


def test_registration_goes_through_the_outbox_signed_with_the_next_seq(box: Outbox) -> None:
    desk = _desk(box)
    doc = desk.register(_form(plot="东片1号"))
    assert doc["code"] == "26120101"  # local (Asia/Shanghai) date + number of the day
    assert desk.register(_form())["code"] == "26120102"
    reg = SampleRegistration.model_validate(doc)
    assert verify_payload(doc, KEY_BYTES)
    assert reg.producer_name == "南万蔬菜专业合作社"
    assert reg.seq == 1
    assert box.stats().depth == 2  # queued for delivery like results
    payload = json.loads(box.payloads([1])[1])
    assert payload == doc
    assert [r["delivered"] for r in desk.recent()] == [False, False]
    box.ack(ids=[doc["id"]])
    assert [r["delivered"] for r in desk.recent()] == [False, True]


def test_bad_registrations_are_refused_and_nothing_is_stored(box: Outbox) -> None:
    desk = _desk(box)
    desk.register(_form(code="A001"))
    with pytest.raises(DuplicateCode, match="已被登记"):
        desk.register(_form(code="A001"))
    with pytest.raises(RegistrationError, match="不是本村已登记的生产主体"):
        desk.register(_form(producer="P2"))  # another village's producer is not in this station's list
    with pytest.raises(RegistrationError, match="原样品"):
        desk.register(_form(retest_of="ZZZZ"))
    with pytest.raises(RegistrationError, match="invalid fields"):
        desk.register(_form(quantity_kg=-1.0))
    assert box.stats().depth == 1
    assert box.stats().last_seq == 1  # no seq consumed by a refusal
    assert desk.register(_form(retest_of="A001"))["retest_of"] == "A001"


def test_local_page_registers_and_shows_the_label(box: Outbox) -> None:
    web = WebServer(_desk(box), "127.0.0.1", 0)
    web.start()
    try:
        base = f"http://127.0.0.1:{web.port}"
        with httpx.Client(base_url=base, follow_redirects=False) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert "抽样登记" in page.text
            assert "南万蔬菜专业合作社" in page.text
            assert "<script" not in page.text
            assert "script-src" not in page.headers["content-security-policy"]
            assert 'name="viewport"' in page.text
            form = {
                "producer": "P1",
                "product": "韭菜",
                "batch": "B1",
                "quantity_kg": "120",
                "sampler": "李四",
            }
            posted = client.post("/samples", data=form)
            assert posted.status_code == 303
            label = client.get(posted.headers["location"])
            code = re.search(r'id="code">([0-9A-Z]+)<', label.text)
            assert code is not None
            assert "<svg" in label.text
            assert "待上传" in label.text
            bad = client.post("/samples", data={**form, "producer": "P9"})
            assert bad.status_code == 422
            assert "不是本村已登记的生产主体" in bad.text
            assert client.get("/static/station.css").status_code == 200
    finally:
        web.stop()
    assert [r["code"] for r in box.registrations()] == [code.group(1)]


def test_cli_register_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_station(tmp_path, free_port(), [])
    (tmp_path / "data").mkdir()
    with Outbox.open(tmp_path / "data" / "outbox.db") as outbox:
        outbox.store_config("7", _config(COOP))
    args = ["gateway", "sample", "register", "--config", str(cfg), "--producer", "P1", "--product", "韭菜",
            "--batch", "B1", "--quantity-kg", "50", "--sampler", "张三", "--code", "K100"]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == "K100"
    assert main(args) == 2
    assert "已被登记" in capsys.readouterr().err
    assert main(["gateway", "sample", "list", "--config", str(cfg)]) == 0
    assert "K100" in capsys.readouterr().out
    assert main(["gateway", "sample", "producers", "--config", str(cfg)]) == 0
    assert "P1" in capsys.readouterr().out


def test_page_shows_the_stations_tasks_with_local_registrations(box: Outbox) -> None:
    from datetime import date

    from kuaijian_schema import TaskInfo

    task = TaskInfo(
        id=3,
        title="韭菜克百威专项",
        start=date(2026, 12, 1),
        due=date(2026, 12, 7),
        target=10,
        products=("韭菜",),
        analytes=("carbofuran",),
        unit="南万社区",
        shared=True,
    )
    doc = StationConfig(version="8", issued_at=NOW, producers=(COOP,), tasks=(task,)).model_dump(mode="json")
    box.store_config("8", doc)
    desk = _desk(box)
    desk.register(_form())
    desk.register(_form())
    desk.register(_form(product="芹菜"))  # not a product of the task
    assert [(t.id, n) for t, n in desk.tasks()] == [(3, 2)]
    web = WebServer(desk, "127.0.0.1", 0)
    web.start()
    try:
        page = httpx.get(f"http://127.0.0.1:{web.port}/").text
    finally:
        web.stop()
    assert "抽检任务" in page
    assert "韭菜克百威专项" in page
    assert "本站已登记 registered here 2 · 目标 target 10" in page
