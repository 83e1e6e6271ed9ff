"""An index on results (node_id, verdict, measured_at): a scope's results of one verdict, newest first (the
results list filtered by node and verdict — "this town's positives" — reads only those rows instead of every
result of the scope).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("idx_results_node_verdict", "results", ["node_id", "verdict", "measured_at"])
