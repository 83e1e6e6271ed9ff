"""Producers (生产主体) under their village; `code` is the credit code or, for individuals, the ID number.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "producers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("village_node_id", sa.Integer, sa.ForeignKey("grid_nodes.id"), nullable=False),
        sa.Column("contact", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("products_json", sa.Text, nullable=False),
        sa.Column("plots_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.CheckConstraint(
            "kind IN ('企业','合作社','家庭农场','种养大户','个人')", name="ck_producers_kind"
        ),
    )
    op.create_index("idx_producers_village", "producers", ["village_node_id"])
