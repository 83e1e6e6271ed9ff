"""Alembic environment: runs the revisions on the connection cloud.db.migrate hands over.

Does: configure Alembic with that connection (SQLite: batch mode, so column changes rebuild tables the way
SQLite needs) and run the revisions, each in its own transaction.
Does not: open connections or read alembic.ini (there is none: cloud.db builds the configuration).
"""

from __future__ import annotations

from alembic import context

from cloud.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through cloud.db.migrate (it passes the connection)")
context.configure(
    connection=connection,
    target_metadata=metadata,
    transaction_per_migration=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
