"""The county's command view: risk alerts, sampling tasks, notification channels and their durable queue, and
optional coordinates of grid nodes for the offline map.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("analyte", sa.Text),
        sa.Column("product", sa.Text),
        sa.Column("producer_id", sa.Integer, sa.ForeignKey("producers.id")),
        sa.Column("station", sa.Text),
        sa.Column("observed", sa.Integer, nullable=False),
        sa.Column("tests", sa.Integer, nullable=False),
        sa.Column("expected_rate", sa.Float),
        sa.Column("p_value", sa.Float),
        sa.Column("detail_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("acknowledged_at", sa.Text),
        sa.Column("acknowledged_by", sa.Text),
        sa.CheckConstraint(
            "kind IN ('positivity_rise','producer_repeat','station_invalid')", name="ck_risk_alerts_kind"
        ),
        sa.CheckConstraint("severity IN ('high','medium')", name="ck_risk_alerts_severity"),
    )
    op.create_index("idx_risk_alerts_node", "risk_alerts", ["node_id", "created_at"])
    op.create_index("idx_risk_alerts_created", "risk_alerts", ["created_at"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("start_date", sa.Text, nullable=False),
        sa.Column("due_date", sa.Text, nullable=False),
        sa.Column("target", sa.Integer, nullable=False),
        sa.Column("products_json", sa.Text, nullable=False),
        sa.Column("analytes_json", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("cancelled_at", sa.Text),
        sa.CheckConstraint("target > 0", name="ck_tasks_target"),
        sa.CheckConstraint("source IN ('manual','risk')", name="ck_tasks_source"),
    )
    op.create_index("idx_tasks_node", "tasks", ["node_id", "due_date"])
    op.create_index("idx_samples_registered", "samples", ["registered_at"])

    op.create_table(
        "notify_channels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("phones_json", sa.Text, nullable=False),
        sa.Column("events_json", sa.Text, nullable=False),
        sa.Column("min_severity", sa.Text, nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id")),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("enabled", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("deleted_at", sa.Text),
        sa.CheckConstraint("kind IN ('webhook','wecom','dingtalk','sms')", name="ck_notify_channels_kind"),
        sa.CheckConstraint("min_severity IN ('medium','high')", name="ck_notify_channels_severity"),
        sa.CheckConstraint("(node_id IS NULL) != (user_id IS NULL)", name="ck_notify_channels_owner"),
    )

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("notify_channels.id"), nullable=False),
        sa.Column("event_key", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("data_json", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Text, nullable=False),
        sa.Column("lease_until", sa.Text),
        sa.Column("last_attempt_at", sa.Text),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("sent_at", sa.Text),
        sa.UniqueConstraint("channel_id", "event_key", name="uq_notifications_channel_event"),
        sa.CheckConstraint("status IN ('pending','sent','expired')", name="ck_notifications_status"),
    )
    op.create_index("idx_notifications_due", "notifications", ["status", "next_attempt_at"])

    op.create_table(
        "notify_cursor",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("last_id", sa.BigInteger, nullable=False),
    )

    op.add_column("grid_nodes", sa.Column("lat", sa.Float))
    op.add_column("grid_nodes", sa.Column("lon", sa.Float))
