"""Calendar periods (day, ISO week, month) in an IANA time zone: the id that names a
budget's counter and the instants it starts and ends. Pure: the caller passes `now`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("day", "week", "month")


@dataclass(frozen=True, slots=True)
class Period:
    id: str  # "2026-11-03", "2026-W45", "2026-11"
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC; the next period starts here

    def seconds_left(self, now: datetime) -> float:
        left = (self.end - now).total_seconds()
        return left if left > 0.0 else 0.0


def is_timezone(name: str) -> bool:
    """Whether `name` is an IANA time zone ("Europe/Paris", "UTC"): a budget's, or a
    customer's (Lago refuses any other)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def period_at(kind: str, timezone: str, now: datetime) -> Period:
    """The period of `kind` containing `now` (an aware datetime), aligned to local midnight."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    if kind == "day":
        first, following = today, today + timedelta(days=1)
        name = today.isoformat()
    elif kind == "week":
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
        year, week, _ = first.isocalendar()
        name = f"{year}-W{week:02d}"
    elif kind == "month":
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        name = f"{first.year}-{first.month:02d}"
    else:
        raise ValueError(f"unknown period {kind!r}; use one of {', '.join(PERIODS)}")
    return Period(name, _midnight(first, zone), _midnight(following, zone))
