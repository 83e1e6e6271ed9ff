"""Cloud storage: one data layer over two engines — SQLite (the embedded default, stdlib ``sqlite3``) and
PostgreSQL (psycopg 3) — through SQLAlchemy, with one Alembic migration history for both.

Does: turn a file path or URL into an engine (`database_url`, one pooled engine per URL per process), open a
`Database` (`connect`; `open_db` also migrates), run SQL written once for both engines (``?`` placeholders,
translated for psycopg; hot ingest statements bound on the server: `rows_in`, `executemany(bound=True)`;
bulk appends: `insert_rows`, COPY or multi-row INSERTs), give write transactions (`transaction`) and
savepoints (`Database.atomic`), and bring the schema up to date (`migrate`: Alembic ``upgrade head``; a database made by the old hand-rolled runner,
recognised by its ``schema_migrations`` table, is stamped at the matching revision first).

Write transactions: on SQLite ``BEGIN IMMEDIATE`` (concurrent writers queue on the file lock). On PostgreSQL
``BEGIN`` plus a transaction-scoped advisory lock, so admin, case and grid writes serialise exactly as on
SQLite; ingest instead locks only the station rows of its batch (`transaction(db, stations=…)`), so workers
handling different stations commit in parallel while two workers holding results of one station queue.

SQLite specifics: WAL, synchronous=FULL (the application ack follows the commit and the gateway then deletes
its copy, so a commit must survive a power cut), foreign keys on, 10 s busy timeout, a new file created 0600
(it holds station keys and results; SQLite gives its -wal/-shm files the same mode).

Does not: business rules (cloud.ingest, cloud.grid, cloud.cases …), the table definitions (cloud.schema and
the revisions in cloud/migrations), or HTTP.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from cloud.errors import DatabaseError, IntegrityViolation, Invalid, MigrationError
from kuaijian_schema.sqlite_append import append_rows

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any] | Mapping[str, Any]

WRITE_LOCK_KEY = (
    0x6B6A636C6F7564  # "kjcloud": the advisory lock that serialises non-ingest writes on PostgreSQL
)
ROWID_ORDER_LOCK_KEY = 0x6B6A726F776964  # "kjrowid": held from giving results rows their rowid to the commit


class Cursor(Protocol):
    """What `Database.execute` returns (a DB-API cursor of either driver)."""

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


def database_url(target: str | Path) -> str:
    """A SQLAlchemy URL for `target`: a file path (SQLite), ``sqlite:///…``, or ``postgresql://…`` (the psycopg
    3 driver is implied). Raises DatabaseError for any other scheme."""
    text = str(target)
    if "://" not in text:
        return f"sqlite:///{text}"
    scheme, _, rest = text.partition("://")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        return text
    raise DatabaseError(f"database URL must be sqlite:///path or postgresql://…, not {scheme}://")


def redacted(target: str | Path) -> str:
    """`target` for logs and messages: a URL's password masked."""
    url = database_url(target)
    return make_url(url).render_as_string(hide_password=True)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(target: str | Path) -> Engine:
    """The process's engine for `target` (created on first use; PostgreSQL connections are pooled and
    pinged on checkout, so a restarted server costs one failed batch, not a dead process)."""
    url = database_url(target)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests dropping a database; a process about to fork)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def dispose_engine(target: str | Path) -> None:
    """Close the pooled connections of `target`'s engine and forget it (before dropping that database)."""
    url = database_url(target)
    with _ENGINES_LOCK:
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        _create_private(path)
        engine = sa.create_engine(
            url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": 10.0}
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)  # Alembic's transactions (ours are raw)
        return engine
    return sa.create_engine(
        parsed.set(drivername="postgresql+psycopg"),
        pool_size=5,
        max_overflow=20,
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={"cursor_factory": psycopg.ClientCursor, "connect_timeout": 10},
    )


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")
    dbapi_conn.execute("PRAGMA busy_timeout=10000")


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _create_private(path: str) -> None:
    """Create a missing database file 0600 (it holds station keys and results)."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(f"cannot create the database file {path}: {exc}") from exc
    os.close(fd)


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|\?|%")


def _to_pyformat(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%`` outside quoted literals (psycopg's client-side binding), so one SQL
    text serves both drivers. ``%`` inside literals is doubled too: psycopg reads the whole text."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "?":
            return "%s"
        return tok.replace("%", "%%")

    return _PLACEHOLDER.sub(repl, sql)


_PG_SQL_CACHE: dict[str, str] = {}


_DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
_INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Driver errors → cloud.errors (IntegrityViolation for constraint failures, DatabaseError otherwise)."""
    try:
        yield
    except _INTEGRITY_ERRORS as exc:
        raise IntegrityViolation(f"{what}: {exc}") from exc
    except _DRIVER_ERRORS as exc:
        raise DatabaseError(f"{what}: {exc}") from exc


class Database:
    """One connection to the cloud database. SQL is written once, with ``?`` placeholders; use
    `transaction` for writes and `close` when done (returns the connection to the pool).

    Every driver error leaves as cloud.errors.DatabaseError (IntegrityViolation for constraints)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: Dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
        try:
            self._fairy = engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot connect to {redacted(str(engine.url))}: {exc}") from exc
        self.raw: Any = self._fairy.driver_connection
        if self.raw is None:  # pragma: no cover - a checked-out connection always has one
            raise DatabaseError("the pool handed out a closed connection")
        if self.dialect == "postgresql":
            self.raw.autocommit = True  # we issue BEGIN/COMMIT ourselves, like on SQLite
        self._depth = 0
        self._savepoints = 0
        self._dead = False  # invalidated: the pool will not hand this connection out again

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _sql(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        cached = _PG_SQL_CACHE.get(sql)
        if cached is None:
            cached = _PG_SQL_CACHE[sql] = _to_pyformat(sql)
        return cached

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement (``?`` placeholders) and return its cursor.

        Text holding U+0000 is refused (Invalid) on both engines before it reaches the database: PostgreSQL
        cannot store it, and one engine must not accept what the other refuses."""
        values = params.values() if isinstance(params, Mapping) else params
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise Invalid("text must not contain U+0000", code="text.nul")
        with _translated("query failed"):
            cur = self.raw.cursor()
            if self.dialect == "sqlite":
                cur.execute(sql, params)
            elif params:
                cur.execute(self._sql(sql), params)
            else:
                cur.execute(sql)
        return cur  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Sequence[Params], *, bound: bool = False) -> None:
        """Run one statement for each parameter row (psycopg pipelines them: one round trip per batch).

        `bound` (PostgreSQL): the values travel apart from the statement, which the server prepares once,
        instead of being quoted into its text row by row — for hot statements whose parameters are plain
        integers and text (an untyped NULL in a multi-row VALUES, say, would not resolve)."""
        if not rows:
            return
        with _translated("query failed"):
            cursor = psycopg.Cursor(self.raw) if bound and self.dialect == "postgresql" else self.raw.cursor()
            cursor.executemany(self._sql(sql), rows)

    def rows_in(self, sql: str, column: str, values: Sequence[str]) -> list[Any]:
        """All rows of `sql` (a SELECT ending in its FROM clause) ``WHERE column IN values`` for text `values`:
        on PostgreSQL one ``= ANY(…)`` with the array bound on the server (no per-value quoting in Python,
        no long IN list for the server to parse; prepared after a few runs), on SQLite ``IN (?, …)`` in
        chunks of 500. A value holding U+0000 matches nothing (no text column holds one) and is left out."""
        values = [v for v in values if "\x00" not in v]
        if not values:
            return []
        with _translated("query failed"):
            if self.dialect == "postgresql":
                cur = psycopg.Cursor(self.raw)
                return cur.execute(f"{sql} WHERE {column} = ANY(%s)", [list(values)]).fetchall()
            out: list[Any] = []
            for i in range(0, len(values), 500):
                chunk = values[i : i + 500]
                marks = ",".join("?" * len(chunk))
                out += self.raw.execute(f"{sql} WHERE {column} IN ({marks})", chunk).fetchall()
            return out

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append new `rows` to `table`, in their order: on PostgreSQL with one ``COPY … FROM STDIN`` (one
        statement, no per-row parsing or planning on the server), on SQLite with multi-row INSERTs
        (`kuaijian_schema.sqlite_append`). There is no ON CONFLICT: a row whose key exists raises IntegrityViolation (and
        the transaction must roll back to a savepoint). `table` and `columns` are trusted identifiers, never
        input."""
        if not rows:
            return
        names = ", ".join(columns)
        with _translated(f"insert into {table} failed"):
            if self.dialect == "postgresql":
                with self.raw.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                return
            append_rows(self.raw, table, columns, rows)

    def lock_rowid_order(self) -> None:
        """PostgreSQL: take, until this transaction ends, the lock under which new `results` rows get their
        ``rowid`` (a sequence), so rowids become visible in the order they were given: the live feed tails
        ``rowid > cursor`` and would skip a row whose lower rowid committed after a higher one. Workers queue
        here only from their insert to their commit; their decoding, verifying and lookups run in parallel.
        SQLite: nothing to do (one writer at a time, rowid in commit order)."""
        if self.dialect == "postgresql":
            with _translated("locking failed"):
                self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (ROWID_ORDER_LOCK_KEY,))

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None."""
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def dicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """All rows as dicts keyed by column name."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def table_names(self) -> list[str]:
        if self.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        return [str(r[0]) for r in self.execute(sql).fetchall()]

    def _command(self, sql: str) -> None:
        with _translated(sql.split()[0].lower() + " failed"):
            self.raw.execute(sql)

    @contextmanager
    def atomic(self) -> Iterator[Database]:
        """A savepoint inside the current transaction (a failure undoes only what ran inside it)."""
        if not self.in_transaction:
            with transaction(self):
                yield self
            return
        self._savepoints += 1
        name = f"kj_sp{self._savepoints}"
        self._command(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self._command(f"ROLLBACK TO SAVEPOINT {name}")
            self._command(f"RELEASE SAVEPOINT {name}")
            raise
        finally:
            self._savepoints -= 1
        self._command(f"RELEASE SAVEPOINT {name}")

    def reconnect(self) -> None:
        """Drop this connection (it failed: the server restarted, the network broke) and check out a fresh
        one. Raises DatabaseError while the database is still unreachable."""
        self._depth = 0
        self._savepoints = 0
        self._invalidate()
        try:
            self._fairy = self.engine.raw_connection()
        except (sa.exc.SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
            raise DatabaseError(f"cannot connect to {redacted(str(self.engine.url))}: {exc}") from exc
        self.raw = self._fairy.driver_connection
        self._dead = False
        if self.dialect == "postgresql":
            self.raw.autocommit = True

    def _invalidate(self) -> None:
        if not self._dead:
            self._dead = True
            with suppress(*_DRIVER_ERRORS):
                self.raw.close()  # closed here, whatever the pool does with its record
            self._fairy.invalidate()

    def close(self) -> None:
        """Roll back an unfinished transaction and return the connection to the pool (idempotent)."""
        if self._depth:
            self._rollback()
        self._fairy.close()

    def _begin(self, stations: Sequence[str] | None) -> None:
        if self.dialect == "sqlite":
            self._command("BEGIN IMMEDIATE")
            return
        self._command("BEGIN")
        with _translated("locking failed"):
            if stations is None:
                self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            elif stations:
                # rows locked in id order: two workers locking overlapping station sets cannot deadlock
                self.raw.execute(
                    "SELECT id FROM stations WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
                    (sorted(stations),),
                ).fetchall()

    def _driver_in_transaction(self) -> bool:
        if self._dead:
            return False
        if self.dialect == "sqlite":
            return bool(self.raw.in_transaction)
        return bool(self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def _rollback(self) -> None:
        self._depth = 0
        if not self._driver_in_transaction():
            return
        try:
            self._command("ROLLBACK")
        except DatabaseError:
            self._invalidate()  # the connection is gone (server restarted): never hand it out again


@contextmanager
def transaction(db: Database, *, stations: Sequence[str] | None = None) -> Iterator[Database]:
    """A write transaction (COMMIT at the end, ROLLBACK on error). Nested use joins the outer one.

    `stations`: PostgreSQL only — lock just these station rows instead of taking the global write lock (the
    ingest path: results of different stations commit in parallel). SQLite always locks the whole file."""
    if db.in_transaction:
        yield db
        return
    try:
        db._begin(stations)
    except DatabaseError:
        db._rollback()
        raise
    db._depth = 1
    try:
        yield db
    except BaseException:
        if db._depth:
            db._rollback()
        raise
    try:
        db._command("COMMIT")
    except DatabaseError:
        db._rollback()
        raise
    finally:
        db._depth = 0


def connect(target: str | Path) -> Database:
    """Open the cloud database at `target` (a file path or URL, see `database_url`). Does not migrate."""
    return Database(engine_for(target))


def open_db(target: str | Path) -> Database:
    """`connect` + `migrate`: the one call services and CLI verbs use."""
    db = connect(target)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


# ---------------------------------------------------------------- migrations (Alembic)

LEGACY_REVISIONS: dict[str, str] = {
    "001_initial": "0001",
    "002_station_previous_key": "0002",
    "003_producers": "0003",
    "004_samples": "0004",
    "005_command": "0005",
    "006_accounts": "0006",
    "007_ingest_integrity": "0007",
    "008_ingest_sessions": "0008",
}
"""Names the old hand-rolled runner recorded in ``schema_migrations`` → the Alembic revision with the same
content. A database made by that runner is stamped at its last one, then upgraded like any other."""


def _alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(db: Database) -> str | None:
    """The Alembic revision the database is at (None: empty, or made by the old runner and not stamped)."""
    if "alembic_version" not in db.table_names():
        return None
    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def head_revision() -> str:
    """The newest revision this release knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise MigrationError("no migration revisions found")
    return str(head)


def migrate(db: Database, revision: str = "head") -> list[str]:
    """Bring the schema to `revision` (default the newest; each revision in its own transaction); returns the
    revisions applied. A database made by the old runner is stamped first (and its ``schema_migrations``
    dropped)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    if db.in_transaction:
        raise MigrationError("migrate() inside a transaction")
    before = current_revision(db)
    try:
        with db.engine.connect() as conn:
            if db.dialect == "sqlite":
                # SQLite's documented way to rebuild a referenced table: foreign keys off for the run (a
                # PRAGMA that is a no-op inside a transaction, so before any); revisions that rebuild one
                # check PRAGMA foreign_key_check before their commit.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            cfg = _alembic_config(conn)
            script = ScriptDirectory.from_config(cfg)
            if before is None:
                legacy = _legacy_revision(conn)
                if legacy is not None:
                    command.stamp(cfg, legacy)
                    conn.exec_driver_sql("DROP TABLE schema_migrations")
                    conn.commit()
                    before = legacy
            command.upgrade(cfg, revision)
            conn.commit()
            if db.dialect == "sqlite":
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            head = script.get_current_head() if revision == "head" else revision
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise MigrationError(f"migration failed: {exc}") from exc
    if before == head:
        return []
    revs = [r.revision for r in script.iterate_revisions(head, before)]
    return list(reversed(revs))


def _legacy_revision(conn: sa.Connection) -> str | None:
    if "schema_migrations" not in sa.inspect(conn).get_table_names():
        return None
    names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM schema_migrations ORDER BY name")]
    unknown = [n for n in names if n not in LEGACY_REVISIONS]
    if unknown:
        raise MigrationError(
            f"unknown legacy migration(s) {unknown}: upgrade with the release that made them"
        )
    return LEGACY_REVISIONS[names[-1]] if names else None
