"""Ingest sessions: each ingest worker's MQTT client id with when it started and stopped, so a worker starting
can end the persistent sessions of workers that are gone.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_sessions",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("stopped_at", sa.Text),
    )
