"""Initial schema: grid, stations, results, seq gaps, dead letters, cases, users, configs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "grid_nodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("grid_nodes.id")),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("grid_head", sa.Text),
        sa.Column("information_officer", sa.Text),
        sa.Column("co_manager", sa.Text),
        sa.CheckConstraint("level IN ('county','town','village','station')", name="ck_grid_nodes_level"),
    )
    op.create_index("idx_grid_nodes_parent", "grid_nodes", ["parent_id"])
    op.create_index("idx_grid_nodes_path", "grid_nodes", ["path"])

    op.create_table(
        "stations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False, unique=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("mqtt_username", sa.Text, nullable=False, unique=True),
        sa.Column("mqtt_password_hash", sa.Text, nullable=False),
        sa.Column("enrolled_at", sa.Text, nullable=False),
        sa.Column("last_seen", sa.Text),
        sa.Column("online", sa.Integer, nullable=False, server_default="0"),
        sa.Column("backlog", sa.BigInteger),
        sa.Column("oldest_unsent_age_s", sa.Float),
        sa.Column("free_disk_bytes", sa.BigInteger),
        sa.Column("config_version", sa.Text),
        sa.Column("status_at", sa.Text),
        sa.Column("status_json", sa.Text),
        sa.Column("high_seq", sa.BigInteger, nullable=False, server_default="0"),
    )

    result_columns: list[sa.schema.SchemaItem] = [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("station", sa.Text, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("instrument_serial", sa.Text, nullable=False),
        sa.Column("instrument_model", sa.Text, nullable=False),
        sa.Column("instrument_driver", sa.Text, nullable=False),
        sa.Column("sample_id", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("producer", sa.Text),
        sa.Column("sampled_at", sa.Text),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("analyte", sa.Text, nullable=False),
        sa.Column("channel", sa.Integer, nullable=False),
        sa.Column("measured_at", sa.Text, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("values_json", sa.Text, nullable=False),
        sa.Column("qc_json", sa.Text, nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("config_version", sa.Text, nullable=False),
        sa.Column("raw_json", sa.Text),
        sa.Column("operator", sa.Text),
        sa.Column("sig", sa.Text, nullable=False),
        sa.Column("received_at", sa.Text, nullable=False),
    ]
    if postgres:
        # SQLite's implicit rowid, made explicit: insert order, what the live feed tails
        op.execute("CREATE SEQUENCE results_rowid_seq")
        result_columns.append(
            sa.Column(
                "rowid", sa.BigInteger, server_default=sa.text("nextval('results_rowid_seq')"), nullable=False
            )
        )
    op.create_table("results", *result_columns)
    op.create_index("idx_results_station_seq", "results", ["station", "seq"])
    op.create_index("idx_results_measured", "results", ["measured_at"])
    op.create_index("idx_results_node_measured", "results", ["node_id", "measured_at"])
    op.create_index("idx_results_analyte", "results", ["analyte", "measured_at"])
    op.create_index("idx_results_product", "results", ["product", "measured_at"])
    op.create_index("idx_results_verdict", "results", ["verdict", "measured_at"])

    op.create_table(
        "seq_gaps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("station", sa.Text, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("detected_at", sa.Text, nullable=False),
        sa.Column("closed_at", sa.Text),
    )
    op.create_index("idx_seq_gaps_station", "seq_gaps", ["station", "closed_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("station", sa.Text),
        sa.Column("result_id", sa.Text),
    )
    op.create_index("idx_dead_letters_received", "dead_letters", ["received_at"])

    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("station", sa.Text, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("origin_node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("result_id", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("analyte", sa.Text, nullable=False),
        sa.Column("opened_at", sa.Text, nullable=False),
        sa.Column("deadline", sa.Text, nullable=False),
        sa.Column("assignee", sa.Text),
        sa.Column("closed_at", sa.Text),
        sa.Column("escalations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reminded", sa.Text, nullable=False, server_default="none"),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('open','assigned','feedback','closed')", name="ck_cases_status"),
    )
    op.create_index("idx_cases_status_deadline", "cases", ["status", "deadline"])
    op.create_index("idx_cases_origin", "cases", ["origin_node_id"])
    op.create_index("idx_cases_key", "cases", ["station", "product", "analyte", "status"])

    op.create_table(
        "case_actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("data_json", sa.Text),
    )
    op.create_index("idx_case_actions_case", "case_actions", ["case_id", "id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id")),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.CheckConstraint("role IN ('admin','county','town','village','station')", name="ck_users_role"),
    )

    op.create_table(
        "configs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("station", sa.Text, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Text, nullable=False),
        sa.Column("issued_by", sa.Text, nullable=False),
        sa.Column("target_node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("published_at", sa.Text),
    )
    op.create_index("idx_configs_station", "configs", ["station", "id"])
