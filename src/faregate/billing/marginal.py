"""Marginal fees, the basis of real-time wallet debits and of pay-in-advance charges:
moving a bucket's usage from `before` to `after` costs fee(after) - fee(before), exactly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from faregate.billing import charge_models
from faregate.billing.aggregate import EMPTY, Aggregate
from faregate.billing.charge_models import ChargeModel, ChargeProperties
from faregate.billing.charges import BucketKey, bucket_key
from faregate.billing.events import Event
from faregate.billing.metrics import BillableMetric, accumulate, apply_rounding
from faregate.billing.plans import Charge
from faregate.money import exact


@exact
def marginal_fee(
    model: ChargeModel[Any] | str,
    properties: ChargeProperties,
    before: Aggregate,
    after: Aggregate,
) -> Decimal:
    """fee(after) - fee(before), exact; negative when the fee goes down (a volume charge
    crossing into a cheaper tier credits back).

    Debits telescope: when each `before` is the previous debit's `after` and the first one is
    empty, a period's debits sum exactly to the fee of its final aggregate, for every charge
    model, in any order and batching, because fee(empty) is 0 for every model. Minimums
    (`min_amount_cents`) are never debited: their true-up appears on the invoice only, so
    debits sum to the invoice's charge lines without its true-up lines.
    """
    priced = charge_models.get(model) if isinstance(model, str) else model
    return priced.fee(after, properties) - priced.fee(before, properties)


@dataclass(frozen=True, slots=True)
class Debit:
    """One event's effect on one charge: its bucket, the bucket's new raw aggregate (store it
    as the next `before`) and the exact amount to debit (negative: credit back)."""

    key: BucketKey
    after: Aggregate
    amount: Decimal


def event_debit(
    charge: Charge,
    metric: BillableMetric,
    running: Mapping[BucketKey, Aggregate],
    event: Event,
    key: BucketKey | None = None,
) -> Debit:
    """Price one event against the period-to-date raw aggregates `running` (rounded=False).

    The metric's unit rounding is applied to both sides before pricing, so the debits still
    sum to the invoice. Only incremental aggregations are accepted (see `metrics`); a
    weighted sum is re-aggregated over the period by the caller and priced with
    `marginal_fee`.
    """
    if key is None:  # `key`: the event's bucket, when the caller already knows it
        key = bucket_key(charge, event.properties)
    before = running.get(key, EMPTY)
    after = accumulate(metric, before, event)
    properties = charge.properties_for(charge.filter(key[1]))
    amount = marginal_fee(
        charge.model, properties, apply_rounding(metric, before), apply_rounding(metric, after)
    )
    return Debit(key, after, amount)
