"""Accounts: password logins with sessions (short-lived access token + refresh token), machine tokens that
expire and can be revoked, lockout counters, and the audit log. The old users.token_hash becomes a machine
token without an expiry (it was issued before tokens expired).

SQLite rebuilds `users` the way SQLite documents it (cloud.db.migrate runs revisions with foreign keys off;
this one checks ``PRAGMA foreign_key_check`` before its commit); PostgreSQL alters the table in place.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NEW_USER_COLUMNS = (
    ("display_name", sa.Text, None),
    ("password_hash", sa.Text, None),
    ("password_changed_at", sa.Text, None),
    ("failed_logins", sa.Integer, "0"),
    ("locked_until", sa.Text, None),
    ("revoked_at", sa.Text, None),
    ("created_by", sa.Text, None),
)


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("access_hash", sa.Text, nullable=False, unique=True),
        sa.Column("access_expires_at", sa.Text),
        sa.Column("refresh_hash", sa.Text, unique=True),
        sa.Column("refresh_expires_at", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.Text),
        sa.CheckConstraint("kind IN ('session','machine')", name="ck_tokens_kind"),
    )
    op.create_index("idx_tokens_user", "tokens", ["user_id"])
    op.execute(
        "INSERT INTO tokens (user_id, kind, access_hash, created_at)"
        " SELECT id, 'machine', token_hash, created_at FROM users"
    )
    if sqlite:
        op.execute(
            """CREATE TABLE users_new (
                id INTEGER NOT NULL PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                node_id INTEGER REFERENCES grid_nodes (id),
                display_name TEXT,
                password_hash TEXT,
                password_changed_at TEXT,
                failed_logins INTEGER DEFAULT '0' NOT NULL,
                locked_until TEXT,
                revoked_at TEXT,
                created_at TEXT NOT NULL,
                created_by TEXT,
                CONSTRAINT ck_users_role CHECK (role IN ('admin','county','town','village','station'))
            )"""
        )
        op.execute(
            "INSERT INTO users_new (id, name, role, node_id, created_at)"
            " SELECT id, name, role, node_id, created_at FROM users"
        )
        op.execute("DROP TABLE users")
        op.execute("ALTER TABLE users_new RENAME TO users")
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the users rebuild: {broken[:5]}")
    else:
        for name, type_, default in _NEW_USER_COLUMNS:
            op.add_column("users", sa.Column(name, type_, nullable=default is None, server_default=default))
        op.drop_column("users", "token_hash")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("ip", sa.Text),
        sa.Column("detail_json", sa.Text),
    )
    op.create_index("idx_audit_log_at", "audit_log", ["at"])
    op.create_index("idx_audit_log_target", "audit_log", ["target", "at"])
