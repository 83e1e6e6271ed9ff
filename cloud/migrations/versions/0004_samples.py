"""Samples registered at stations (their batch = the original sample's code, `root_code`) and the compliance
certificates issued when a batch may go to market.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("station", sa.Text, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("root_code", sa.Text, nullable=False),
        sa.Column("producer_id", sa.Integer, sa.ForeignKey("producers.id"), nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("batch", sa.Text, nullable=False),
        sa.Column("plot", sa.Text),
        sa.Column("quantity_kg", sa.Float, nullable=False),
        sa.Column("market_date", sa.Text),
        sa.Column("sampler", sa.Text, nullable=False),
        sa.Column("registered_at", sa.Text, nullable=False),
        sa.Column("retest_of", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("decided_at", sa.Text),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.Column("sig", sa.Text, nullable=False),
        sa.UniqueConstraint("station", "code", name="uq_samples_station_code"),
        sa.CheckConstraint("status IN ('pending','released','held','retest')", name="ck_samples_status"),
    )
    op.create_index("idx_samples_root", "samples", ["station", "root_code"])
    op.create_index("idx_samples_producer", "samples", ["producer_id", "registered_at"])
    op.create_index("idx_samples_node", "samples", ["node_id", "registered_at"])
    op.create_index("idx_results_station_sample", "results", ["station", "sample_id"])

    op.create_table(
        "certificates",
        sa.Column("number", sa.Text, primary_key=True),
        sa.Column("station", sa.Text, nullable=False),
        sa.Column("root_code", sa.Text, nullable=False),
        sa.Column("sample_id", sa.Text, sa.ForeignKey("samples.id"), nullable=False),
        sa.Column("issued_at", sa.Text, nullable=False),
        sa.Column("summary_json", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.Text),
        sa.UniqueConstraint("station", "root_code", name="uq_certificates_station_root"),
    )
