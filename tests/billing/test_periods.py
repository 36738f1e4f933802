"""Period boundaries for calendar and anniversary billing, month-end anchors, leap years,
clipping to a subscription, and pro-rata of partial periods."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from faregate.billing.errors import BillingValidationError
from faregate.billing.periods import (
    Interval,
    Period,
    first_period,
    full_period,
    next_period,
    period_dates,
    prorate,
    subscription_period,
)
from faregate.billing.plans import Subscription


def at(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def dates(period: Period) -> tuple[date, date]:
    return period.start.date(), period.end.date()


def subscription(
    start: datetime, billing_time: str = "calendar", ending_at: datetime | None = None
) -> Subscription:
    return Subscription(
        external_id="sub",
        external_customer_id="cus",
        plan_code="plan",
        subscription_at=start,
        billing_time=billing_time,  # type: ignore[arg-type]
        ending_at=ending_at,
    )


@pytest.mark.parametrize(
    ("interval", "when", "expected"),
    [
        ("weekly", at(2025, 1, 1), (date(2024, 12, 30), date(2025, 1, 6))),  # Monday to Monday
        ("monthly", at(2025, 2, 14), (date(2025, 2, 1), date(2025, 3, 1))),
        ("quarterly", at(2025, 5, 20), (date(2025, 4, 1), date(2025, 7, 1))),
        ("semiannual", at(2025, 8, 1), (date(2025, 7, 1), date(2026, 1, 1))),
        ("yearly", at(2024, 2, 29), (date(2024, 1, 1), date(2025, 1, 1))),
        ("monthly", at(2025, 1, 31, 23), (date(2025, 1, 1), date(2025, 2, 1))),
    ],
)
def test_calendar_periods_follow_the_calendar(
    interval: Interval, when: datetime, expected: tuple[date, date]
) -> None:
    assert dates(full_period(when, interval, "calendar", at(2020, 6, 17))) == expected


def test_anniversary_monthly_from_jan_31_falls_on_month_ends_and_comes_back() -> None:
    anchor = date(2025, 1, 31)
    assert period_dates(date(2025, 2, 10), "monthly", anchor) == (
        date(2025, 1, 31),
        date(2025, 2, 28),
    )
    assert period_dates(date(2025, 3, 1), "monthly", anchor) == (
        date(2025, 2, 28),
        date(2025, 3, 31),
    )
    assert period_dates(date(2025, 4, 15), "monthly", anchor) == (
        date(2025, 3, 31),
        date(2025, 4, 30),
    )
    assert period_dates(date(2025, 5, 30), "monthly", anchor) == (
        date(2025, 4, 30),
        date(2025, 5, 31),
    )


def test_anniversary_monthly_from_jan_31_uses_feb_29_in_a_leap_year() -> None:
    anchor = date(2024, 1, 31)
    assert period_dates(date(2024, 2, 28), "monthly", anchor) == (
        date(2024, 1, 31),
        date(2024, 2, 29),
    )
    assert period_dates(date(2024, 2, 29), "monthly", anchor) == (
        date(2024, 2, 29),
        date(2024, 3, 31),
    )


def test_anniversary_yearly_from_feb_29_falls_on_feb_28_until_the_next_leap_year() -> None:
    anchor = date(2024, 2, 29)
    assert period_dates(date(2025, 6, 1), "yearly", anchor) == (
        date(2025, 2, 28),
        date(2026, 2, 28),
    )
    assert period_dates(date(2028, 2, 28), "yearly", anchor) == (
        date(2027, 2, 28),
        date(2028, 2, 29),
    )
    assert period_dates(date(2028, 3, 1), "yearly", anchor) == (
        date(2028, 2, 29),
        date(2029, 2, 28),
    )


def test_anniversary_quarterly_keeps_the_anchor_day_where_the_month_has_it() -> None:
    anchor = date(2024, 11, 30)
    assert period_dates(date(2025, 3, 1), "quarterly", anchor) == (
        date(2025, 2, 28),
        date(2025, 5, 30),
    )


def test_anniversary_weekly_starts_on_the_subscription_weekday() -> None:
    anchor = date(2025, 1, 1)  # a Wednesday
    assert period_dates(date(2025, 1, 20), "weekly", anchor) == (
        date(2025, 1, 15),
        date(2025, 1, 22),
    )
    assert period_dates(date(2024, 12, 31), "weekly", anchor) == (
        date(2024, 12, 25),
        date(2025, 1, 1),
    )


def test_a_calendar_subscription_started_mid_month_has_a_partial_first_period() -> None:
    sub = subscription(at(2025, 1, 15, 13))
    first = first_period(sub, "monthly")
    assert (first.start, first.end) == (at(2025, 1, 15, 13), at(2025, 2, 1))
    assert first.is_partial
    assert (first.days, first.full_days) == (17, 31)  # Jan 15..31, the start day counted
    # Lago prorates the fee: 10 x 17 / 31
    assert prorate(D(10), first) == D(170) / 31
    second = next_period(sub, "monthly", first)
    assert second is not None and dates(second) == (date(2025, 2, 1), date(2025, 3, 1))
    assert not second.is_partial
    assert prorate(D(10), second) == D(10)


def test_an_anniversary_subscription_has_full_periods_from_its_start() -> None:
    sub = subscription(at(2025, 1, 15, 13), billing_time="anniversary")
    first = first_period(sub, "monthly")
    assert dates(first) == (date(2025, 1, 15), date(2025, 2, 15))
    assert first.start == at(2025, 1, 15, 13)  # billing starts when the subscription did
    assert prorate(D(10), first) == D(10)  # the start day counts whole: no proration


def test_a_termination_mid_period_prorates_the_days_used() -> None:
    sub = subscription(at(2025, 1, 1), ending_at=at(2025, 1, 20, 10))
    last = subscription_period(sub, "monthly", at(2025, 1, 5))
    assert last.end == at(2025, 1, 20, 10)
    assert last.days == 20  # Jan 1..20, the started last day counted
    assert prorate(D(31), last) == D(20)
    assert next_period(sub, "monthly", last) is None


def test_a_leap_february_has_29_days_to_prorate_over() -> None:
    sub = subscription(at(2024, 2, 10))
    first = first_period(sub, "monthly")
    assert (first.days, first.full_days) == (20, 29)
    assert prorate(D(29), first) == D(20)


def test_instants_outside_the_subscription_are_refused() -> None:
    sub = subscription(at(2025, 1, 15), ending_at=at(2025, 3, 1))
    with pytest.raises(BillingValidationError) as caught:
        subscription_period(sub, "monthly", at(2025, 1, 14))
    assert caught.value.field == "timestamp"
    with pytest.raises(BillingValidationError):
        subscription_period(sub, "monthly", at(2025, 3, 1))


def test_boundaries_are_local_midnights_and_a_dst_month_is_an_hour_short() -> None:
    paris = ZoneInfo("Europe/Paris")
    sub = subscription(datetime(2025, 1, 1, tzinfo=paris))
    march = subscription_period(sub, "monthly", datetime(2025, 3, 10, tzinfo=UTC))
    assert march.start == datetime(2025, 3, 1, tzinfo=paris)
    assert march.end == datetime(2025, 4, 1, tzinfo=paris)
    assert march.full_seconds == D(31 * 86400 - 3600)
    assert march.full_days == 31


def test_calendar_yearly_is_split_into_monthly_charge_periods_when_asked() -> None:
    sub = subscription(at(2025, 1, 1))
    yearly = subscription_period(sub, "yearly", at(2025, 6, 1))
    monthly = subscription_period(sub, "monthly", at(2025, 6, 1))
    assert dates(yearly) == (date(2025, 1, 1), date(2026, 1, 1))
    assert dates(monthly) == (date(2025, 6, 1), date(2025, 7, 1))
