"""What a committed ingest batch changes besides the rows it stores (called by `cloud.ingest.process_batch`, inside
its transaction): per station, the seq high-water mark and its gaps (``seq_gaps``) and ``last_seen``; the case
rules (`cloud.cases.on_result`) for newly stored positives and suspects; and the pre-market decision
(`cloud.samples.decide`) of every registered sample batch the new results or registrations touch.

A failure of the case rules or of a decision for one result or sample is logged and contained in its own
savepoint (the results are stored and acked regardless); savepoints are opened only where that code runs —
never for negatives, nor for stations without registered samples.

Does not: validate, verify or store results (cloud.ingest), MQTT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cloud import cases, samples
from cloud.db import Database
from cloud.errors import DatabaseError
from cloud.settings import Settings
from kuaijian_schema import Result, SampleRegistration

log = logging.getLogger("cloud.ingest")


@dataclass(frozen=True, slots=True)
class Stored:
    """A result newly stored by the batch."""

    result: Result
    node_id: int
    received_at: datetime
    measured_at: datetime
    """The instant it is reported by: its measured_at, or its receive time when that was implausible."""
    seq_jump: bool
    """Its seq lay beyond `max_seq_jump` past the station's highest: it does not move the high-water mark."""


def apply(
    db: Database,
    settings: Settings,
    new: list[Stored],
    new_samples: list[tuple[SampleRegistration, datetime]],
    high_start: dict[str, int],
    high_now: Callable[[str], int],
) -> set[int]:
    """Apply the effects of a batch's new results and registrations; returns the ids of the cases touched.
    `high_start`: each station's stored high-water mark when the batch began; `high_now`: including the batch."""
    cases_touched: set[int] = set()
    by_station: dict[str, list[Stored]] = {}
    for entry in new:
        by_station.setdefault(entry.result.station, []).append(entry)
    regs_by_station: dict[str, list[tuple[SampleRegistration, datetime]]] = {}
    for reg_entry in new_samples:
        regs_by_station.setdefault(reg_entry[0].station, []).append(reg_entry)
    touched = sorted(set(by_station) | set(regs_by_station))
    sampling = _stations_with_samples(db, touched)
    station_rows: list[tuple[int, str, str, str]] = []
    for station in touched:
        entries = sorted(by_station.get(station, []), key=lambda e: e.result.seq)
        regs = regs_by_station.get(station, [])
        bound = high_now(station) + settings.max_seq_jump
        seqs = sorted(
            [e.result.seq for e in entries if not e.seq_jump] + [r.seq for r, _ in regs if r.seq <= bound]
        )
        latest_at = max([e.received_at for e in entries] + [t for _, t in regs])
        latest = latest_at.isoformat()
        high = _track_seqs(db, station, seqs, latest, high_start[station])
        station_rows.append((high, latest, latest, station))
        for entry in entries:
            result, node_id, received_at = entry.result, entry.node_id, entry.received_at
            if result.verdict not in cases.OPENING_VERDICTS:
                continue  # the case rules do nothing for it: no savepoint, no call
            opened = cases.NewResult(
                id=str(result.id),
                station=station,
                node_id=node_id,
                product=result.sample.product,
                analyte=result.analyte,
                verdict=result.verdict,
                measured_at=entry.measured_at,
                sample_id=result.sample.id,
            )
            try:
                with db.atomic():
                    case_id = cases.on_result(db, opened, settings, received_at)
            except DatabaseError:
                raise
            except Exception:
                # The result is stored and acked; a bug in the case rules must not lose it.
                log.exception("case rules failed for result %s", opened.id)
                continue
            if case_id is not None:
                cases_touched.add(case_id)
        # the pre-market decision of every batch these results or registrations touch
        if station not in sampling:
            continue  # no sample registered at this station: nothing to decide (and no savepoint)
        codes = {e.result.sample.id for e in entries} | {r.code for r, _ in regs}
        now = latest_at
        for code in sorted(codes):
            if samples.root_of(db, station, code) is None:
                continue  # not a registered sample: nothing to decide (and no savepoint)
            try:
                with db.atomic():
                    samples.decide(db, station, code, now)
            except DatabaseError:
                raise
            except Exception:
                log.exception("pre-market decision failed for sample %s at %s", code, station)
    # one statement for every station of the batch: high-water mark and last seen
    db.executemany(
        "UPDATE stations SET high_seq = ?, last_seen = CASE WHEN last_seen IS NULL OR last_seen < ?"
        " THEN ? ELSE last_seen END WHERE id = ?",
        station_rows,
        bound=True,
    )
    return cases_touched


def _stations_with_samples(db: Database, stations: list[str]) -> set[str]:
    """Which of `stations` have registered samples (one query for the whole batch)."""
    if not stations:
        return set()
    return {str(r[0]) for r in db.rows_in("SELECT DISTINCT station FROM samples", "station", stations)}


def _track_seqs(db: Database, station: str, seqs: list[int], stamp: str, high: int) -> int:
    """Advance the high-water mark `high` over sorted new `seqs`; record and fill gaps (`stamp`: now, ISO
    8601). Returns the new mark (the caller stores it)."""
    for seq in seqs:
        if seq > high:
            if seq > high + 1:
                db.execute(
                    "INSERT INTO seq_gaps (station, first_seq, last_seq, detected_at) VALUES (?, ?, ?, ?)",
                    [station, high + 1, seq - 1, stamp],
                )
            high = seq
            continue
        gap = db.execute(
            "SELECT id, first_seq, last_seq, detected_at FROM seq_gaps WHERE station = ? AND closed_at IS NULL"
            " AND first_seq <= ? AND last_seq >= ?",
            [station, seq, seq],
        ).fetchone()
        if gap is None:
            continue  # a seq seen before under another id: nothing to fill
        gap_id, first, last, detected = gap
        if first == last:
            db.execute("UPDATE seq_gaps SET closed_at = ? WHERE id = ?", [stamp, gap_id])
        elif seq == first:
            db.execute("UPDATE seq_gaps SET first_seq = ? WHERE id = ?", [seq + 1, gap_id])
        elif seq == last:
            db.execute("UPDATE seq_gaps SET last_seq = ? WHERE id = ?", [seq - 1, gap_id])
        else:
            db.execute("UPDATE seq_gaps SET last_seq = ? WHERE id = ?", [seq - 1, gap_id])
            db.execute(
                "INSERT INTO seq_gaps (station, first_seq, last_seq, detected_at) VALUES (?, ?, ?, ?)",
                [station, seq + 1, last, detected],
            )
    return high
