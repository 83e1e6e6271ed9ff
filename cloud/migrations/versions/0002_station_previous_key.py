"""Key rotation: the replaced station key keeps verifying until `previous_key_until`, so results a gateway
signed before it got the new key (already in its outbox) are not rejected.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stations", sa.Column("previous_key", sa.Text))
    op.add_column("stations", sa.Column("previous_key_until", sa.Text))
