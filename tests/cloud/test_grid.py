"""Grid CSV import, subtree paths, fleet enrolment, users, settings, pending configs, SQLite pragmas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloud.auth import create_user, user_for_token
from cloud.db import Database, open_db
from cloud.enrol import enrol_fleet
from cloud.errors import Conflict, GridImportError, Invalid, NotFound, Unauthenticated
from cloud.grid import children, import_grid_csv, node_by_code, subtree
from tests.cloud.factories import GRID_CSV, T0


def test_import_builds_paths_and_people(db: Database) -> None:
    report = import_grid_csv(db, "\ufeff" + GRID_CSV)  # Excel's BOM is accepted
    assert (report.created, report.updated) == (6, 0)
    county = node_by_code(db, "370214")
    town = node_by_code(db, "370214101")
    village = node_by_code(db, "370214101203")
    assert county is not None
    assert town is not None
    assert village is not None
    assert village.path == f"/{county.id}/{town.id}/{village.id}/"
    assert town.grid_head == "王强 13800000001"
    assert town.co_manager == "钱军"
    assert [n.code for n in subtree(db, town.path)] == ["370214101", "370214101203", "370214101204"]
    assert [n.code for n in children(db, None)] == ["370214"]


def test_reimport_updates_and_moves_subtree(db: Database) -> None:
    import_grid_csv(db, GRID_CSV)
    moved = (
        "level,code,name,parent_code,grid_head\n"
        "village,370214101204,北万社区(新),370214102,新网格长\n"  # moved from town 101 to town 102
    )
    report = import_grid_csv(db, moved)
    assert (report.created, report.updated) == (0, 1)
    village = node_by_code(db, "370214101204")
    new_town = node_by_code(db, "370214102")
    assert village is not None
    assert new_town is not None
    assert village.path.startswith(new_town.path)
    assert village.name == "北万社区(新)"
    assert village.grid_head == "新网格长"


def test_rows_in_any_order(db: Database) -> None:
    lines = GRID_CSV.strip().splitlines()
    import_grid_csv(db, "\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    assert len(subtree(db, "/")) == 6


@pytest.mark.parametrize(
    ("csv_text", "line", "message"),
    [
        ("level,code,name\ncounty,1,x\n", 1, "missing column(s): parent_code"),
        ("level,code,name,parent_code\nprovince,37,山东,\n", 2, "level must be one of"),
        ("level,code,name,parent_code\ncounty,370214,x,\ntown,370214101,y,\n", 3, "needs a parent county"),
        ("level,code,name,parent_code\ntown,370214101,y,999\n", 2, "parent '999' not found"),
        (
            "level,code,name,parent_code\ncounty,370214,x,\ntown,370214101,y,370214\nvillage,370214101203,z,370214\n",
            4,
            "parent of a village must be a town",
        ),
        (
            "level,code,name,parent_code\ncounty,370214,x,\ntown,370214101,y,370214\n"
            "village,370214101203,z,370214101\nstation,370214101999-01,s,370214101203\n",
            5,
            "does not belong to village",
        ),
    ],
)
def test_bad_rows_name_the_line_and_import_nothing(
    db: Database, csv_text: str, line: int, message: str
) -> None:
    with pytest.raises(GridImportError, match=re.escape(message)) as err:
        import_grid_csv(db, csv_text)
    assert err.value.line == line
    assert subtree(db, "/") == []  # one transaction: all rows or none


def test_enrol_fleet_creates_nodes_and_uses_given_keys(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    ids = ["370214001001-01", "370214001002-01", "370214002001-01"]
    keys = [bytes([i]) * 32 for i in range(1, 4)]
    enrol_fleet(path, ids, keys)
    enrol_fleet(path, ids, [bytes([9]) * 32] * 3)  # re-enrolling replaces keys
    db = open_db(path)
    try:
        assert {r[0]: r[1] for r in db.execute("SELECT id, key FROM stations").fetchall()} == dict.fromkeys(
            ids, (bytes([9]) * 32).hex()
        )
        assert [n.level for n in subtree(db, "/")].count("town") == 2
    finally:
        db.close()
    with pytest.raises(Invalid):
        enrol_fleet(path, ["bad"], [b"k" * 32])


def test_users_roles_and_tokens(db: Database) -> None:
    import_grid_csv(db, GRID_CSV)
    token = create_user(db, "town", "town", "370214101", T0)
    user = user_for_token(db, token, T0)
    assert (user.role, user.node_code) == ("town", "370214101")
    with pytest.raises(Unauthenticated):
        user_for_token(db, token + "x", T0)
    assert db.execute("SELECT access_hash FROM tokens").fetchone()[0] != token  # only the hash is stored
    with pytest.raises(Conflict):
        create_user(db, "town", "town", "370214102", T0)
    with pytest.raises(Invalid, match="is a town, not a village"):
        create_user(db, "v", "village", "370214101", T0)
    with pytest.raises(NotFound):
        create_user(db, "v", "village", "999", T0)
    with pytest.raises(Invalid, match="not scoped"):
        create_user(db, "a", "admin", "370214", T0)
    with pytest.raises(Invalid, match="role must be"):
        create_user(db, "x", "mayor", "370214", T0)


def test_deadline_settings_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from cloud.settings import Settings

    monkeypatch.setenv("KJ_CLOUD_CASE_DEADLINE_HOURS", '{"station": 12}')
    assert Settings().case_deadline_hours == {"station": 12, "village": 24, "town": 48, "county": 72}
    monkeypatch.setenv("KJ_CLOUD_CASE_DEADLINE_HOURS", '{"province": 12}')
    with pytest.raises(ValidationError, match="unknown level"):
        Settings()
    monkeypatch.setenv("KJ_CLOUD_CASE_DEADLINE_HOURS", '{"town": 0}')
    with pytest.raises(ValidationError, match="positive"):
        Settings()


def test_pending_configs_published_latest_first_once_broker_is_back(db: Database) -> None:
    from cloud.auth import user_for_token
    from cloud.configs import publish_pending, push_config
    from tests.cloud.factories import build_grid

    grid = build_grid(db)
    admin = user_for_token(db, grid.tokens["admin"], T0)
    push_config(db, admin, "370214101203", [], [], T0)  # v1 → 2 stations
    push_config(db, admin, "370214101203-01", [], [], T0)  # v2 → 1 station

    class Broker:
        def __init__(self, up: bool) -> None:
            self.up = up
            self.sent: list[tuple[str, str]] = []

        def publish_retained(self, topic_name: str, payload: bytes, timeout: float) -> bool:
            if self.up:
                self.sent.append((topic_name, json.loads(payload)["version"]))
            return self.up

    down = Broker(up=False)
    assert publish_pending(db, down, T0) == 0
    up = Broker(up=True)
    assert publish_pending(db, up, T0) == 2
    assert sorted(up.sent) == [("kj/v1/370214101203-01/config", "2"), ("kj/v1/370214101203-02/config", "1")]
    assert db.execute("SELECT COUNT(*) FROM configs WHERE published_at IS NULL").fetchone()[0] == 0
    assert publish_pending(db, up, T0) == 0  # nothing left


def test_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    """Acks follow commits and gateways then delete their copies: commits must survive a power cut."""
    db = open_db(tmp_path / "d.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        db.close()
