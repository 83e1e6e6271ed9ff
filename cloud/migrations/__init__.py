"""Alembic migration history of the cloud database: one history for SQLite and PostgreSQL (see cloud.db)."""
