"""Billing periods: calendar and anniversary boundaries for every Lago plan interval, clipped
to a subscription's start and end, and the pro-rata of a partial period. Pure date math."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Literal, Protocol

from faregate.billing.aggregations import seconds_between
from faregate.billing.errors import BillingValidationError

Interval = Literal["weekly", "monthly", "quarterly", "semiannual", "yearly"]
BillingTime = Literal["calendar", "anniversary"]
INTERVALS: tuple[Interval, ...] = ("weekly", "monthly", "quarterly", "semiannual", "yearly")
_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}
# Calendar periods are anniversary periods anchored here: a Monday and a January 1st.
CALENDAR_ANCHOR = date(2001, 1, 1)


class Subscribed(Protocol):
    """What period math needs from a subscription."""

    @property
    def billing_time(self) -> BillingTime: ...
    @property
    def subscription_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def ending_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) actually billed, inside the full interval [full_start, full_end)."""

    start: datetime
    end: datetime
    full_start: datetime
    full_end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Period:
        return cls(start, end, start, end)

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def is_partial(self) -> bool:
        return self.start != self.full_start or self.end != self.full_end

    @property
    def full_seconds(self) -> Decimal:
        return seconds_between(self.full_start, self.full_end)

    @property
    def days(self) -> int:
        """Days billed: the start day counts whole, a started last day too (Lago counts days)."""
        tz = self.full_start.tzinfo
        start, end = self.start.astimezone(tz), self.end.astimezone(tz)
        return (end.date() - start.date()).days + (1 if end.time() != time() else 0)

    @property
    def full_days(self) -> int:
        return (self.full_end.date() - self.full_start.date()).days


def prorate(amount: Decimal, period: Period) -> Decimal:
    """`amount` x days billed / days in the full period (Lago's single-day price x days), in
    one division; the invoice line rounds it. A full period returns `amount` unchanged."""
    if not period.is_partial:
        return amount
    return amount * period.days / period.full_days


def shift_months(anchor: date, months: int) -> date:
    """`anchor` moved by whole months, its day clamped to the month's last day."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(anchor.day, last))


def period_dates(day: date, interval: Interval, anchor: date) -> tuple[date, date]:
    """The [start, end) dates of the `interval` period anchored at `anchor` that holds `day`."""
    if interval == "weekly":
        k = (day - anchor).days // 7
        start = anchor + timedelta(days=7 * k)
        return start, start + timedelta(days=7)
    if interval not in _MONTHS:
        raise BillingValidationError("interval", "value_is_invalid")
    step = _MONTHS[interval]
    k = ((day.year - anchor.year) * 12 + day.month - anchor.month) // step
    while shift_months(anchor, k * step) > day:
        k -= 1
    while shift_months(anchor, (k + 1) * step) <= day:
        k += 1
    return shift_months(anchor, k * step), shift_months(anchor, (k + 1) * step)


def full_period(
    at: datetime, interval: Interval, billing_time: BillingTime, anchor: datetime
) -> Period:
    """The whole interval holding `at`: [start, end) between midnights of `anchor`'s zone.

    Calendar periods start on a Monday (weekly), the 1st (monthly), Jan/Apr/Jul/Oct 1st
    (quarterly), Jan/Jul 1st (semiannual) or Jan 1st (yearly). Anniversary periods start on
    the anchor's date; an anchor day a month lacks falls on its last day and comes back
    afterwards (Jan 31 -> Feb 28 or 29 -> Mar 31), a Feb 29 anchor likewise.
    """
    tz = anchor.tzinfo
    if tz is None or at.utcoffset() is None:
        raise BillingValidationError(
            "subscription_at", "invalid_format", "datetimes need a timezone"
        )
    if billing_time not in ("calendar", "anniversary"):
        raise BillingValidationError("billing_time", "value_is_invalid")
    anchor_day = CALENDAR_ANCHOR if billing_time == "calendar" else anchor.date()
    start, end = period_dates(at.astimezone(tz).date(), interval, anchor_day)
    return Period.of(_midnight(start, tz), _midnight(end, tz))


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


def subscription_period(subscription: Subscribed, interval: Interval, at: datetime) -> Period:
    """The period holding `at`, clipped to when the subscription started and ends."""
    started = subscription.started_at or subscription.subscription_at
    ending = subscription.ending_at
    if at < started or (ending is not None and at >= ending):
        raise BillingValidationError("timestamp", "outside_subscription")
    full = full_period(at, interval, subscription.billing_time, subscription.subscription_at)
    end = full.end if ending is None else min(full.end, ending)
    return Period(max(full.start, started), end, full.start, full.end)


def first_period(subscription: Subscribed, interval: Interval) -> Period:
    return subscription_period(
        subscription, interval, subscription.started_at or subscription.subscription_at
    )


def next_period(subscription: Subscribed, interval: Interval, period: Period) -> Period | None:
    """The period after `period`, or None when the subscription ends with it."""
    if subscription.ending_at is not None and period.end >= subscription.ending_at:
        return None
    return subscription_period(subscription, interval, period.end)
