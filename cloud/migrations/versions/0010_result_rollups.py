"""Aggregates of the results (cloud.rollup): ``result_days``, ``result_day_items`` and ``result_totals``, the triggers that
keep them in the transaction of every insert into results or samples, and their first fill from the results
already stored.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud import rollup

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "result_days",
        sa.Column("day", sa.Text, nullable=False),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("tests", sa.BigInteger, nullable=False),
        sa.Column("flawed", sa.BigInteger, nullable=False),
        sa.Column("timely", sa.BigInteger, nullable=False),
        sa.Column("registered", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "node_id", "verdict"),
    )
    op.create_index("idx_result_days_node", "result_days", ["node_id", "day"])
    op.create_table(
        "result_day_items",
        sa.Column("day", sa.Text, nullable=False),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("analyte", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("tests", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "node_id", "analyte", "product", "verdict"),
    )
    op.create_index("idx_result_day_items_node", "result_day_items", ["node_id", "day"])
    op.create_table(
        "result_totals",
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("analyte", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("tests", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("node_id", "analyte", "product", "verdict"),
    )
    for sql in rollup.fill_sql(dialect, "results"):
        op.execute(sql)
    for sql in rollup.trigger_sql(dialect):
        op.execute(sql)
