"""One function per Lago aggregation type, over events already selected for a bucket and a
period (ingestion order). Pure: no rounding of units here, no charge pricing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.errors import BillingValidationError
from faregate.billing.events import Event, numeric_property, text_property
from faregate.money import exact

ZERO = Decimal(0)
ONE = Decimal(1)
# Lago keeps weighted sums at 20 decimals, rounded up (`value.ceil(20)`).
WEIGHTED_EXPONENT = Decimal("1e-20")


@dataclass(frozen=True, slots=True)
class Window:
    """Events with start <= timestamp < end; `seconds` divides weighted sums (the full
    billing period, so a partial first period yields a prorated weighted sum)."""

    start: datetime
    end: datetime
    seconds: Decimal


def seconds_between(start: datetime, end: datetime) -> Decimal:
    """Exact elapsed seconds, in UTC so that a DST change counts as it happened."""
    delta = end.astimezone(UTC) - start.astimezone(UTC)
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def _values(events: Sequence[Event], field: str) -> tuple[Decimal, ...]:
    found = (numeric_property(event, field) for event in events)
    return tuple(value for value in found if value is not None)


def _by_time(events: Sequence[Event]) -> list[Event]:
    return sorted(events, key=lambda event: event.timestamp)  # stable: ties keep ingestion order


def count(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    units = Decimal(len(events))
    return Aggregate(units, len(events), (ONE,) * len(events), units)


@exact
def sum_(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    values = _values(events, field or "")
    total = (carried.total_aggregated_units if carried else ZERO) + sum(values, ZERO)
    return Aggregate(total, len(values), values, total)


def max_(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    values = _values(events, field or "")
    units = max(values, default=ZERO)
    return Aggregate(units, len(values), total_aggregated_units=units)


def latest(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    valued = [e for e in _by_time(events) if numeric_property(e, field or "") is not None]
    if not valued:
        return Aggregate()
    last = valued[-1]
    units = numeric_property(last, field or "") or ZERO
    return Aggregate(units, len(valued), total_aggregated_units=units, latest_at=last.timestamp)


def unique_count(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    """Values whose last operation (by timestamp) is `add`: adding a present value or removing
    an absent one changes nothing (Lago's operation_value). Recurring metrics start from the
    previous period's values."""
    present = set(carried.unique_values) if carried else set()
    counted = 0
    for event in _by_time(events):
        if toggle(present, event, field or ""):
            counted += 1
    units = Decimal(len(present))
    return Aggregate(units, counted, total_aggregated_units=units, unique_values=frozenset(present))


def toggle(present: set[str], event: Event, field: str) -> bool:
    """Apply one unique_count event to `present`; False when the event lacks the field."""
    value = text_property(event.properties, field)
    if value is None:
        return False
    operation = event.properties.get("operation_type", "add")
    if operation == "add":
        present.add(value)
    elif operation == "remove":
        present.discard(value)
    else:
        raise BillingValidationError("properties.operation_type", "invalid_operation_type")
    return True


@exact
def weighted_sum(
    field: str | None, events: Sequence[Event], window: Window, carried: Aggregate | None
) -> Aggregate:
    """Each event's value is a change to a running level; units are the level's time average
    over the period: (level x seconds held) summed, / period seconds (Lago WeightedSumQuery).
    A recurring metric starts at the level the previous period ended with."""
    initial = carried.total_aggregated_units if carried else ZERO
    level = initial
    counted = 0
    numerator = initial * seconds_between(window.start, window.end)
    for event in _by_time(events):
        value = numeric_property(event, field or "")
        if value is None:
            continue
        numerator += value * seconds_between(event.timestamp, window.end)
        level += value
        counted += 1
    units = (numerator / window.seconds).quantize(WEIGHTED_EXPONENT, rounding=ROUND_CEILING)
    return Aggregate(units, counted, total_aggregated_units=level)


Aggregator = Callable[[str | None, Sequence[Event], Window, Aggregate | None], Aggregate]

AGGREGATORS: dict[str, Aggregator] = {
    "count_agg": count,
    "sum_agg": sum_,
    "max_agg": max_,
    "unique_count_agg": unique_count,
    "latest_agg": latest,
    "weighted_sum_agg": weighted_sum,
}
