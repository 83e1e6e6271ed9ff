"""The test suite's private PostgreSQL server: started from Debian's binaries, durable settings, per-test
databases, restartable, and gone afterwards."""

from __future__ import annotations

import uuid

import psycopg

from tests.postgres import PostgresServer, start_postgres


def _connect(server: PostgresServer, db: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host="127.0.0.1", port=server.port, user="kj", dbname=db, autocommit=True)


def test_server_runs_durably_on_loopback_with_databases_per_test(postgres: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        with _connect(postgres, name) as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN"
                    " ('fsync', 'synchronous_commit', 'listen_addresses', 'unix_socket_directories')"
                ).fetchall()
            )
            assert settings["fsync"] == "on"
            assert settings["synchronous_commit"] == "on"
            assert settings["listen_addresses"] == "127.0.0.1"
            assert settings["unix_socket_directories"] == str(postgres.socket_dir)
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        postgres.drop_database(name)
    with _connect(postgres, "postgres") as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None


def test_restart_keeps_committed_rows_and_cleanup_removes_everything() -> None:
    server = start_postgres()
    try:
        server.create_database("keep")
        with _connect(server, "keep") as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
        server.restart()
        with _connect(server, "keep") as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        server.cleanup()
    assert not server.root.exists()
