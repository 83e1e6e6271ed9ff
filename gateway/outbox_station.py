"""The outbox's station-originated rows: sample registrations and the cloud-pushed station config.

Does: store a sample registration under its unique code and queue it for delivery in ONE transaction with the
seq counter (the same id / seq / signature / ack rules as a result; `DuplicateCode` for a code taken), list
the registrations with their delivery state; store a pushed `StationConfig` with its version and make it the
one in force (keeping it and the `KEEP_CONFIGS` stored before it), read the one in force back.

Does not: open or own the database (`gateway.outbox.Outbox` is these rows together with the acquisition and
delivery sides), validate registrations or configs (`gateway.samples`, `gateway.link`), or send anything.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.errors import DuplicateCode, OutboxCorrupt
from gateway.outbox_db import COUNT_ENQUEUED, LAST_SEQ, OutboxDb, keep_newest
from gateway.outbox_types import KEEP_CONFIGS, Enqueued
from kuaijian_schema.wire import Signer, new_result_ids, seal


class StationSide:
    """The station's own rows in `gateway.outbox.Outbox` (see the module docstring)."""

    _db: OutboxDb

    def enqueue_registration(
        self, code: str, body: dict[str, Any], priority: int, sign: Signer
    ) -> tuple[Enqueued, dict[str, Any]]:
        """Store a registration under its unique `code` and queue it for delivery, in ONE transaction with
        the seq counter (same id/seq/sig/ack rules as a result). Raises DuplicateCode if `code` is taken."""
        now = time.time()
        with self._db.tx("enqueueing a registration", grows=True) as conn:
            if priority < 0:
                raise ValueError(f"priority {priority} is below 0")
            if conn.execute("SELECT 1 FROM registrations WHERE code = ?", (code,)).fetchone():
                raise DuplicateCode(f"样品编号 {code} 已被登记 (sample code {code} is already registered)")
            seq = int(conn.execute(LAST_SEQ).fetchone()[0]) + 1
            doc = dict(body)
            doc["id"] = new_result_ids(1)[0]
            doc["seq"] = seq
            sealed, doc["sig"] = seal(doc, sign)
            conn.execute(
                "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, doc["id"], "@registrations", priority, now, sealed),
            )
            conn.execute(
                "INSERT INTO registrations (code, seq, id, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (code, seq, doc["id"], now, sealed.decode()),
            )
            conn.execute(COUNT_ENQUEUED, (seq, 1))
        return Enqueued(seq, doc["id"], priority), doc

    def registrations(self, limit: int = 100, prefix: str = "") -> list[dict[str, Any]]:
        """Stored registrations (newest first), optionally those whose code starts with `prefix`; each with
        `delivered` (False while still in the outbox)."""
        rows = self._db.read(
            "SELECT r.doc, o.seq IS NULL FROM registrations r LEFT JOIN outbox o ON o.seq = r.seq"
            " WHERE substr(r.code, 1, ?) = ? ORDER BY r.seq DESC LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [{**json.loads(doc), "delivered": bool(done)} for doc, done in rows]

    # ------------------------------------------------------------------ pushed config
    def store_config(self, version: str, doc: dict[str, Any]) -> bool:
        """Record `doc` as the current config `version` atomically; False when already current. In the same
        transaction, the stored configs other than the one in force and the `KEEP_CONFIGS` stored last before
        it are deleted."""
        with self._db.tx("storing the station config") as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = 'config_version'").fetchone()
            if row and row[0] == version:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO configs (version, doc, applied_at) VALUES (?, ?, ?)",
                (version, json.dumps(doc, ensure_ascii=False, sort_keys=True), time.time()),
            )
            conn.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES ('config_version', ?)", (version,)
            )
            # the one just stored, now in force, has the highest rowid (a replaced row gets a new one): the
            # newest KEEP_CONFIGS + 1 are it and the KEEP_CONFIGS stored before it
            keep_newest(conn, "configs", KEEP_CONFIGS + 1)
        return True

    def current_config(self) -> tuple[str, dict[str, Any]] | None:
        rows = self._db.read(
            "SELECT c.version, c.doc FROM settings s JOIN configs c ON c.version = s.value "
            "WHERE s.name = 'config_version'"
        )
        if not rows:
            return None
        doc = json.loads(rows[0][1])
        if not isinstance(doc, dict):
            raise OutboxCorrupt(f"stored config {rows[0][0]} is not an object")
        return str(rows[0][0]), doc
