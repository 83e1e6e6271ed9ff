"""Deliver due notifications over HTTP: one attempt per due row, outcome recorded, backoff on failure.

Does: `deliver_due(db, now)` claims due rows (cloud.notify.queue), builds each request
(cloud.notify.channels), POSTs it with a short timeout through urllib, and settles the row. A refused
connection, a timeout, a non-2xx answer or a robot errcode ≠ 0 leaves the row pending for a later attempt.

Does not: schedule itself (cloud.services runs it every `notify_interval_s`), or decide recipients.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime

from cloud.db import Database
from cloud.notify import channels, queue

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0
MAX_ANSWER = 64 * 1024


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    expired: int = 0
    errors: list[str] = field(default_factory=list)


def _post(request: channels.Request, timeout: float) -> tuple[int, bytes]:
    channels.check_url(request.url)  # http(s) only: no file:// or other schemes reach urlopen
    req = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 - scheme checked
            return int(answer.status), answer.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(MAX_ANSWER) if exc.fp is not None else b""


def deliver_due(
    db: Database, now: datetime, *, timeout: float = TIMEOUT_S, limit: int = 100
) -> DeliveryReport:
    report = DeliveryReport()
    for due in queue.claim_due(db, now, limit):
        status: int | None = None
        try:
            request = channels.build(due.channel, due.event, now.timestamp())
            status, body = _post(request, timeout)
            ok, error = channels.delivered(due.channel.kind, status, body)
        except (OSError, ValueError) as exc:  # refused, reset, timeout, DNS, bad URL
            ok, error = False, f"{type(exc).__name__}: {exc}"
        outcome = queue.settle(db, due, now, ok, status, error)
        if outcome == "sent":
            report.sent += 1
        else:
            report.failed += outcome == "pending"
            report.expired += outcome == "expired"
            report.errors.append(f"channel {due.channel.id} {due.event.key}: {error}")
    if report.errors:
        log.warning(
            "notifications: %d not delivered (next attempt later): %s", len(report.errors), report.errors[0]
        )
    return report
