"""The cloud's tables as one SQLAlchemy Core `metadata`, the same on SQLite and PostgreSQL.

Does: describe every table, column, key and index the migrations in cloud/migrations create (a test compares
a migrated database of each engine with this metadata, so the two cannot drift), and list the tables in an
order that respects foreign keys (`TABLES`, used by `kuaijian cloud migrate-db` to copy a database).

Does not: create or change tables (that is Alembic's job: cloud.db.migrate), or run queries.

All timestamps are ISO-8601 UTC text, ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, on both engines, so they sort as
text and compare with the same bound parameters everywhere. Tables:

    grid_nodes    id, level (county|town|village|station), code (unique), name, parent_id, path
                  ("/1/4/9/" — ids from the root, for subtree queries), grid_head, information_officer,
                  co_manager (free text: "name phone"), lat, lon (optional, WGS-84 degrees, for the map)
    stations      id (station id "370214101203-01"), node_id (its grid node, level station), key (hex HMAC key),
                  previous_key + previous_key_until (the key replaced by the last rotation and until when it
                  still verifies), mqtt_username, mqtt_password_hash (mosquitto $7$ format), enrolled_at,
                  last_seen, online (0/1), backlog, oldest_unsent_age_s, free_disk_bytes, config_version,
                  status_at, status_json, high_seq (highest seq stored)
    results       id (UUIDv7 text, PK), seq, station, node_id, instrument_serial, instrument_model,
                  instrument_driver, sample_id, product, producer, sampled_at, method, analyte, channel,
                  measured_at, verdict, values_json, qc_json, algorithm, config_version, raw_json, operator,
                  sig, received_at, sha256 (of the item as received), ingest_flags (JSON list:
                  implausible_time, seq_jump), measured_at_sent (the station's time when implausible); on
                  PostgreSQL also ``rowid`` (a sequence number in insert order, what
                  SQLite's implicit rowid gives: the live feed tails it; ingest gives it under a lock
                  held to its commit, `Database.lock_rowid_order`, so rowids become visible in order). On
                  PostgreSQL the table is partitioned by month on the UUIDv7 id (cloud.partitions):
                  results_p202611 …, results_default
    seq_gaps      id, station, first_seq, last_seq (missing range, inclusive), detected_at, closed_at
    dead_letters  id, received_at, topic, payload (text or hex for non-UTF-8), reason, station, result_id, sha256
                  (of the rejected item), stored_sha256 (conflicting duplicate: of the result stored under that id)
    ingest_sessions  client_id (an ingest worker's MQTT client id), started_at, stopped_at (NULL while running),
                  seen_at (its last heartbeat: a running worker's, every ingest_heartbeat_s)
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
    result_days   day (local date, Asia/Shanghai), node_id (the station's node), verdict → tests, flawed, timely,
                  registered; kept by triggers on results and samples (cloud.rollup)
    result_day_items  day, node_id, analyte, product, verdict → tests; kept by the same triggers
    result_totals node_id, analyte, product, verdict → tests, all time; kept by the same triggers
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

POSTGRES_ONLY = "postgresql_only"
"""Column.info / Index.info key: the column or index exists on PostgreSQL only (SQLite provides the same
thing implicitly: its rowid)."""

RESULTS_ROWID_SEQ = Sequence("results_rowid_seq", metadata=metadata)

grid_nodes = Table(
    "grid_nodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("level", Text, nullable=False),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("parent_id", Integer, ForeignKey("grid_nodes.id")),
    Column("path", Text, nullable=False),
    Column("grid_head", Text),
    Column("information_officer", Text),
    Column("co_manager", Text),
    Column("lat", Float),
    Column("lon", Float),
    CheckConstraint("level IN ('county','town','village','station')", name="ck_grid_nodes_level"),
    Index("idx_grid_nodes_parent", "parent_id"),
    Index("idx_grid_nodes_path", "path"),
)

stations = Table(
    "stations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False, unique=True),
    Column("key", Text, nullable=False),
    Column("mqtt_username", Text, nullable=False, unique=True),
    Column("mqtt_password_hash", Text, nullable=False),
    Column("enrolled_at", Text, nullable=False),
    Column("last_seen", Text),
    Column("online", Integer, nullable=False, server_default="0"),
    Column("backlog", BigInteger),
    Column("oldest_unsent_age_s", Float),
    Column("free_disk_bytes", BigInteger),
    Column("config_version", Text),
    Column("status_at", Text),
    Column("status_json", Text),
    Column("high_seq", BigInteger, nullable=False, server_default="0"),
    Column("previous_key", Text),
    Column("previous_key_until", Text),
)

results = Table(
    "results",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("station", Text, ForeignKey("stations.id"), nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("instrument_serial", Text, nullable=False),
    Column("instrument_model", Text, nullable=False),
    Column("instrument_driver", Text, nullable=False),
    Column("sample_id", Text, nullable=False),
    Column("product", Text, nullable=False),
    Column("producer", Text),
    Column("sampled_at", Text),
    Column("method", Text, nullable=False),
    Column("analyte", Text, nullable=False),
    Column("channel", Integer, nullable=False),
    Column("measured_at", Text, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("values_json", Text, nullable=False),
    Column("qc_json", Text, nullable=False),
    Column("algorithm", Text, nullable=False),
    Column("config_version", Text, nullable=False),
    Column("raw_json", Text),
    Column("operator", Text),
    Column("sig", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("sha256", Text),
    Column("ingest_flags", Text, nullable=False, server_default="[]"),
    Column("measured_at_sent", Text),
    Column(
        "rowid",
        BigInteger,
        server_default=RESULTS_ROWID_SEQ.next_value(),
        nullable=False,
        info={POSTGRES_ONLY: True},
    ),
    Index("idx_results_station_seq", "station", "seq"),
    Index("idx_results_measured", "measured_at"),
    Index("idx_results_node_measured", "node_id", "measured_at"),
    Index("idx_results_analyte", "analyte", "measured_at"),
    Index("idx_results_product", "product", "measured_at"),
    Index("idx_results_verdict", "verdict", "measured_at"),
    Index("idx_results_node_verdict", "node_id", "verdict", "measured_at"),
    Index("idx_results_station_sample", "station", "sample_id"),
    Index("idx_results_rowid", "rowid", info={POSTGRES_ONLY: True}),
    postgresql_partition_by="RANGE (id)",  # monthly partitions on the UUIDv7 id: cloud.partitions
)

seq_gaps = Table(
    "seq_gaps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("station", Text, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("detected_at", Text, nullable=False),
    Column("closed_at", Text),
    Index("idx_seq_gaps_station", "station", "closed_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("station", Text),
    Column("result_id", Text),
    Column("sha256", Text),
    Column("stored_sha256", Text),
    Index("idx_dead_letters_received", "received_at"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("station", Text, ForeignKey("stations.id"), nullable=False),
    Column("origin_node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("level", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("result_id", Text, nullable=False),
    Column("product", Text, nullable=False),
    Column("analyte", Text, nullable=False),
    Column("opened_at", Text, nullable=False),
    Column("deadline", Text, nullable=False),
    Column("assignee", Text),
    Column("closed_at", Text),
    Column("escalations", Integer, nullable=False, server_default="0"),
    Column("reminded", Text, nullable=False, server_default="none"),
    Column("updated_at", Text, nullable=False),
    CheckConstraint("status IN ('open','assigned','feedback','closed')", name="ck_cases_status"),
    Index("idx_cases_status_deadline", "status", "deadline"),
    Index("idx_cases_origin", "origin_node_id"),
    Index("idx_cases_key", "station", "product", "analyte", "status"),
)

case_actions = Table(
    "case_actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("at", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("note", Text),
    Column("data_json", Text),
    Index("idx_case_actions_case", "case_id", "id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id")),
    Column("display_name", Text),
    Column("password_hash", Text),
    Column("password_changed_at", Text),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", Text),
    Column("revoked_at", Text),
    Column("created_at", Text, nullable=False),
    Column("created_by", Text),
    CheckConstraint("role IN ('admin','county','town','village','station')", name="ck_users_role"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("access_hash", Text, nullable=False, unique=True),
    Column("access_expires_at", Text),
    Column("refresh_hash", Text, unique=True),
    Column("refresh_expires_at", Text),
    Column("created_at", Text, nullable=False),
    Column("revoked_at", Text),
    CheckConstraint("kind IN ('session','machine')", name="ck_tokens_kind"),
    Index("idx_tokens_user", "user_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text),
    Column("ip", Text),
    Column("detail_json", Text),
    Index("idx_audit_log_at", "at"),
    Index("idx_audit_log_target", "target", "at"),
)

configs = Table(
    "configs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("station", Text, ForeignKey("stations.id"), nullable=False),
    Column("version", Text, nullable=False),
    Column("issued_at", Text, nullable=False),
    Column("issued_by", Text, nullable=False),
    Column("target_node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("published_at", Text),
    Index("idx_configs_station", "station", "id"),
)

producers = Table(
    "producers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("code", Text, nullable=False, unique=True),
    Column("village_node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("contact", Text),
    Column("phone", Text),
    Column("products_json", Text, nullable=False),
    Column("plots_json", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    CheckConstraint("kind IN ('企业','合作社','家庭农场','种养大户','个人')", name="ck_producers_kind"),
    Index("idx_producers_village", "village_node_id"),
)

samples = Table(
    "samples",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("station", Text, ForeignKey("stations.id"), nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("code", Text, nullable=False),
    Column("root_code", Text, nullable=False),
    Column("producer_id", Integer, ForeignKey("producers.id"), nullable=False),
    Column("product", Text, nullable=False),
    Column("batch", Text, nullable=False),
    Column("plot", Text),
    Column("quantity_kg", Float, nullable=False),
    Column("market_date", Text),
    Column("sampler", Text, nullable=False),
    Column("registered_at", Text, nullable=False),
    Column("retest_of", Text),
    Column("status", Text, nullable=False),
    Column("decided_at", Text),
    Column("received_at", Text, nullable=False),
    Column("sig", Text, nullable=False),
    UniqueConstraint("station", "code", name="uq_samples_station_code"),
    CheckConstraint("status IN ('pending','released','held','retest')", name="ck_samples_status"),
    Index("idx_samples_root", "station", "root_code"),
    Index("idx_samples_producer", "producer_id", "registered_at"),
    Index("idx_samples_node", "node_id", "registered_at"),
)

certificates = Table(
    "certificates",
    metadata,
    Column("number", Text, primary_key=True),
    Column("station", Text, nullable=False),
    Column("root_code", Text, nullable=False),
    Column("sample_id", Text, ForeignKey("samples.id"), nullable=False),
    Column("issued_at", Text, nullable=False),
    Column("summary_json", Text, nullable=False),
    Column("revoked_at", Text),
    UniqueConstraint("station", "root_code", name="uq_certificates_station_root"),
)

risk_alerts = Table(
    "risk_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("period", Text, nullable=False),
    Column("analyte", Text),
    Column("product", Text),
    Column("producer_id", Integer, ForeignKey("producers.id")),
    Column("station", Text),
    Column("observed", Integer, nullable=False),
    Column("tests", Integer, nullable=False),
    Column("expected_rate", Float),
    Column("p_value", Float),
    Column("detail_json", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("acknowledged_at", Text),
    Column("acknowledged_by", Text),
    CheckConstraint(
        "kind IN ('positivity_rise','producer_repeat','station_invalid')", name="ck_risk_alerts_kind"
    ),
    CheckConstraint("severity IN ('high','medium')", name="ck_risk_alerts_severity"),
    Index("idx_risk_alerts_node", "node_id", "created_at"),
    Index("idx_risk_alerts_created", "created_at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", Integer, ForeignKey("grid_nodes.id"), nullable=False),
    Column("title", Text, nullable=False),
    Column("start_date", Text, nullable=False),
    Column("due_date", Text, nullable=False),
    Column("target", Integer, nullable=False),
    Column("products_json", Text, nullable=False),
    Column("analytes_json", Text, nullable=False),
    Column("note", Text),
    Column("source", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("cancelled_at", Text),
    CheckConstraint("target > 0", name="ck_tasks_target"),
    CheckConstraint("source IN ('manual','risk')", name="ck_tasks_source"),
    Index("idx_tasks_node", "node_id", "due_date"),
)
Index("idx_samples_registered", samples.c.registered_at)

notify_channels = Table(
    "notify_channels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", Text),
    Column("phones_json", Text, nullable=False),
    Column("events_json", Text, nullable=False),
    Column("min_severity", Text, nullable=False),
    Column("node_id", Integer, ForeignKey("grid_nodes.id")),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("enabled", Integer, nullable=False, server_default="1"),
    Column("created_at", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("deleted_at", Text),
    CheckConstraint("kind IN ('webhook','wecom','dingtalk','sms')", name="ck_notify_channels_kind"),
    CheckConstraint("min_severity IN ('medium','high')", name="ck_notify_channels_severity"),
    CheckConstraint("(node_id IS NULL) != (user_id IS NULL)", name="ck_notify_channels_owner"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel_id", Integer, ForeignKey("notify_channels.id"), nullable=False),
    Column("event_key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("data_json", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Text, nullable=False),
    Column("lease_until", Text),
    Column("last_attempt_at", Text),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", Text, nullable=False),
    Column("sent_at", Text),
    UniqueConstraint("channel_id", "event_key", name="uq_notifications_channel_event"),
    CheckConstraint("status IN ('pending','sent','expired')", name="ck_notifications_status"),
    Index("idx_notifications_due", "status", "next_attempt_at"),
)

notify_cursor = Table(
    "notify_cursor",
    metadata,
    Column("name", Text, primary_key=True),
    Column("last_id", BigInteger, nullable=False),
)

DERIVED = "derived"
"""Table.info key: the table is kept by triggers from other tables (cloud.rollup), never written directly:
`kuaijian cloud migrate-db` does not copy it, the target's triggers rebuild it (and the counts are compared)."""

result_days = Table(
    "result_days",
    metadata,
    Column("day", Text, primary_key=True),
    Column("node_id", Integer, primary_key=True),
    Column("verdict", Text, primary_key=True),
    Column("tests", BigInteger, nullable=False),
    Column("flawed", BigInteger, nullable=False),
    Column("timely", BigInteger, nullable=False),
    Column("registered", BigInteger, nullable=False),
    Index("idx_result_days_node", "node_id", "day"),
    info={DERIVED: True},
)

result_day_items = Table(
    "result_day_items",
    metadata,
    Column("day", Text, primary_key=True),
    Column("node_id", Integer, primary_key=True),
    Column("analyte", Text, primary_key=True),
    Column("product", Text, primary_key=True),
    Column("verdict", Text, primary_key=True),
    Column("tests", BigInteger, nullable=False),
    Index("idx_result_day_items_node", "node_id", "day"),
    info={DERIVED: True},
)

result_totals = Table(
    "result_totals",
    metadata,
    Column("node_id", Integer, primary_key=True),
    Column("analyte", Text, primary_key=True),
    Column("product", Text, primary_key=True),
    Column("verdict", Text, primary_key=True),
    Column("tests", BigInteger, nullable=False),
    info={DERIVED: True},
)

ingest_sessions = Table(
    "ingest_sessions",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("started_at", Text, nullable=False),
    Column("stopped_at", Text),
    Column("seen_at", Text),
)

TABLES: tuple[Table, ...] = tuple(metadata.sorted_tables)
"""Every table, parents before children (copy order)."""


def columns_for(table: Table, dialect: str) -> list[str]:
    """The column names `table` has on `dialect` (PostgreSQL-only columns left out for SQLite)."""
    return [c.name for c in table.columns if dialect == "postgresql" or not c.info.get(POSTGRES_ONLY)]
