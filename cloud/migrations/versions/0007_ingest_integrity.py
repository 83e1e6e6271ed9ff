"""Ingest integrity: the SHA-256 of each stored result and dead letter as received (rejections name it),
ingest flags (implausible_time, seq_jump) and the station's own measured_at when it was implausible; stored
times normalised to UTC.

The normalisation rewrites SQLite text only: a PostgreSQL database gets its rows from this release's ingest
(UTC already) or from `migrate-db` (which migrates the source to head, normalising it, before copying).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("sha256", sa.Text))
    op.add_column("dead_letters", sa.Column("stored_sha256", sa.Text))
    op.add_column("results", sa.Column("sha256", sa.Text))
    op.add_column("results", sa.Column("ingest_flags", sa.Text, nullable=False, server_default="[]"))
    op.add_column("results", sa.Column("measured_at_sent", sa.Text))
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        """UPDATE results SET measured_at = strftime('%Y-%m-%dT%H:%M:%S', measured_at)
            || CASE WHEN substr(measured_at, 20, 1) = '.' THEN substr(measured_at, 20, 7) ELSE '' END || '+00:00'
            WHERE measured_at NOT LIKE '%+00:00' AND strftime('%Y', measured_at) BETWEEN '0001' AND '9999'"""
    )
    op.execute(
        """UPDATE samples SET registered_at = strftime('%Y-%m-%dT%H:%M:%S', registered_at)
            || CASE WHEN substr(registered_at, 20, 1) = '.' THEN substr(registered_at, 20, 7) ELSE '' END
            || '+00:00'
            WHERE registered_at NOT LIKE '%+00:00' AND strftime('%Y', registered_at) BETWEEN '0001' AND '9999'"""
    )
