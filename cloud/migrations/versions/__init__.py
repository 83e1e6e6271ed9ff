"""Alembic revisions, oldest first by their numbers; each runs in its own transaction."""
