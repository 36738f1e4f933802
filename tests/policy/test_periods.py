"""Calendar periods in local time: ids, boundaries, daylight-saving days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from faregate.policy.periods import period_at

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_month_starts_at_local_midnight_of_the_first() -> None:
    period = period_at("month", "Europe/Berlin", datetime(2026, 10, 31, 23, 30, tzinfo=UTC))
    assert period.id == "2026-11"  # already 00:30 on 1 November in Berlin
    assert period.start == datetime(2026, 11, 1, tzinfo=BERLIN)
    assert period.end == datetime(2026, 12, 1, tzinfo=BERLIN)


def test_a_december_month_ends_in_january() -> None:
    period = period_at("month", "UTC", datetime(2026, 12, 15, tzinfo=UTC))
    assert (period.id, period.end) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC))


def test_weeks_start_on_monday_and_carry_the_iso_week_id() -> None:
    period = period_at("week", "Asia/Tokyo", datetime(2027, 1, 2, 12, tzinfo=UTC))  # Saturday
    assert period.id == "2026-W53"
    assert period.start == datetime(2026, 12, 28, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert period.end - period.start == timedelta(days=7)


def test_a_daylight_saving_day_is_23_hours_long() -> None:
    period = period_at("day", "Europe/Berlin", datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert period.id == "2026-03-29"
    assert period.end - period.start == timedelta(hours=23)


def test_naive_times_and_unknown_periods_are_rejected() -> None:
    with pytest.raises(ValueError):
        period_at("day", "UTC", datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        period_at("decade", "UTC", datetime(2026, 1, 1, tzinfo=UTC))
