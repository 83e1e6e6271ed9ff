"""Accounts: password logins with short-lived access tokens and refresh, logout, expiry and revocation that
take effect at once, lockout after repeated wrong passwords, administration by the level above, the audit
log, the `kuaijian cloud user` verbs and the migration of old tokens. Real SQLite, real argon2, the app over
its ASGI interface."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import accounts
from cloud.auth import hash_token
from cloud.clock import ManualClock
from cloud.db import Database, connect, migrate
from cloud.errors import DatabaseError
from cloud.settings import Settings
from kuaijian.cli import main as kuaijian_main
from tests.cloud.engines import Databases
from tests.cloud.factories import T0, Grid, bearer

PASSWORD = "zhen-hao-2024"


@pytest.fixture
def policy(settings: Settings) -> accounts.Policy:
    return accounts.Policy.from_settings(settings)


@pytest.fixture
def people(db: Database, grid: Grid, policy: accounts.Policy) -> dict[str, str]:
    """Password users on the factory grid: a town officer, a station technician (in that town) and the
    officer of the other town."""
    made = {"zhang_town": ("town", "370214101"), "li_station": ("station", "370214101203-01")}
    made["wang_town_b"] = ("town", "370214102")
    for name, (role, node) in made.items():
        accounts.add_user(db, None, name, role, node, PASSWORD, T0, policy)
    return {name: PASSWORD for name in made}


def _login(api: Any, name: str, password: str = PASSWORD) -> Any:
    return api.post("/api/auth/login", json={"username": name, "password": password})


def _audit(db: Database, target: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT action FROM audit_log WHERE target = ? ORDER BY id", [target])]


def test_login_gives_a_short_lived_token_scoped_to_the_users_node(
    api: Any, db: Database, people: dict[str, str]
) -> None:
    r = _login(api, "zhang_town")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["user"] == "zhang_town"
    assert doc["role"] == "town"
    assert doc["node"] == "370214101"
    assert doc["access_expires_at"] == (T0 + timedelta(minutes=15)).isoformat()
    assert doc["refresh_expires_at"] == (T0 + timedelta(hours=12)).isoformat()
    me = api.get("/api/me", headers=bearer(doc["access_token"]))
    assert me.json() == {"name": "zhang_town", "role": "town", "node_code": "370214101"}
    # only hashes are stored, the password as argon2id
    stored = db.execute("SELECT password_hash FROM users WHERE name = 'zhang_town'").fetchone()[0]
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    hashes = {r[0] for r in db.execute("SELECT access_hash FROM tokens")} | {
        r[0] for r in db.execute("SELECT refresh_hash FROM tokens WHERE refresh_hash IS NOT NULL")
    }
    assert hash_token(doc["access_token"]) in hashes
    assert doc["access_token"] not in hashes
    # scope: the town's stations only
    stations = api.get("/api/stations", headers=bearer(doc["access_token"])).json()
    ids = {s["id"] for s in (stations["items"] if isinstance(stations, dict) else stations)}
    assert ids
    assert all(s.startswith("370214101") for s in ids)
    assert _audit(db, "zhang_town") == ["user_add", "login"]


def test_wrong_password_n_times_locks_the_account_for_a_while(
    api: Any, db: Database, people: dict[str, str], clock: ManualClock
) -> None:
    for attempt in range(1, 5):
        r = _login(api, "li_station", "wrong-password")
        assert r.status_code == 401, (attempt, r.text)
        assert r.json()["code"] == "auth.bad_credentials"
    r = _login(api, "li_station", "wrong-password")  # the 5th failure locks
    assert r.status_code == 423
    assert r.json()["code"] == "auth.locked"
    # locked: even the right password is refused
    clock.advance(timedelta(minutes=14))
    r = _login(api, "li_station")
    assert r.status_code == 423
    assert r.json()["code"] == "auth.locked"
    # an unknown user answers exactly like a wrong password (no name oracle), and is never "locked"
    r = _login(api, "nobody", "whatever")
    assert r.status_code == 401
    assert r.json()["code"] == "auth.bad_credentials"
    clock.advance(timedelta(minutes=2))  # 16 minutes after the lock: open again
    assert _login(api, "li_station").status_code == 200
    assert _audit(db, "li_station") == ["user_add", *["login_failed"] * 5, "login_locked", "login"]
    # a success resets the count: four more failures do not lock
    for _ in range(4):
        assert _login(api, "li_station", "wrong").status_code == 401
    assert _login(api, "li_station").status_code == 200


def test_expired_access_token_gets_401_at_once_and_refresh_rotates(
    api: Any, people: dict[str, str], clock: ManualClock
) -> None:
    doc = _login(api, "li_station").json()
    headers = bearer(doc["access_token"])
    assert api.get("/api/me", headers=headers).status_code == 200
    clock.advance(timedelta(minutes=15))  # exactly the expiry
    r = api.get("/api/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "auth.expired"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert api.get("/api/dashboard/overview", headers=headers).status_code == 401
    fresh = api.post("/api/auth/refresh", json={"refresh_token": doc["refresh_token"]})
    assert fresh.status_code == 200, fresh.text
    assert api.get("/api/me", headers=bearer(fresh.json()["access_token"])).status_code == 200
    # the used refresh token is spent
    again = api.post("/api/auth/refresh", json={"refresh_token": doc["refresh_token"]})
    assert again.status_code == 401
    assert again.json()["code"] == "auth.revoked"
    # a refresh token past its 12 h is refused
    clock.advance(timedelta(hours=12))
    late = api.post("/api/auth/refresh", json={"refresh_token": fresh.json()["refresh_token"]})
    assert late.status_code == 401
    assert late.json()["code"] == "auth.expired"


def test_logout_and_revocation_take_effect_at_once(
    api: Any, db: Database, people: dict[str, str], grid: Grid
) -> None:
    doc = _login(api, "li_station").json()
    assert api.post("/api/auth/logout", headers=bearer(doc["access_token"])).status_code == 204
    r = api.get("/api/me", headers=bearer(doc["access_token"]))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.revoked"
    assert api.post("/api/auth/refresh", json={"refresh_token": doc["refresh_token"]}).status_code == 401
    # the town officer revokes the station technician: a live session dies on the next request
    town = _login(api, "zhang_town").json()["access_token"]
    station = _login(api, "li_station").json()["access_token"]
    assert api.get("/api/me", headers=bearer(station)).status_code == 200
    assert api.post("/api/users/li_station/revoke", headers=bearer(town)).status_code == 204
    r = api.get("/api/me", headers=bearer(station))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.revoked"
    assert _login(api, "li_station").status_code == 401  # and cannot log in again
    # machine tokens: revoking the factory's station_a user kills its token too
    assert api.get("/api/me", headers=bearer(grid.tokens["station_a"])).status_code == 200
    admin = bearer(grid.tokens["admin"])
    assert api.post("/api/users/station_a/revoke", headers=admin).status_code == 204
    assert api.get("/api/me", headers=bearer(grid.tokens["station_a"])).status_code == 401
    actions = [e["action"] for e in api.get("/api/audit", headers=admin).json()["items"]]
    assert actions[:3] == ["user_revoke", "login_failed", "user_revoke"]
    assert "logout" in actions


def test_machine_token_expires(api: Any, db: Database, grid: Grid, clock: ManualClock) -> None:
    headers = bearer(grid.tokens["county"])
    assert api.get("/api/me", headers=headers).status_code == 200
    clock.set(T0 + timedelta(days=365))
    r = api.get("/api/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "auth.expired"


def test_the_level_above_resets_a_password_a_peer_or_the_level_below_cannot(
    api: Any, db: Database, people: dict[str, str]
) -> None:
    town = bearer(_login(api, "zhang_town").json()["access_token"])
    other_town = bearer(_login(api, "wang_town_b").json()["access_token"])
    station_session = _login(api, "li_station").json()["access_token"]
    station = bearer(station_session)
    new = {"new_password": "xin-mima-5678"}
    # another town's officer does not see the station's user; the station cannot reset its town officer
    assert api.post("/api/users/li_station/password", headers=other_town, json=new).status_code == 404
    assert api.post("/api/users/zhang_town/password", headers=station, json=new).status_code == 404
    assert api.post("/api/users/wang_town_b/password", headers=town, json=new).status_code == 404
    r = api.post("/api/users/li_station/password", headers=town, json={"new_password": "short"})
    assert r.status_code == 422
    assert r.json()["code"] == "auth.password_short"
    assert api.post("/api/users/li_station/password", headers=town, json=new).status_code == 204
    assert api.get("/api/me", headers=station).status_code == 401  # its sessions ended
    assert _login(api, "li_station").status_code == 401
    assert _login(api, "li_station", "xin-mima-5678").status_code == 200
    # the town officer lists itself and the users below, not the other town's
    names = {u["name"] for u in api.get("/api/users", headers=town).json()}
    assert {"zhang_town", "li_station", "village_a", "station_a"} <= names
    assert not names & {"wang_town_b", "town_b", "county", "admin"}
    assert _audit(db, "li_station")[-3:] == ["password_reset", "login_failed", "login"]


def test_user_changes_own_password_and_adds_a_user_below(
    api: Any, db: Database, people: dict[str, str]
) -> None:
    town = bearer(_login(api, "zhang_town").json()["access_token"])
    bad = api.post(
        "/api/auth/password", headers=town, json={"old_password": "nope", "new_password": "abcdefgh1"}
    )
    assert bad.status_code == 401
    assert bad.json()["code"] == "auth.bad_credentials"
    ok = api.post(
        "/api/auth/password", headers=town, json={"old_password": PASSWORD, "new_password": "abcdefgh1"}
    )
    assert ok.status_code == 204
    assert api.get("/api/me", headers=town).status_code == 200  # this session stays
    assert _login(api, "zhang_town", "abcdefgh1").status_code == 200
    body = {"name": "zhao_village", "role": "village", "node": "370214101203", "password": "cun-mima-01"}
    r = api.post("/api/users", headers=town, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == "zhang_town"
    # not in another town, not at its own level
    r = api.post("/api/users", headers=town, json={**body, "name": "x1", "node": "370214102001"})
    assert r.status_code == 404
    r = api.post("/api/users", headers=town, json={**body, "name": "x2", "role": "town", "node": "370214101"})
    assert r.status_code == 404
    assert db.execute("SELECT COUNT(*) FROM users WHERE name IN ('x1', 'x2')").fetchone()[0] == 0
    assert _login(api, "zhao_village", "cun-mima-01").status_code == 200
    assert _audit(db, "zhang_town")[-2:] == ["password_change", "login"]


def test_user_cli_add_list_passwd_revoke_token(
    settings: Settings,
    db: Database,
    grid: Grid,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path = settings.database
    monkeypatch.setattr("sys.stdin", io.StringIO("cli-mima-0001\n"))
    assert (
        kuaijian_main(
            [
                "cloud",
                "user",
                "add",
                "sun",
                "--role",
                "village",
                "--node",
                "370214101203",
                "--password-stdin",
                "--db",
                path,
            ]
        )
        == 0
    )
    policy = accounts.Policy.from_settings(settings)
    assert accounts.login(db, "sun", "cli-mima-0001", T0, policy).user == "sun"
    secret = tmp_path / "pw"
    secret.write_text("cli-mima-0002\n")
    assert (
        kuaijian_main(["cloud", "user", "passwd", "sun", "--password-file", str(secret), "--db", path]) == 0
    )
    assert accounts.login(db, "sun", "cli-mima-0002", T0, policy).user == "sun"
    capsys.readouterr()
    assert kuaijian_main(["cloud", "user", "token", "sun", "--db", path]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("kjc_")
    assert kuaijian_main(["cloud", "user", "list", "--db", path]) == 0
    listing = capsys.readouterr().out
    assert "sun\tvillage\t370214101203" in listing
    assert "\tyes\t" in listing
    assert kuaijian_main(["cloud", "user", "revoke", "sun", "--db", path]) == 0
    from cloud.auth import user_for_token
    from cloud.errors import Unauthenticated

    with pytest.raises(Unauthenticated) as err:
        user_for_token(db, token, T0)
    assert err.value.code == "auth.revoked"
    # a short password and a duplicate name are refused with exit 2
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert (
        kuaijian_main(["cloud", "user", "add", "z", "--role", "admin", "--password-stdin", "--db", path]) == 2
    )
    assert "at least 8" in capsys.readouterr().err
    rows = db.execute("SELECT actor, action FROM audit_log WHERE target = 'sun' ORDER BY id").fetchall()
    assert rows == [
        ("cli", "user_add"),
        ("sun", "login"),
        ("cli", "password_reset"),
        ("sun", "login"),
        ("cli", "token_issue"),
        ("cli", "user_revoke"),
    ]


def test_migration_keeps_old_tokens_as_machine_tokens(new_db: Databases) -> None:
    db = connect(new_db.empty("old"))
    try:
        assert migrate(db, "0005")[-1] == "0005"
        db.execute(
            "INSERT INTO users (name, role, node_id, token_hash, created_at) VALUES ('old', 'admin', NULL, ?, ?)",
            [hash_token("kjc_old-token"), T0.isoformat()],
        )
        old_id = db.execute("SELECT id FROM users WHERE name = 'old'").fetchone()[0]
        db.execute(
            """INSERT INTO notify_channels (name, kind, url, phones_json, events_json, min_severity, user_id,
                                            created_at, created_by)
               VALUES ('mine', 'webhook', 'http://127.0.0.1:9/', '[]', '[]', 'high', ?, ?, 'old')""",
            [old_id, T0.isoformat()],
        )
        assert migrate(db)[:1] == ["0006"]  # later revisions may follow
        # the rebuilt users table is still what notify_channels references, with the same ids
        assert db.scalar("SELECT user_id FROM notify_channels") == old_id
        if db.dialect == "sqlite":
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
            refs = {r[2] for r in db.execute("PRAGMA foreign_key_list(notify_channels)").fetchall()}
            assert "users" in refs
            assert "users_new" not in str(db.execute("SELECT sql FROM sqlite_master").fetchall())
        from cloud.auth import user_for_token

        assert user_for_token(db, "kjc_old-token", T0 + timedelta(days=3650)).name == "old"
        assert db.execute("SELECT kind, access_expires_at FROM tokens").fetchall() == [("machine", None)]
        with pytest.raises(DatabaseError):
            db.execute("SELECT token_hash FROM users")
    finally:
        db.close()
