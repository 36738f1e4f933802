"""From events to priced buckets: every charge splits its metric's events into one bucket per
filter plus the default bucket, aggregates each bucket and prices it with its properties.
Shared by invoices, current usage and real-time debits; amounts here are exact, never rounded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.aggregate import EMPTY, Aggregate
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.events import Event
from faregate.billing.filters import ChargeFilter, best_filter
from faregate.billing.metrics import BillableMetric, aggregate
from faregate.billing.periods import Period
from faregate.billing.plans import Charge, Plan, Subscription

# (charge code, ChargeFilter.key), the filter key being None for the charge's default bucket.
BucketKey = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class BucketFee:
    """One bucket's usage and exact amount (a fee line before rounding)."""

    key: BucketKey
    charge: Charge
    charge_filter: ChargeFilter | None
    aggregate: Aggregate
    amount: Decimal


def bucket_key(charge: Charge, properties: Mapping[str, object]) -> BucketKey:
    """The bucket an event with these properties falls into."""
    found = best_filter(charge.filters, properties)
    return (charge.code, None if found is None else found.key)


def bucket_keys(charge: Charge) -> list[BucketKey]:
    """Every bucket of a charge, its filters in order, then the default bucket."""
    return [(charge.code, f.key) for f in charge.filters] + [(charge.code, None)]


def charge_aggregates(
    charge: Charge,
    metric: BillableMetric,
    events: Iterable[Event],
    period: Period,
    *,
    carried: Mapping[BucketKey, Aggregate] | None = None,
    rounded: bool = True,
) -> dict[BucketKey, Aggregate]:
    """Aggregate `events` (ingestion order) per bucket of `charge` over `period`; `carried`
    holds the previous period's aggregates per bucket, for recurring metrics."""
    grouped: dict[BucketKey, list[Event]] = {key: [] for key in bucket_keys(charge)}
    for event in events:
        if event.code == metric.code:
            grouped[bucket_key(charge, event.properties)].append(event)
    previous = carried or {}
    return {
        key: aggregate(
            metric,
            bucket,
            period.start,
            period.end,
            carried=previous.get(key),
            period_seconds=period.full_seconds,
            rounded=rounded,
        )
        for key, bucket in grouped.items()
    }


def plan_aggregates(
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    events: Iterable[Event],
    period: Period,
    *,
    carried: Mapping[BucketKey, Aggregate] | None = None,
) -> dict[BucketKey, Aggregate]:
    """Aggregates of every bucket of every charge of the plan (what `build_invoice` takes)."""
    listed = list(events)
    result: dict[BucketKey, Aggregate] = {}
    for charge in plan.charges:
        metric = metric_of(charge, metrics_by_code)
        result.update(charge_aggregates(charge, metric, listed, period, carried=carried))
    return result


def metric_of(charge: Charge, metrics_by_code: Mapping[str, BillableMetric]) -> BillableMetric:
    metric = metrics_by_code.get(charge.billable_metric_code)
    if metric is None:
        raise BillingNotFound("billable_metric", charge.billable_metric_code)
    return metric


def bucket_fees(charge: Charge, aggregates: Mapping[BucketKey, Aggregate]) -> list[BucketFee]:
    """Exact fee of each bucket of `charge`; a bucket missing from `aggregates` had no usage."""
    fees = []
    for key in bucket_keys(charge):
        charge_filter = charge.filter(key[1])
        usage = aggregates.get(key, EMPTY)
        amount = charge.model.fee(usage, charge.properties_for(charge_filter))
        fees.append(BucketFee(key, charge, charge_filter, usage, amount))
    return fees


def check_subscription(subscription: Subscription, plan: Plan, currency: str) -> None:
    """The subscription is on this plan, and the plan bills in `currency`."""
    if subscription.plan_code != plan.code:
        raise BillingValidationError("plan_code", "value_is_invalid")
    if currency.upper() != plan.amount_currency:
        raise BillingValidationError("currency", "currencies_does_not_match")
