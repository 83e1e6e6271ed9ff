"""Report periods: local calendar days, ISO weeks, months and date ranges in the grid's time zone.

Does: `Period` — local calendar days [start, end], both inclusive, with a label such as 2026-W47 — with its
UTC bounds and the period before it; the constructors (a day, the ISO week or month containing a day, a date
range, the period of a kind containing a day, an ISO week from '2026-W47'); the supported date range
(`check_dates`, 2000–2099); today's local date. Periods are local calendar days in `REPORT_TZ`
(Asia/Shanghai by default: a day starts at 00:00 China time, i.e. 16:00 UTC the day before).

Does not: read the database or count anything (cloud.reports does), render (cloud.report_render), or know
about HTTP.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from cloud.errors import Invalid

REPORT_TZ = ZoneInfo("Asia/Shanghai")
PeriodKind = Literal["day", "week", "month"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------- periods


class Period(_Frozen):
    """Local calendar days [start, end] (both inclusive) with a label such as 2026-W47."""

    kind: Literal["day", "week", "month", "range"]
    start: date
    end: date
    label: str

    def utc_bounds(self, tz: ZoneInfo = REPORT_TZ) -> tuple[str, str]:
        """[lo, hi) as 'YYYY-MM-DDTHH:MM:SS' UTC strings; they compare correctly with stored timestamps
        whatever their fractional-second digits, because a stored value with the same second is longer."""
        lo = datetime.combine(self.start, time(), tz).astimezone(UTC)
        hi = datetime.combine(self.end + timedelta(days=1), time(), tz).astimezone(UTC)
        return lo.strftime("%Y-%m-%dT%H:%M:%S"), hi.strftime("%Y-%m-%dT%H:%M:%S")

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        if self.kind == "month":
            return month_period(self.start - timedelta(days=1))
        if self.kind == "week":
            return week_period(self.start - timedelta(days=1))
        if self.kind == "day":
            return day_period(self.start - timedelta(days=1))
        span = (self.end - self.start).days + 1
        return range_period(self.start - timedelta(days=span), self.start - timedelta(days=1))


EARLIEST = date(2000, 1, 1)
LATEST = date(2099, 12, 31)


def check_dates(*days: date) -> None:
    """Invalid unless every day lies in the supported report range."""
    for d in days:
        if not EARLIEST <= d <= LATEST:
            raise Invalid(f"dates must lie between {EARLIEST} and {LATEST}, got {d}")


def day_period(d: date) -> Period:
    check_dates(d)
    return Period(kind="day", start=d, end=d, label=d.isoformat())


def week_period(d: date) -> Period:
    """The ISO week (Monday–Sunday) containing `d`."""
    check_dates(d)
    year, week, weekday = d.isocalendar()
    start = d - timedelta(days=weekday - 1)
    return Period(kind="week", start=start, end=start + timedelta(days=6), label=f"{year}-W{week:02d}")


def month_period(d: date) -> Period:
    check_dates(d)
    start = d.replace(day=1)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return Period(kind="month", start=start, end=nxt - timedelta(days=1), label=start.strftime("%Y-%m"))


def range_period(start: date, end: date) -> Period:
    check_dates(start, end)
    if end < start:
        raise Invalid("end date is before start date")
    if (end - start).days > 3660:
        raise Invalid("a report period may span at most ten years")
    return Period(kind="range", start=start, end=end, label=f"{start.isoformat()}..{end.isoformat()}")


def period_containing(kind: PeriodKind, d: date) -> Period:
    if kind == "day":
        return day_period(d)
    if kind == "week":
        return week_period(d)
    return month_period(d)


def parse_iso_week(text: str) -> Period:
    """'2026-W47' → that ISO week; Invalid for anything else."""
    try:
        year_s, week_s = text.upper().split("-W")
        monday = date.fromisocalendar(int(year_s), int(week_s), 1)
    except (ValueError, OverflowError) as exc:
        raise Invalid(f"week must look like 2026-W47, got {text!r}") from exc
    return week_period(monday)


def local_today(now: datetime, tz: ZoneInfo = REPORT_TZ) -> date:
    return now.astimezone(tz).date()
