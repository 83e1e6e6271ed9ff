"""Ingest sessions get a heartbeat: `seen_at`, written by each running ingest worker every
`ingest_heartbeat_s`, so a worker that crashed (never recorded as stopped) is recognised once its heartbeat is
`INGEST_DEAD_AFTER` beats old and its persistent broker session ended by another worker.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingest_sessions", sa.Column("seen_at", sa.Text))
