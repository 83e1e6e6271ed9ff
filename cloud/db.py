"""Cloud storage: SQLite through sqlite-utils, WAL, with named, recorded, transactional migrations.

Does: open a connection (`connect`), bring the schema up to date (`migrate`, each migration runs in one
transaction and is recorded in ``schema_migrations``), and give write transactions (`transaction`,
``BEGIN IMMEDIATE`` so concurrent writers queue on the lock instead of failing mid-transaction).

A new database file is created 0600 (and with it its WAL and SHM files): it holds HMAC keys and results.

Does not: business rules (see cloud.ingest, cloud.grid, cloud.cases) or HTTP.

Tables (all timestamps are ISO-8601 UTC strings, ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, so they sort):
    grid_nodes    id, level (county|town|village|station), code (unique), name, parent_id, path
                  ("/1/4/9/" — ids from the root, for subtree queries: path LIKE :node_path || '%'),
                  grid_head, information_officer, co_manager (free text: "name phone")
    stations      id (station id "370214101203-01"), node_id (its grid node, level station),
                  key (hex HMAC key), previous_key + previous_key_until (the key replaced by the last
                  rotation and until when it still verifies), mqtt_username, mqtt_password_hash (mosquitto $7$ format),
                  enrolled_at, last_seen, online (0/1), backlog, oldest_unsent_age_s, free_disk_bytes,
                  config_version, status_at, status_json, high_seq (highest seq stored)
    results       id (UUID text, PK), seq, station, node_id, instrument_serial, instrument_model,
                  instrument_driver, sample_id, product, producer, sampled_at, method, analyte, channel,
                  measured_at, verdict, values_json, qc_json, algorithm, config_version, raw_json,
                  operator, sig, received_at, sha256 (of the item as received), ingest_flags (JSON list:
                  implausible_time, seq_jump), measured_at_sent (the station's time when implausible; measured_at
                  is then the receive time). measured_at is always stored in UTC.
    ingest_sessions  client_id (an ingest worker's MQTT client id), started_at, stopped_at (NULL while running)
    seq_gaps      id, station, first_seq, last_seq (missing range, inclusive), detected_at, closed_at
    dead_letters  id, received_at, topic, payload (text or hex for non-UTF-8), reason, station, result_id, sha256
                  (of the rejected item), stored_sha256 (conflicting duplicate: of the result stored under that id)
    cases         id, station, origin_node_id, node_id (current responsible node), level, status
                  (open|assigned|feedback|closed), reason (positive|repeated_suspect), result_id, product,
                  analyte, opened_at, deadline, assignee, closed_at, escalations, reminded (none|near|overdue
                  at the current level), updated_at
    case_actions  id, case_id, at, actor ("system" or a user name), action (report|assign|remind|feedback|
                  escalate|close|note), note, data_json
    users         id, name (unique), role (admin|county|town|village|station), node_id, display_name,
                  password_hash (argon2id, NULL = no password login), password_changed_at, failed_logins
                  (consecutive), locked_until, revoked_at, created_at, created_by
    tokens        id, user_id, kind (session|machine), access_hash (sha256 hex of the bearer token),
                  access_expires_at (NULL: a machine token issued before tokens expired), refresh_hash +
                  refresh_expires_at (sessions only), created_at, revoked_at
    audit_log     id, at, actor (user name, "cli" or "-" for an unknown caller), action (login|login_failed|
                  login_locked|logout|refresh_failed|user_add|user_revoke|password_change|password_reset|
                  token_issue|token_revoke), target (a user name), ip, detail_json
    producers     id, kind (企业|合作社|家庭农场|种养大户|个人), name, code (unique: credit code or ID number),
                  village_node_id, contact, phone, products_json, plots_json, created_at, updated_at
    samples       id (registration UUID), seq, station, node_id, code (unique per station), root_code (the batch:
                  the original sample's code), producer_id, product, batch, plot, quantity_kg, market_date,
                  sampler, registered_at, retest_of, status (pending|released|held|retest), decided_at,
                  received_at, sig
    certificates  number, station, root_code (one per batch), sample_id, issued_at, summary_json, revoked_at
    configs       id, station, version, issued_at, issued_by, target_node_id, payload_json, published_at
    risk_alerts   id, key (unique: kind + cell + week, or producer + count), kind (positivity_rise|
                  producer_repeat|station_invalid), severity (high|medium), node_id (the unit concerned), period,
                  analyte, product, producer_id, station, observed, tests, expected_rate, p_value, detail_json,
                  created_at, updated_at, acknowledged_at, acknowledged_by
    tasks         id, node_id (town, village or station), title, start_date, due_date (local dates), target,
                  products_json, analytes_json, note, source (manual|risk), created_by, created_at, cancelled_at
    notify_channels  id, name, kind (webhook|wecom|dingtalk|sms), url, secret, phones_json, events_json,
                  min_severity, node_id (a unit's channel) or user_id (a personal one), enabled, created_at,
                  created_by, deleted_at
    notifications id, channel_id, event_key (unique per channel), kind, title, body, data_json, status
                  (pending|sent|expired), attempts, next_attempt_at, lease_until, last_attempt_at,
                  last_status, last_error, created_at, sent_at — the durable queue and the audit of what was sent
    notify_cursor name (case_actions|risk_alerts), last_id — how far events were fanned out
    grid_nodes also carries lat, lon (optional, WGS-84 degrees) for the map
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from cloud.errors import MigrationError

Migration = tuple[str, str]
"""(name, SQL script). Scripts run statement by statement inside one transaction."""

REBUILD = "-- rebuild: foreign keys off"
"""First line of a migration that rebuilds a referenced table: it runs with foreign keys off (SQLite's
documented way to change a table's schema) and fails unless `PRAGMA foreign_key_check` is clean before the
commit."""


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open the cloud database (WAL, synchronous=FULL, foreign keys, 10 s busy timeout). Does not migrate.

    FULL, not NORMAL: ingest publishes the application ack right after the commit and the gateway then deletes
    its copy, so a commit must survive a power cut, not only a process crash (NORMAL in WAL mode may lose the
    last commits on power loss). Batched commits keep the cost to one fsync per batch.
    """
    _create_private(path)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return sqlite_utils.Database(conn)


def _create_private(path: Path | str) -> None:
    """Create a missing database file 0600 (it holds station keys and results). SQLite gives the -wal and -shm
    files it creates the mode of the database file, so they are private too."""
    if str(path) in ("", ":memory:") or str(path).startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def open_db(path: Path | str) -> sqlite_utils.Database:
    """`connect` + `migrate`: the one call services and CLI verbs use."""
    db = connect(path)
    migrate(db)
    return db


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on error). Nested use joins the outer one."""
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_M001_INITIAL = """
        CREATE TABLE grid_nodes (
            id INTEGER PRIMARY KEY,
            level TEXT NOT NULL CHECK (level IN ('county','town','village','station')),
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            parent_id INTEGER REFERENCES grid_nodes(id),
            path TEXT NOT NULL,
            grid_head TEXT,
            information_officer TEXT,
            co_manager TEXT
        );
        CREATE INDEX idx_grid_nodes_parent ON grid_nodes(parent_id);
        CREATE INDEX idx_grid_nodes_path ON grid_nodes(path);

        CREATE TABLE stations (
            id TEXT PRIMARY KEY,
            node_id INTEGER NOT NULL UNIQUE REFERENCES grid_nodes(id),
            key TEXT NOT NULL,
            mqtt_username TEXT NOT NULL UNIQUE,
            mqtt_password_hash TEXT NOT NULL,
            enrolled_at TEXT NOT NULL,
            last_seen TEXT,
            online INTEGER NOT NULL DEFAULT 0,
            backlog INTEGER,
            oldest_unsent_age_s REAL,
            free_disk_bytes INTEGER,
            config_version TEXT,
            status_at TEXT,
            status_json TEXT,
            high_seq INTEGER NOT NULL DEFAULT 0
        );

        CREATE TABLE results (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            station TEXT NOT NULL REFERENCES stations(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            instrument_serial TEXT NOT NULL,
            instrument_model TEXT NOT NULL,
            instrument_driver TEXT NOT NULL,
            sample_id TEXT NOT NULL,
            product TEXT NOT NULL,
            producer TEXT,
            sampled_at TEXT,
            method TEXT NOT NULL,
            analyte TEXT NOT NULL,
            channel INTEGER NOT NULL,
            measured_at TEXT NOT NULL,
            verdict TEXT NOT NULL,
            values_json TEXT NOT NULL,
            qc_json TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            config_version TEXT NOT NULL,
            raw_json TEXT,
            operator TEXT,
            sig TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE INDEX idx_results_station_seq ON results(station, seq);
        CREATE INDEX idx_results_measured ON results(measured_at);
        CREATE INDEX idx_results_node_measured ON results(node_id, measured_at);
        CREATE INDEX idx_results_analyte ON results(analyte, measured_at);
        CREATE INDEX idx_results_product ON results(product, measured_at);
        CREATE INDEX idx_results_verdict ON results(verdict, measured_at);

        CREATE TABLE seq_gaps (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            detected_at TEXT NOT NULL,
            closed_at TEXT
        );
        CREATE INDEX idx_seq_gaps_station ON seq_gaps(station, closed_at);

        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            reason TEXT NOT NULL,
            station TEXT,
            result_id TEXT
        );
        CREATE INDEX idx_dead_letters_received ON dead_letters(received_at);

        CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL REFERENCES stations(id),
            origin_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            level TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open','assigned','feedback','closed')),
            reason TEXT NOT NULL,
            result_id TEXT NOT NULL,
            product TEXT NOT NULL,
            analyte TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            deadline TEXT NOT NULL,
            assignee TEXT,
            closed_at TEXT,
            escalations INTEGER NOT NULL DEFAULT 0,
            reminded TEXT NOT NULL DEFAULT 'none',
            updated_at TEXT NOT NULL
        );
        CREATE INDEX idx_cases_status_deadline ON cases(status, deadline);
        CREATE INDEX idx_cases_origin ON cases(origin_node_id);
        CREATE INDEX idx_cases_key ON cases(station, product, analyte, status);

        CREATE TABLE case_actions (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            note TEXT,
            data_json TEXT
        );
        CREATE INDEX idx_case_actions_case ON case_actions(case_id, id);

        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin','county','town','village','station')),
            node_id INTEGER REFERENCES grid_nodes(id),
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );

        CREATE TABLE configs (
            id INTEGER PRIMARY KEY,
            station TEXT NOT NULL REFERENCES stations(id),
            version TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            issued_by TEXT NOT NULL,
            target_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            payload_json TEXT NOT NULL,
            published_at TEXT
        );
        CREATE INDEX idx_configs_station ON configs(station, id);
"""


# Key rotation (`enrol-station --rotate`): the replaced key keeps verifying until `previous_key_until`, so
# results a gateway signed before it got the new key — already in its outbox — are not rejected.
_M002_PREVIOUS_KEY = """
        ALTER TABLE stations ADD COLUMN previous_key TEXT;
        ALTER TABLE stations ADD COLUMN previous_key_until TEXT;
"""

# Producers (生产主体) under their village; `code` is the credit code or, for individuals, the ID number.
_M003_PRODUCERS = """
        CREATE TABLE producers (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('企业','合作社','家庭农场','种养大户','个人')),
            name TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            village_node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            contact TEXT,
            phone TEXT,
            products_json TEXT NOT NULL,
            plots_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX idx_producers_village ON producers(village_node_id);
"""

# Samples registered at stations (their batch = the original sample's code, `root_code`) and the
# compliance certificates issued when a batch may go to market.
_M004_SAMPLES = """
        CREATE TABLE samples (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            station TEXT NOT NULL REFERENCES stations(id),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            code TEXT NOT NULL,
            root_code TEXT NOT NULL,
            producer_id INTEGER NOT NULL REFERENCES producers(id),
            product TEXT NOT NULL,
            batch TEXT NOT NULL,
            plot TEXT,
            quantity_kg REAL NOT NULL,
            market_date TEXT,
            sampler TEXT NOT NULL,
            registered_at TEXT NOT NULL,
            retest_of TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending','released','held','retest')),
            decided_at TEXT,
            received_at TEXT NOT NULL,
            sig TEXT NOT NULL,
            UNIQUE (station, code)
        );
        CREATE INDEX idx_samples_root ON samples(station, root_code);
        CREATE INDEX idx_samples_producer ON samples(producer_id, registered_at);
        CREATE INDEX idx_samples_node ON samples(node_id, registered_at);
        CREATE INDEX idx_results_station_sample ON results(station, sample_id);

        CREATE TABLE certificates (
            number TEXT PRIMARY KEY,
            station TEXT NOT NULL,
            root_code TEXT NOT NULL,
            sample_id TEXT NOT NULL REFERENCES samples(id),
            issued_at TEXT NOT NULL,
            summary_json TEXT NOT NULL,
            revoked_at TEXT,
            UNIQUE (station, root_code)
        );
"""

# The county's command view: risk alerts, sampling tasks, notification channels and their durable queue,
# and optional coordinates of grid nodes for the offline map.
_M005_COMMAND = """
        CREATE TABLE risk_alerts (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('positivity_rise','producer_repeat','station_invalid')),
            severity TEXT NOT NULL CHECK (severity IN ('high','medium')),
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            period TEXT NOT NULL,
            analyte TEXT,
            product TEXT,
            producer_id INTEGER REFERENCES producers(id),
            station TEXT,
            observed INTEGER NOT NULL,
            tests INTEGER NOT NULL,
            expected_rate REAL,
            p_value REAL,
            detail_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            acknowledged_at TEXT,
            acknowledged_by TEXT
        );
        CREATE INDEX idx_risk_alerts_node ON risk_alerts(node_id, created_at);
        CREATE INDEX idx_risk_alerts_created ON risk_alerts(created_at);

        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            node_id INTEGER NOT NULL REFERENCES grid_nodes(id),
            title TEXT NOT NULL,
            start_date TEXT NOT NULL,
            due_date TEXT NOT NULL,
            target INTEGER NOT NULL CHECK (target > 0),
            products_json TEXT NOT NULL,
            analytes_json TEXT NOT NULL,
            note TEXT,
            source TEXT NOT NULL CHECK (source IN ('manual','risk')),
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            cancelled_at TEXT
        );
        CREATE INDEX idx_tasks_node ON tasks(node_id, due_date);
        CREATE INDEX idx_samples_registered ON samples(registered_at);

        CREATE TABLE notify_channels (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('webhook','wecom','dingtalk','sms')),
            url TEXT NOT NULL,
            secret TEXT,
            phones_json TEXT NOT NULL,
            events_json TEXT NOT NULL,
            min_severity TEXT NOT NULL CHECK (min_severity IN ('medium','high')),
            node_id INTEGER REFERENCES grid_nodes(id),
            user_id INTEGER REFERENCES users(id),
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            deleted_at TEXT,
            CHECK ((node_id IS NULL) != (user_id IS NULL))
        );

        CREATE TABLE notifications (
            id INTEGER PRIMARY KEY,
            channel_id INTEGER NOT NULL REFERENCES notify_channels(id),
            event_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            data_json TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending','sent','expired')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            lease_until TEXT,
            last_attempt_at TEXT,
            last_status INTEGER,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (channel_id, event_key)
        );
        CREATE INDEX idx_notifications_due ON notifications(status, next_attempt_at);

        CREATE TABLE notify_cursor (
            name TEXT PRIMARY KEY,
            last_id INTEGER NOT NULL
        );

        ALTER TABLE grid_nodes ADD COLUMN lat REAL;
        ALTER TABLE grid_nodes ADD COLUMN lon REAL;
"""

# Accounts: password logins with sessions (short-lived access token + refresh token), machine tokens that
# expire and can be revoked, lockout counters, and the audit log. The old users.token_hash becomes a
# machine token without an expiry (it was issued before tokens expired). The table is rebuilt the way SQLite
# documents (foreign keys off, new table, copy, drop, rename, foreign_key_check), so the tables that
# reference users (notify_channels, tokens) keep pointing at "users".
_M006_ACCOUNTS = """-- rebuild: foreign keys off
        CREATE TABLE users_new (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin','county','town','village','station')),
            node_id INTEGER REFERENCES grid_nodes(id),
            display_name TEXT,
            password_hash TEXT,
            password_changed_at TEXT,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT,
            revoked_at TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT
        );
        INSERT INTO users_new (id, name, role, node_id, created_at)
            SELECT id, name, role, node_id, created_at FROM users;
        CREATE TABLE tokens (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            kind TEXT NOT NULL CHECK (kind IN ('session','machine')),
            access_hash TEXT NOT NULL UNIQUE,
            access_expires_at TEXT,
            refresh_hash TEXT UNIQUE,
            refresh_expires_at TEXT,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX idx_tokens_user ON tokens(user_id);
        INSERT INTO tokens (user_id, kind, access_hash, created_at)
            SELECT id, 'machine', token_hash, created_at FROM users;
        DROP TABLE users;
        ALTER TABLE users_new RENAME TO users;
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            ip TEXT,
            detail_json TEXT
        );
        CREATE INDEX idx_audit_log_at ON audit_log(at);
        CREATE INDEX idx_audit_log_target ON audit_log(target, at);
"""

# Issue 9: rejections name the received item's SHA-256 (dead letters keep it, and for a conflicting duplicate
# the stored result's too); results keep their own hash, the flags ingest set (implausible_time, seq_jump) and,
# when the station's measured_at was implausible, the time it sent (measured_at is then the receive time).
# Existing measured_at values with a non-UTC offset are rewritten as the same instant in UTC.
_M007_INGEST_INTEGRITY = """
        ALTER TABLE dead_letters ADD COLUMN sha256 TEXT;
        ALTER TABLE dead_letters ADD COLUMN stored_sha256 TEXT;
        ALTER TABLE results ADD COLUMN sha256 TEXT;
        ALTER TABLE results ADD COLUMN ingest_flags TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE results ADD COLUMN measured_at_sent TEXT;
        UPDATE results SET measured_at = strftime('%Y-%m-%dT%H:%M:%S', measured_at)
            || CASE WHEN substr(measured_at, 20, 1) = '.' THEN substr(measured_at, 20, 7) ELSE '' END || '+00:00'
            WHERE measured_at NOT LIKE '%+00:00' AND strftime('%Y', measured_at) BETWEEN '0001' AND '9999';
        UPDATE samples SET registered_at = strftime('%Y-%m-%dT%H:%M:%S', registered_at)
            || CASE WHEN substr(registered_at, 20, 1) = '.' THEN substr(registered_at, 20, 7) ELSE '' END
            || '+00:00'
            WHERE registered_at NOT LIKE '%+00:00' AND strftime('%Y', registered_at) BETWEEN '0001' AND '9999';
"""

# The ingest workers' MQTT client ids (persistent broker sessions), so a starting worker can end the sessions of
# workers that were stopped: a stopped member of a shared subscription would keep taking a share of the results.
_M008_INGEST_SESSIONS = """
        CREATE TABLE ingest_sessions (
            client_id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            stopped_at TEXT
        );
"""

MIGRATIONS: tuple[Migration, ...] = (
    ("001_initial", _M001_INITIAL),
    ("002_station_previous_key", _M002_PREVIOUS_KEY),
    ("003_producers", _M003_PRODUCERS),
    ("004_samples", _M004_SAMPLES),
    ("005_command", _M005_COMMAND),
    ("006_accounts", _M006_ACCOUNTS),
    ("007_ingest_integrity", _M007_INGEST_INTEGRITY),
    ("008_ingest_sessions", _M008_INGEST_SESSIONS),
)


def applied_migrations(db: sqlite_utils.Database) -> list[str]:
    if "schema_migrations" not in db.table_names():
        return []
    return [row[0] for row in db.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]


def migrate(db: sqlite_utils.Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction. Returns the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done: list[str] = []
    for name, script in migrations:
        rebuild = script.lstrip().startswith(REBUILD)
        try:
            if rebuild:
                db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before it
            with transaction(db):
                if db.execute("SELECT 1 FROM schema_migrations WHERE name = ?", [name]).fetchone():
                    continue
                # executescript() would COMMIT our transaction; run the statements one by one instead.
                for statement in _split_sql(script):
                    db.execute(statement)
                if rebuild and db.execute("PRAGMA foreign_key_check").fetchall():
                    raise sqlite3.IntegrityError("foreign key violations after the rebuild")
                db.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%f+00:00','now'))",
                    [name],
                )
                done.append(name)
        except sqlite3.Error as exc:
            raise MigrationError(f"migration {name} failed: {exc}") from exc
        finally:
            if rebuild:
                db.execute("PRAGMA foreign_keys=ON")
    return done


def _split_sql(script: str) -> list[str]:
    parts: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                parts.append(buf.strip())
            buf = ""
    if buf.strip():
        parts.append(buf.strip())
    return parts
