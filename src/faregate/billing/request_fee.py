"""The customer price of one request on a plan: the marginal fee its usage events add to the
subscription's period-to-date usage, fee(after) - fee(before) per charge bucket (see
`marginal`). The prices of a period's requests therefore sum exactly to the invoice's charge
lines before rounding, whatever the charge models; minimum true-ups are never priced per request.

Pure: the caller keeps the period-to-date raw aggregates (`running`: see
`repository.period_aggregates(..., rounded=False)` to start a period, or a cache) and stores
the `running` it gets back. Weighted sums cannot be priced event by event and raise 422."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from faregate.billing.aggregate import Aggregate
from faregate.billing.charges import BucketKey, bucket_key, metric_of
from faregate.billing.events import Event
from faregate.billing.marginal import Debit, event_debit
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Charge, Plan
from faregate.money import exact

ZERO = Decimal(0)


@dataclass(frozen=True)
class RequestFee:
    amount: Decimal  # exact, in the plan's currency units; negative credits back (volume)
    running: dict[BucketKey, Aggregate]  # period-to-date raw aggregates after this request
    debits: tuple[Debit, ...]  # one per (event, charge) the request touched


@exact
def request_fee(
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    events: Iterable[Event],
    running: Mapping[BucketKey, Aggregate],
) -> RequestFee:
    """Price a request's usage `events` (e.g. its `tokens` input and output events) against the
    subscription's period-to-date usage `running` before it."""
    after = dict(running)
    debits = []
    total = ZERO
    for event in events:
        for charge in plan.charges:
            if charge.billable_metric_code != event.code:
                continue
            debit = event_debit(charge, metric_of(charge, metrics_by_code), after, event)
            after[debit.key] = debit.after
            debits.append(debit)
            total += debit.amount
    return RequestFee(total, after, tuple(debits))


@exact
def worst_request_fee(
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    groups: Iterable[Sequence[Event]],
    running: Mapping[BucketKey, Aggregate],
) -> Decimal:
    """An upper bound of `request_fee` for a request not made yet, whose usage is given as
    `groups` of alternatives: the request's usage will be, per group, any one of the group's
    events or any split of that event's quantity among them (input tokens billed as input or
    as cached input, output as output or reasoning, one of several providers). Each bucket
    an event of a group can fall into is priced with that event's whole quantity (of a
    group's events falling into one bucket, the dearest), and a debit that would credit
    back counts as 0. This bounds the real fee for every charge model whose fee does not
    fall as its usage grows (standard, package, graduated, percentage); a volume charge
    crossing into a cheaper tier can credit back instead."""
    listed = [tuple(group) for group in groups]
    after = dict(running)
    total = ZERO
    for charge in plan.charges:
        metric: BillableMetric | None = None
        for group in listed:
            dearest: dict[BucketKey, Debit] = {}
            for event in group:
                if event.code != charge.billable_metric_code:
                    continue
                metric = metric or metric_of(charge, metrics_by_code)
                debit = event_debit(charge, metric, after, event)
                known = dearest.get(debit.key)
                if known is None or debit.amount > known.amount:
                    dearest[debit.key] = debit
            for debit in dearest.values():
                after[debit.key] = debit.after
                total += max(debit.amount, ZERO)
    return total


@dataclass(frozen=True, slots=True)
class WorstBucket:
    """A bucket that one group of alternatives (see `worst_request_fee`) can fall into, found
    once by filter matching and priced per request with the group's quantity."""

    charge: Charge
    metric: BillableMetric
    key: BucketKey
    event: Event  # the first of the group's events that falls into this bucket


def worst_buckets(
    plan: Plan, metrics_by_code: Mapping[str, BillableMetric], groups: Iterable[Sequence[Event]]
) -> list[list[WorstBucket]]:
    """Per group, the distinct buckets of every charge its events fall into. With
    `worst_fee_of_buckets` this prices like `worst_request_fee` for metrics that sum a
    quantity other than `cost` (or count events), whatever the group's quantity, so the
    filter matching can be done once per kind of request."""
    result = []
    for group in groups:
        found: dict[BucketKey, WorstBucket] = {}
        for charge in plan.charges:
            for event in group:
                if event.code == charge.billable_metric_code:
                    key = bucket_key(charge, event.properties)
                    if key not in found:
                        metric = metric_of(charge, metrics_by_code)
                        found[key] = WorstBucket(charge, metric, key, event)
        result.append(list(found.values()))
    return result


@exact
def worst_fee_of_buckets(
    buckets: Sequence[Sequence[WorstBucket]],
    quantities: Sequence[int | None],
    running: Mapping[BucketKey, Aggregate],
) -> Decimal:
    """`worst_request_fee` over buckets found by `worst_buckets`, each group's events carrying
    `quantities[i]` (None: the event's own; 0: the group is left out)."""
    after = dict(running)
    total = ZERO
    for group, quantity in zip(buckets, quantities, strict=True):
        if quantity == 0:
            continue
        for bucket in group:
            event = bucket.event
            field = bucket.metric.field_name
            if quantity is not None and field:
                event = Event(
                    event.transaction_id,
                    event.code,
                    event.timestamp,
                    {**event.properties, field: quantity},
                )
            debit = event_debit(bucket.charge, bucket.metric, after, event, key=bucket.key)
            after[debit.key] = debit.after
            total += max(debit.amount, ZERO)
    return total


def events_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Billing events from the usage event rows the gateway records (metering/recorder.py)."""
    return [
        Event(
            str(row["transaction_id"]),
            str(row["code"]),
            row["timestamp"]
            if isinstance(row["timestamp"], datetime)
            else datetime.fromisoformat(str(row["timestamp"])),
            row.get("properties") or {},
        )
        for row in rows
    ]
