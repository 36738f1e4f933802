"""Period-to-date usage of a subscription in Lago's `customer_usage` terms: per charge and per
filter units, events and amounts. Charges only (no subscription fee, no minimum true-up, as in
Lago); each bucket's amount is rounded like an invoice line and totals sum the rounded amounts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.charges import (
    BucketFee,
    BucketKey,
    bucket_fees,
    check_subscription,
    metric_of,
)
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period
from faregate.billing.plans import Charge, Plan, Subscription
from faregate.money import exact, tax_cents, to_cents

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ChargeRef:
    code: str
    charge_model: str
    invoice_display_name: str | None


@dataclass(frozen=True, slots=True)
class MetricRef:
    code: str
    name: str
    aggregation_type: str


@dataclass(frozen=True)
class FilterUsage:
    """One bucket; `values` is None for the default bucket of a charge with filters."""

    invoice_display_name: str | None
    values: Mapping[str, Sequence[str]] | None
    units: Decimal
    total_aggregated_units: Decimal
    events_count: int
    amount_cents: int


@dataclass(frozen=True)
class ChargeUsage:
    units: Decimal
    total_aggregated_units: Decimal
    events_count: int
    amount_cents: int
    amount_currency: str
    charge: ChargeRef
    billable_metric: MetricRef
    filters: tuple[FilterUsage, ...]


@dataclass(frozen=True)
class CustomerUsage:
    from_datetime: datetime
    to_datetime: datetime
    issuing_date: date
    currency: str
    amount_cents: int
    taxes_amount_cents: int
    total_amount_cents: int
    charges_usage: tuple[ChargeUsage, ...]


def current_usage(
    subscription: Subscription,
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    aggregates: Mapping[BucketKey, Aggregate],
    period: Period,
    *,
    currency: str,
    tax_rate: Decimal = ZERO,
) -> CustomerUsage:
    """Usage of every charge from `period.start` to now (`aggregates` are period-to-date);
    `period` is the current billing period, whose end is Lago's `to_datetime`."""
    check_subscription(subscription, plan, currency)
    charges = tuple(
        _charge_usage(charge, metric_of(charge, metrics_by_code), aggregates, currency)
        for charge in plan.charges
    )
    amount = sum(c.amount_cents for c in charges)
    taxes = tax_cents(amount, tax_rate, currency)
    return CustomerUsage(
        from_datetime=period.start,
        to_datetime=period.end,
        issuing_date=period.end.date(),
        currency=plan.amount_currency,
        amount_cents=amount,
        taxes_amount_cents=taxes,
        total_amount_cents=amount + taxes,
        charges_usage=charges,
    )


@exact
def _charge_usage(
    charge: Charge,
    metric: BillableMetric,
    aggregates: Mapping[BucketKey, Aggregate],
    currency: str,
) -> ChargeUsage:
    buckets = bucket_fees(charge, aggregates)
    filters = tuple(_filter_usage(b, currency) for b in buckets) if charge.filters else ()
    return ChargeUsage(
        units=sum((b.aggregate.units for b in buckets), ZERO),
        total_aggregated_units=sum((b.aggregate.total_aggregated_units for b in buckets), ZERO),
        events_count=sum(b.aggregate.event_count for b in buckets),
        amount_cents=sum(to_cents(b.amount, currency) for b in buckets),
        amount_currency=currency.upper(),
        charge=ChargeRef(charge.code, charge.charge_model, charge.invoice_display_name),
        billable_metric=MetricRef(metric.code, metric.name, metric.aggregation_type),
        filters=filters,
    )


def _filter_usage(bucket: BucketFee, currency: str) -> FilterUsage:
    charge_filter = bucket.charge_filter
    return FilterUsage(
        invoice_display_name=None if charge_filter is None else charge_filter.display_name(),
        values=None if charge_filter is None else dict(charge_filter.values),
        units=bucket.aggregate.units,
        total_aggregated_units=bucket.aggregate.total_aggregated_units,
        events_count=bucket.aggregate.event_count,
        amount_cents=to_cents(bucket.amount, currency),
    )
