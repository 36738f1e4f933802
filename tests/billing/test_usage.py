"""Current usage in Lago's customer_usage terms, per charge and per filter."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from faregate.billing.charges import plan_aggregates
from faregate.billing.events import Event
from faregate.billing.periods import subscription_period
from faregate.billing.plans import Subscription
from faregate.billing.usage import current_usage
from tests.billing.mistral import mistral_metric, mistral_plan

METRICS = {"tokens": mistral_metric()}


def at(d: int) -> datetime:
    return datetime(2025, 1, d, tzinfo=UTC)


def test_current_usage_reports_each_charge_and_filter_to_date() -> None:
    plan = mistral_plan(charge={"min_amount_cents": 10_000})
    sub = Subscription("sub-1", "acme", plan.code, at(1))
    period = subscription_period(sub, "monthly", at(12))
    events = [
        Event(
            "a", "tokens", at(2), {"model": "mistral-large", "type": "input", "tokens": 2_500_000}
        ),
        Event("b", "tokens", at(3), {"model": "mistral-large", "type": "output", "tokens": 10}),
        Event("c", "tokens", at(4), {"model": "pixtral", "type": "input", "tokens": 7}),
    ]
    usage = current_usage(
        sub,
        plan,
        METRICS,
        plan_aggregates(plan, METRICS, events, period),
        period,
        currency="EUR",
        tax_rate=D(10),
    )
    assert (usage.from_datetime, usage.to_datetime) == (at(1), datetime(2025, 2, 1, tzinfo=UTC))
    # 3 packages x 4 + 1 package x 12; no subscription fee, no minimum true-up
    assert (usage.amount_cents, usage.taxes_amount_cents, usage.total_amount_cents) == (
        2400,
        240,
        2640,
    )
    (tokens,) = usage.charges_usage
    assert (tokens.units, tokens.events_count, tokens.amount_cents) == (D(2_500_017), 3, 2400)
    assert (tokens.charge.charge_model, tokens.billable_metric.aggregation_type) == (
        "package",
        "sum_agg",
    )
    assert [
        (f.invoice_display_name, f.units, f.events_count, f.amount_cents) for f in tokens.filters
    ] == [
        ("mistral-large input", D(2_500_000), 1, 1200),
        ("mistral-large output", D(10), 1, 1200),
        ("mistral-small input", D(0), 0, 0),
        ("mistral-small output", D(0), 0, 0),
        (None, D(7), 1, 0),  # the default bucket
    ]
    assert tokens.filters[0].values == {"model": ("mistral-large",), "type": ("input",)}
    assert tokens.filters[-1].values is None


def test_a_charge_without_filters_reports_no_filter_entries() -> None:
    plan = mistral_plan(charge={"filters": [], "properties": {"amount": "2", "package_size": 1000}})
    sub = Subscription("sub-1", "acme", plan.code, at(1))
    period = subscription_period(sub, "monthly", at(12))
    events = [Event("a", "tokens", at(2), {"tokens": 1001})]
    usage = current_usage(
        sub, plan, METRICS, plan_aggregates(plan, METRICS, events, period), period, currency="EUR"
    )
    assert usage.charges_usage[0].filters == ()
    assert usage.amount_cents == 400  # 2 packages of 1000 x 2.00
