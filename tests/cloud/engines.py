"""The cloud suite runs on both database engines: fresh databases for a test or a module.

Does: hand out a new empty-but-migrated database per call — a SQLite file in the test's temporary directory,
or a PostgreSQL database created from a migrated template on the session's private server
(tests/postgres.py) — and close the pooled connections to them afterwards.
Does not: start the server when only SQLite tests run (the PostgreSQL fixture is requested lazily).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from cloud.db import dispose_engine, open_db
from tests.postgres import PostgresServer

ENGINES = ("sqlite", "postgresql")
TEMPLATE = "kj_template"
_numbers = itertools.count(1)


def make_template(server: PostgresServer) -> str:
    """Create and migrate the template database every test database is copied from."""
    url = server.create_database(TEMPLATE)
    open_db(url).close()
    dispose_engine(url)  # a template must have no open connections when it is copied
    return TEMPLATE


@dataclass
class Databases:
    """Fresh databases of one engine; `close()` releases the connections to them."""

    engine: str
    tmp: Path
    server: PostgresServer | None = None
    template: str | None = None
    made: list[str] = field(default_factory=list)

    def new(self, name: str = "cloud") -> str:
        """A new migrated database: a SQLite file path or a postgresql:// URL."""
        if self.engine == "sqlite":
            target = str(self.tmp / f"{name}-{next(_numbers)}.db")
            open_db(target).close()
        else:
            assert self.server is not None
            assert self.template is not None
            target = self.server.create_database(f"kj_{next(_numbers)}", template=self.template)
        self.made.append(target)
        return target

    def empty(self, name: str = "empty") -> str:
        """A new database with no schema at all (to test migrations from an older revision)."""
        if self.engine == "sqlite":
            target = str(self.tmp / f"{name}-{next(_numbers)}.db")
        else:
            assert self.server is not None
            target = self.server.create_database(f"kj_{next(_numbers)}")
        self.made.append(target)
        return target

    def close(self) -> None:
        for target in self.made:
            dispose_engine(target)
        self.made.clear()
