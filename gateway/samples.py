"""Sample registration at the station (抽样登记), offline-first.

Does: validate a registration against the producers the cloud pushed for this village (kept in the outbox
with the station config, so it works with no network), give the sample a short code (local date
YYMMDD + 2-digit number of the day, Asia/Shanghai; or the technician's own code), build the signed
`kuaijian_schema.SampleRegistration` and store it through the outbox in one transaction (same seq, signing
and application ack as results; sent before results of the same priority). A retest (复检) names the
code of an original sample registered here.

Does not: HTTP (gateway.web), argument parsing (gateway.cli), MQTT (the link sends the outbox).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from gateway.errors import RegistrationError
from gateway.outbox import Outbox
from kuaijian_schema.wire import (
    SAMPLE_CODE_PATTERN,
    ProducerInfo,
    SampleRegistration,
    Signer,
    StationConfig,
    TaskInfo,
)

GRID_TZ = ZoneInfo("Asia/Shanghai")
PRIORITY = 4
"""Registrations are sent before any result, so a sample is known to the cloud before its measurements."""
_CODE_RE = re.compile(SAMPLE_CODE_PATTERN)


@dataclass(frozen=True)
class SampleForm:
    """What the technician enters (page or CLI)."""

    producer: str
    product: str
    batch: str
    quantity_kg: float
    sampler: str
    plot: str | None = None
    market_date: date | None = None
    retest_of: str | None = None
    code: str | None = None


class SampleDesk:
    """Registers samples for one station through its outbox."""

    def __init__(
        self,
        station: str,
        outbox: Outbox,
        sign: Signer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.station = station
        self.outbox = outbox
        self.sign = sign
        self.clock = clock
        self.on_enqueued = on_enqueued

    def producers(self) -> tuple[ProducerInfo, ...]:
        """The producers of this station's village from the last pushed config (empty before any push)."""
        stored = self.outbox.current_config()
        if stored is None:
            return ()
        try:
            return StationConfig.model_validate(stored[1]).producers
        except ValidationError:
            return ()

    def tasks(self) -> list[tuple[TaskInfo, int]]:
        """The sampling tasks of the last pushed config, each with the number of samples registered HERE within
        its local days and of one of its products (the cloud counts the whole unit, measured samples only)."""
        stored = self.outbox.current_config()
        if stored is None:
            return []
        try:
            tasks = StationConfig.model_validate(stored[1]).tasks
        except ValidationError:
            return []
        regs = self.outbox.registrations(5000)
        out = []
        for task in tasks:
            n = 0
            for r in regs:
                day = datetime.fromisoformat(r["registered_at"]).astimezone(GRID_TZ).date()
                if task.start <= day <= task.due and (not task.products or r.get("product") in task.products):
                    n += 1
            out.append((task, n))
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.outbox.registrations(limit)

    def _next_code(self, now: datetime) -> str:
        day = now.astimezone(GRID_TZ).strftime("%y%m%d")
        taken = {r["code"] for r in self.outbox.registrations(1000, prefix=day)}
        for n in range(1, 1000):
            code = f"{day}{n:02d}"
            if code not in taken:
                return code
        raise RegistrationError("今日样品编号已用完 (no sample code left for today)")

    def register(self, form: SampleForm) -> dict[str, Any]:
        """Register one sample; returns the stored registration. Raises RegistrationError / DuplicateCode."""
        known = {p.ref: p for p in self.producers()}
        producer = known.get(form.producer.strip())
        if producer is None:
            raise RegistrationError(
                f"生产主体 {form.producer!r} 不是本村已登记的生产主体 (unknown producer: not among this"
                " village's producers pushed by the cloud)"
            )
        code = (form.code or "").strip().upper() or None
        if code is not None and not _CODE_RE.match(code):
            raise RegistrationError(
                f"样品编号须为 4–16 位数字或大写字母 (sample code must be 4–16 of 0-9 A-Z): {code!r}"
            )
        retest_of = (form.retest_of or "").strip().upper() or None
        if retest_of is not None and not any(
            r["code"] == retest_of for r in self.outbox.registrations(1000, prefix=retest_of)
        ):
            raise RegistrationError(f"原样品 {retest_of} 未在本站登记 (original sample not registered here)")
        now = self.clock()
        code = code or self._next_code(now)
        body: dict[str, Any] = {
            "kind": "sample",
            "station": self.station,
            "code": code,
            "producer": producer.ref,
            "producer_name": producer.name,
            "product": form.product.strip(),
            "batch": form.batch.strip(),
            "plot": (form.plot or "").strip() or None,
            "quantity_kg": form.quantity_kg,
            "market_date": None if form.market_date is None else form.market_date.isoformat(),
            "sampler": form.sampler.strip(),
            "registered_at": now.isoformat(),
            "retest_of": retest_of,
        }
        placeholder = {"id": "00000000-0000-7000-8000-000000000000", "seq": 1, "sig": "0" * 64}
        try:
            SampleRegistration.model_validate({**body, **placeholder})
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise RegistrationError(f"登记信息不完整或有误 (invalid fields): {fields}") from exc
        _, doc = self.outbox.enqueue_registration(code, body, PRIORITY, self.sign)  # DuplicateCode if taken
        if self.on_enqueued is not None:
            self.on_enqueued()
        return doc
