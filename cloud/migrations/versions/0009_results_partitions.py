"""Results partitioned by month on PostgreSQL (range partitions on the UUIDv7 id, see cloud.partitions),
with a DEFAULT partition, and an index on ``rowid`` (the live feed's newest-first and tail queries). SQLite
is unchanged.

The existing rows are copied into the partitioned table in insert order (their ``rowid`` kept), then the
keys and indexes are built once over the copied rows. A county's table of a few million rows takes minutes;
run it with ingest stopped, like any migration.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from alembic import op

from cloud import partitions

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES: tuple[tuple[str, str], ...] = (
    ("idx_results_station_seq", "station, seq"),
    ("idx_results_measured", "measured_at"),
    ("idx_results_node_measured", "node_id, measured_at"),
    ("idx_results_analyte", "analyte, measured_at"),
    ("idx_results_product", "product, measured_at"),
    ("idx_results_verdict", "verdict, measured_at"),
    ("idx_results_station_sample", "station, sample_id"),
    ("idx_results_rowid", "rowid"),
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return

    def run(sql: str) -> Sequence[Sequence[Any]]:
        res = bind.exec_driver_sql(sql)
        return res.fetchall() if res.returns_rows else []

    run("ALTER TABLE results RENAME TO results_unpartitioned")
    run("ALTER TABLE results_unpartitioned DROP CONSTRAINT results_pkey")
    for name, _ in INDEXES[:-1]:
        run(f"DROP INDEX IF EXISTS {name}")
    run(
        "CREATE TABLE results (LIKE results_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        " PARTITION BY RANGE (id)"
    )
    partitions.create_default(run)
    months = set(partitions.wanted(run, datetime.now(UTC).date()))  # this month and those ahead
    months |= set(partitions.months_with_rows(run, "results_unpartitioned", max(months)))
    for month in sorted(months):
        partitions.create(run, month)
    run("INSERT INTO results SELECT * FROM results_unpartitioned ORDER BY rowid")
    run("DROP TABLE results_unpartitioned")
    run("ALTER TABLE results ADD CONSTRAINT results_pkey PRIMARY KEY (id)")
    run(
        "ALTER TABLE results ADD CONSTRAINT results_station_fkey FOREIGN KEY (station) REFERENCES stations (id)"
    )
    run(
        "ALTER TABLE results ADD CONSTRAINT results_node_id_fkey FOREIGN KEY (node_id) REFERENCES grid_nodes (id)"
    )
    for name, columns in INDEXES:
        run(f"CREATE INDEX {name} ON results ({columns})")
    run("ANALYZE results")
