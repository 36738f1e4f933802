"""Percentage charge model: `rate` percent of the aggregated amount plus `fixed_amount` per
event, after free units, with optional per-transaction min/max (Lago `PercentageService`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import fields
from faregate.billing.charge_models.base import ChargeModel
from faregate.billing.errors import BillingValidationError
from faregate.money import exact

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class PercentageProperties:
    """`free_units_per_events`: the first N events are free. `free_units_per_total_aggregation`:
    that many units are free. With both, the allowance ends when either runs out (Lago's
    min(sum of the first N events, total allowance)). Zero or absent means no allowance."""

    rate: Decimal
    fixed_amount: Decimal = ZERO
    free_units_per_events: int | None = None
    free_units_per_total_aggregation: Decimal | None = None
    per_transaction_min_amount: Decimal | None = None
    per_transaction_max_amount: Decimal | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "rate": fields.text(self.rate),
            "fixed_amount": fields.text(self.fixed_amount),
            "free_units_per_events": self.free_units_per_events,
            "free_units_per_total_aggregation": fields.text(self.free_units_per_total_aggregation),
            "per_transaction_min_amount": fields.text(self.per_transaction_min_amount),
            "per_transaction_max_amount": fields.text(self.per_transaction_max_amount),
        }


def validate(properties: Mapping[str, object]) -> PercentageProperties:
    free_events = properties.get("free_units_per_events")
    if free_events is not None and (
        isinstance(free_events, bool) or not isinstance(free_events, int) or free_events <= 0
    ):
        raise BillingValidationError("free_units_per_events", "invalid_free_units_per_events")
    free_total = fields.optional_amount(
        properties,
        "free_units_per_total_aggregation",
        error="invalid_free_units_per_total_aggregation",
    )
    minimum = fields.optional_amount(properties, "per_transaction_min_amount")
    maximum = fields.optional_amount(properties, "per_transaction_max_amount")
    if minimum is not None and maximum is not None and maximum < minimum:
        raise BillingValidationError(
            "per_transaction_max_amount", "per_transaction_max_lower_than_per_transaction_min"
        )
    return PercentageProperties(
        rate=fields.amount(properties, "rate", error="invalid_rate"),
        fixed_amount=fields.optional_amount(
            properties, "fixed_amount", error="invalid_fixed_amount"
        )
        or ZERO,
        free_units_per_events=free_events,
        free_units_per_total_aggregation=free_total or None,
        per_transaction_min_amount=minimum,
        per_transaction_max_amount=maximum,
    )


def needs_event_values(properties: PercentageProperties) -> bool:
    """Per-event pricing is needed for free events, for a fixed fee that free units can waive,
    and for per-transaction limits; otherwise the fee is a closed form of units and count."""
    return (
        properties.free_units_per_events is not None
        or properties.per_transaction_min_amount is not None
        or properties.per_transaction_max_amount is not None
        or (
            properties.free_units_per_total_aggregation is not None and properties.fixed_amount != 0
        )
    )


@exact
def fee(aggregate: Aggregate, properties: PercentageProperties) -> Decimal:
    if not needs_event_values(properties):
        free = properties.free_units_per_total_aggregation or ZERO
        paid = max(aggregate.units - free, ZERO)
        return paid * properties.rate / HUNDRED + aggregate.event_count * properties.fixed_amount
    if not aggregate.has_event_values:
        raise BillingValidationError(
            "billable_metric",
            "invalid_aggregation_type",
            "percentage with free units per event or per-transaction limits needs a "
            "count_agg or sum_agg metric",
        )
    return sum(
        (_transaction_fee(value, properties) for value in _paid_values(aggregate, properties)),
        ZERO,
    )


def _paid_values(aggregate: Aggregate, properties: PercentageProperties) -> Iterator[Decimal]:
    """The billable part of each paid event, in ingestion order (Lago orders free events by
    creation). An event inside the allowance pays nothing, neither rate nor fixed fee; the
    event that exhausts the free units pays the rate on its excess and the fixed fee."""
    events_left = properties.free_units_per_events
    units_left = properties.free_units_per_total_aggregation
    for value in aggregate.event_values:
        if _allowance_left(events_left, units_left):
            if events_left is not None:
                events_left -= 1
            if units_left is None:
                continue
            if value < units_left:
                units_left -= value
                continue
            value -= units_left
            units_left = ZERO
        yield value


def _allowance_left(events_left: int | None, units_left: Decimal | None) -> bool:
    if events_left is None and units_left is None:
        return False
    return (events_left is None or events_left > 0) and (units_left is None or units_left > 0)


def _transaction_fee(value: Decimal, properties: PercentageProperties) -> Decimal:
    amount = value * properties.rate / HUNDRED + properties.fixed_amount
    minimum = properties.per_transaction_min_amount
    maximum = properties.per_transaction_max_amount
    if minimum is not None and amount < minimum:
        return minimum
    if maximum is not None and amount > maximum:
        return maximum
    return amount


MODEL = ChargeModel(
    "percentage", PercentageProperties, validate, fee, needs_event_values=needs_event_values
)
