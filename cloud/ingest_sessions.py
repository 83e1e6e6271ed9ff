"""The ingest workers' record of their broker sessions (``ingest_sessions``): who runs, who stopped, who
crashed — so the persistent sessions of workers that are gone stop taking a share of the results.

Does:
- `SessionBook.started()` — record this worker (started, seen now); the other workers recorded as stopped.
- `SessionBook.heartbeat()` — every `Settings.ingest_heartbeat_s` (in its own thread): record that this worker
  is alive (``seen_at``); once its own heartbeats have reached the database `INGEST_DEAD_AFTER` times in a row,
  also name the workers not recorded as stopped whose heartbeat is that many beats old (crashed). A database
  outage silences every worker: the count starts again after one, so no live worker looks dead to another
  that just got its database back (the workers' clocks are assumed to agree within a beat).
- `SessionBook.end()` — end the broker session of each worker gone (`end`, given by the MQTT side: connect
  under its id with a clean start, then leave) and forget its row — unless it was seen again meanwhile.
- `SessionBook.stopped()` — record that this worker stopped cleanly.

Does not: talk MQTT itself (the `end` callable does), or receive anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from cloud.clock import Clock
from cloud.db import Database, connect, transaction
from cloud.errors import DatabaseError
from cloud.settings import Settings

log = logging.getLogger("cloud.ingest")

INGEST_DEAD_AFTER = 3
"""Heartbeats (`Settings.ingest_heartbeat_s`) a running ingest worker may miss before it counts as crashed."""

Gone = list[tuple[str, str]]
"""(client id, when it was last seen as recorded) of workers whose sessions are to be ended."""

_RECORD = (
    "INSERT INTO ingest_sessions (client_id, started_at, stopped_at, seen_at) VALUES (?, ?, NULL, ?)"
    " ON CONFLICT (client_id) DO UPDATE SET stopped_at = NULL, seen_at = excluded.seen_at"
)


class SessionBook:
    """The ``ingest_sessions`` rows of one worker (`client_id`) and its view of the others."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        client_id: str,
        end: Callable[[str], bool],
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.client_id = client_id
        self._end = end
        self._stop = stop
        self.heartbeats = 0
        """Heartbeats recorded since start."""

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Database]:
        """One transaction on a connection of its own, closed after it."""
        db = connect(self.settings.database)
        try:
            with transaction(db):
                yield db
        finally:
            db.close()

    def started(self) -> Gone:
        """Record this worker as started and seen now; the other workers recorded as stopped."""
        with self._transaction() as db:
            now = self.clock.now().isoformat()
            db.execute(_RECORD + ", started_at = excluded.started_at", [self.client_id, now, now])
            return self._gone(db, crashed=False)

    def stopped(self) -> None:
        """Record that this worker stopped cleanly (logged, not raised, when the database cannot be reached)."""
        try:
            with self._transaction() as db:
                db.execute(
                    "UPDATE ingest_sessions SET stopped_at = ? WHERE client_id = ?",
                    [self.clock.now().isoformat(), self.client_id],
                )
        except DatabaseError:
            log.exception("could not record that ingest worker %s stopped", self.client_id)

    def heartbeat(self) -> None:
        """Until stop: every `ingest_heartbeat_s` record that this worker is alive, and end the sessions of the
        workers that stopped or (after `INGEST_DEAD_AFTER` healthy beats of its own) went silent."""
        db: Database | None = None
        healthy = 0  # heartbeats in a row that reached the database
        try:
            while not self._stop.wait(self.settings.ingest_heartbeat_s):
                try:
                    if db is None:
                        db = connect(self.settings.database)
                    with transaction(db):
                        now = self.clock.now().isoformat()
                        db.execute(_RECORD, [self.client_id, now, now])
                        healthy += 1
                        gone = self._gone(db, crashed=healthy > INGEST_DEAD_AFTER)
                except DatabaseError as exc:
                    healthy = 0
                    log.warning("ingest worker %s: heartbeat not recorded: %s", self.client_id, exc)
                    if db is not None:
                        db.close()
                        db = None
                    continue
                self.heartbeats += 1
                self.end(gone)
        finally:
            if db is not None:
                db.close()

    def end(self, gone: Gone) -> None:
        """End the broker session of each worker in `gone` and forget its row (kept when it was seen again
        or started again since: its seen time changed)."""
        for client_id, seen in gone:
            if self._stop.is_set() or not self._end(client_id):
                continue
            with self._transaction() as db:
                db.execute(
                    "DELETE FROM ingest_sessions WHERE client_id = ? AND (stopped_at IS NOT NULL"
                    " OR COALESCE(seen_at, started_at) = ?)",
                    [client_id, seen],
                )
            log.info("ended the broker session of ingest worker %s (stopped or crashed)", client_id)

    def _gone(self, db: Database, *, crashed: bool) -> Gone:
        """The other workers recorded as stopped — and with `crashed`, those not recorded as stopped whose
        heartbeat is `INGEST_DEAD_AFTER` beats old."""
        cutoff = self.clock.now() - timedelta(seconds=INGEST_DEAD_AFTER * self.settings.ingest_heartbeat_s)
        gone: Gone = []
        rows = db.execute(
            "SELECT client_id, stopped_at, COALESCE(seen_at, started_at) FROM ingest_sessions WHERE client_id != ?",
            [self.client_id],
        ).fetchall()
        for client_id, stopped_at, seen in rows:
            if stopped_at is not None:
                gone.append((str(client_id), str(seen)))
            elif crashed and _older(str(seen), cutoff):
                log.warning(
                    "ingest worker %s has not been seen since %s (%d heartbeats): it counts as crashed and its"
                    " broker session is ended", client_id, seen, INGEST_DEAD_AFTER,
                )  # fmt: skip
                gone.append((str(client_id), str(seen)))
        return gone


def _older(seen: str, cutoff: datetime) -> bool:
    """Whether the recorded time `seen` lies before `cutoff` (one that cannot be read counts as old)."""
    try:
        when = datetime.fromisoformat(seen)
    except ValueError:
        return True
    return when.tzinfo is None or when < cutoff
