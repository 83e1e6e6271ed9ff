"""Producers (生产主体): identity validation, CSV/Excel import with per-row errors, scope, config push."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cloud import configs, producers
from cloud.auth import User
from cloud.cli import register as _unused_register  # noqa: F401 - the CLI module imports cleanly
from cloud.db import Database
from cloud.errors import Invalid
from cloud.settings import Settings
from kuaijian.cli import main
from kuaijian_schema import StationConfig
from tests.cloud.factories import T0, Grid, bearer

# Real-format codes: check characters computed per GB 32100-2015 / GB 11643-1999.
USCC_OK = "91370214MA3C5XQ12L"
COOP_OK = "93370214MA3N1X9K2N"
ID_OK = "11010519491231002X"

CSV_TEXT = (
    "类型,名称,代码,村,联系人,电话,品种,地块\n"
    f"合作社,青岛南万蔬菜专业合作社,{COOP_OK},370214101203,王建国,13800000011,韭菜;豇豆,东片1号;东片2号\n"
    f"个人,李桂兰,{ID_OK},370214101203,李桂兰,13800000012,草莓,大棚3号\n"
    "企业,坏代码农业公司,91370214MA3C5XQ12A,370214101203,,,芹菜,\n"
    f"家庭农场,东程家庭农场,{USCC_OK},370214102001,褚英,,芹菜,北地\n"
)


def _admin() -> User:
    return User(id=0, name="t", role="admin", node_id=None, node_code=None, node_path="/")


def test_credit_code_and_id_number_check_characters() -> None:
    assert producers.uscc_valid(USCC_OK)
    assert producers.uscc_valid(COOP_OK)
    assert not producers.uscc_valid(USCC_OK[:-1] + "E")  # wrong check character
    assert not producers.uscc_valid(USCC_OK[:-1])  # 17 characters
    assert not producers.uscc_valid("91370214MA3C5XQ1IL")  # I is not in the GB 32100 alphabet
    assert producers.id_number_valid(ID_OK)
    assert not producers.id_number_valid("110105194912310021")
    with pytest.raises(Invalid, match="统一社会信用代码无效"):
        producers.check_identity("企业", "91370214MA3C5XQ12A")
    with pytest.raises(Invalid, match="身份证号无效"):
        producers.check_identity("个人", USCC_OK)


def test_import_reports_bad_rows_and_stores_good_ones_whole(db: Database, grid: Grid) -> None:
    rows = producers.parse_table(CSV_TEXT.encode(), "p.csv")
    report = producers.import_rows(db, _admin(), rows, T0)
    assert (report.created, report.updated) == (3, 0)
    assert [(e.row, "统一社会信用代码无效" in e.error) for e in report.errors] == [(4, True)]
    assert db.execute("SELECT COUNT(*) FROM producers WHERE name = '坏代码农业公司'").fetchone()[0] == 0
    again = producers.import_rows(db, _admin(), rows, T0)
    assert (again.created, again.updated) == (0, 3)  # upsert by code, no duplicates


def test_xlsx_import(db: Database, grid: Grid) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for line in CSV_TEXT.splitlines():
        sheet.append(line.split(","))
    buf = io.BytesIO()
    book.save(buf)
    report = producers.import_rows(db, _admin(), producers.parse_table(buf.getvalue(), "p.xlsx"), T0)
    assert report.created == 3
    assert [e.row for e in report.errors] == [4]


def test_scope_and_api(api: Any, grid: Grid) -> None:
    r = api.post(
        "/api/producers/import",
        params={"filename": "p.csv"},
        content=CSV_TEXT.encode(),
        headers=bearer(grid.tokens["town_a"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # town_a (棘洪滩) may not add a producer in 东程社区 (上马街道): a row error, not stored
    assert body["created"] == 2
    assert sorted(e["row"] for e in body["errors"]) == [4, 5]
    assert "370214101203-01" in body["stations_pushed"]
    seen_a = api.get("/api/producers", headers=bearer(grid.tokens["town_a"])).json()
    assert {p["name"] for p in seen_a["items"]} == {"青岛南万蔬菜专业合作社", "李桂兰"}
    person = next(p for p in seen_a["items"] if p["kind"] == "个人")
    assert ID_OK not in json.dumps(person)  # an individual's ID number is masked
    assert api.get("/api/producers", headers=bearer(grid.tokens["town_b"])).json()["total"] == 0
    assert (
        api.get(f"/api/producers/{person['ref']}", headers=bearer(grid.tokens["town_b"])).status_code == 404
    )
    bad = api.post(
        "/api/producers",
        json={"kind": "企业", "name": "X", "code": "123", "village": "370214101203"},
        headers=bearer(grid.tokens["town_a"]),
    )
    assert bad.status_code == 422
    assert "统一社会信用代码无效" in bad.json()["detail"]
    assert api.get("/api/producers", headers=bearer(grid.tokens["station_a"])).json()["total"] == 2
    denied = api.post(
        "/api/producers",
        json={"kind": "企业", "name": "X", "code": USCC_OK, "village": "370214101203"},
        headers=bearer(grid.tokens["station_a"]),
    )
    assert denied.status_code == 403


def test_station_config_carries_its_village_producers_and_keeps_kits(db: Database, grid: Grid) -> None:
    from kuaijian_schema.kits import DEMO_KITS

    kit = next(iter(DEMO_KITS.values()))
    configs.push_config(db, _admin(), "370214", [kit], [], T0)
    report = producers.import_rows(db, _admin(), producers.parse_table(CSV_TEXT.encode(), "p.csv"), T0)
    pushed = configs.push_producers(db, report.villages, "t", T0)
    assert set(pushed) == {"370214101203-01", "370214101203-02", "370214102001-01"}
    doc = db.execute(
        "SELECT payload_json FROM configs WHERE station = '370214101203-01' ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    cfg = StationConfig.model_validate_json(doc)
    assert [p.name for p in cfg.producers] == ["青岛南万蔬菜专业合作社", "李桂兰"]
    assert cfg.producers[0].products == ("韭菜", "豇豆")
    assert [k.name for k in cfg.gold_kits] == [kit.name]  # the producer push kept the kits
    assert ID_OK not in doc  # ID numbers never leave the cloud
    # a later kit push keeps the producers
    configs.push_config(db, _admin(), "370214101203-01", [kit], [], T0)
    doc = db.execute(
        "SELECT payload_json FROM configs WHERE station = '370214101203-01' ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    assert len(StationConfig.model_validate_json(doc).producers) == 2


def test_cli_import_and_list(
    tmp_path: Path, settings: Settings, db: Database, grid: Grid, capsys: Any
) -> None:
    path = tmp_path / "producers.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    dbfile = settings.database
    assert main(["cloud", "producers", "import", "--db", dbfile, str(path)]) == 2  # one bad row
    out = capsys.readouterr()
    assert "3 新建 created" in out.out
    assert "第 4 行" in out.err
    assert main(["cloud", "producers", "list", "--db", dbfile, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 3
