"""One Alembic migration history for both engines: a fresh database matches cloud.schema, migrating twice is a
no-op, and a database made by the old hand-rolled runner (migrations 001..004, or only some) is stamped and
upgraded with its data intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cloud import partitions, queries
from cloud.auth import User
from cloud.db import Database, current_revision, engine_for, head_revision, migrate, open_db, transaction
from cloud.errors import DatabaseError, Invalid, MigrationError
from cloud.schema import POSTGRES_ONLY, metadata

DATA = Path(__file__).with_name("data")
ADMIN = User(id=1, name="admin", role="admin", node_id=None, node_code=None, node_path="/")


def _schema_diff(db: Database) -> list[Any]:
    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ in ("column", "index") and not reflected and obj.info.get(POSTGRES_ONLY):
            return db.is_postgres
        if type_ == "table" and name is not None and partitions.is_partition(name):
            return False  # the monthly partitions of results (PostgreSQL) are not in the metadata
        return not (type_ == "table" and name == "alembic_version")

    with engine_for(db.engine.url.render_as_string(hide_password=False)).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include, "compare_type": True})
        return list(compare_metadata(ctx, metadata))


def test_fresh_database_is_at_head_and_matches_the_schema(db: Database) -> None:
    assert current_revision(db) == head_revision()
    assert migrate(db) == []  # a second run changes nothing
    assert _schema_diff(db) == []
    if db.is_postgres:
        assert (
            db.scalar(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'"
                " AND column_name = 'rowid'"
            )
            == "rowid"
        )


def _load_legacy(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.db"
    conn = sqlite3.connect(path)
    conn.executescript((DATA / f"{name}.sql").read_text(encoding="utf-8"))
    conn.close()
    return path


def test_old_runner_database_is_stamped_and_upgraded(tmp_path: Path) -> None:
    path = _load_legacy(tmp_path, "legacy_004")
    db = open_db(path)
    try:
        assert current_revision(db) == head_revision()
        assert "schema_migrations" not in db.table_names()
        assert "producers" in db.table_names()
        page = queries.list_results(db, ADMIN)
        assert page.total == 2
        assert {r["verdict"] for r in page.items} == {"negative", "positive"}
        assert db.scalar("SELECT high_seq FROM stations") == 2
        assert migrate(db) == []
    finally:
        db.close()


def test_partly_migrated_old_database_gets_the_missing_revisions(tmp_path: Path) -> None:
    path = _load_legacy(tmp_path, "legacy_002")
    before = sqlite3.connect(path)
    tables = {r[0] for r in before.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    before.close()
    assert "producers" not in tables  # made with 001 and 002 only
    db = open_db(path)
    try:
        assert {"producers", "samples", "certificates"} <= set(db.table_names())
        assert current_revision(db) == head_revision()
        assert db.scalar("SELECT COUNT(*) FROM results") == 2
    finally:
        db.close()


def test_unknown_old_migration_refuses_to_guess(tmp_path: Path) -> None:
    path = _load_legacy(tmp_path, "legacy_004")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES ('005_from_the_future', '2026-12-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    with pytest.raises(MigrationError, match="005_from_the_future"):
        open_db(path)


def test_failed_statement_rolls_back_the_whole_transaction(db: Database) -> None:
    """The write-transaction contract both engines share: an error undoes everything since BEGIN."""

    def write_then_fail() -> None:
        with transaction(db):
            db.execute(
                "INSERT INTO users (name, role, token_hash, created_at) VALUES ('a', 'admin', 'h', 't')"
            )
            db.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(DatabaseError):
        write_then_fail()
    assert db.scalar("SELECT COUNT(*) FROM users") == 0
    assert not db.in_transaction


def test_text_with_nul_is_refused_alike_on_both_engines(db: Database) -> None:
    """PostgreSQL cannot store U+0000; the data layer refuses it on SQLite too (a 422, never a 500)."""
    with pytest.raises(Invalid, match="U\\+0000"):
        db.execute("SELECT id FROM users WHERE name = ?", ["a\x00b"])
    assert db.execute("SELECT id FROM users WHERE name = ?", ["ab"]).fetchall() == []
