"""A subscription taking a terminated one's external_id counts only its own usage: events are
read by external_id, so the earlier subscription's events (recurring metrics carry every
earlier event) must not reach the new one, and a new one backdated before the earlier one
ended starts when it ended, as Lago's does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lago_python_client.models import (
    BillableMetric,
    Charge,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)

from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog


async def _seats_plan(b: Billing) -> None:
    c = b.client
    await b.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    metric = await b.call(
        c.billable_metrics.create,
        BillableMetric(
            name="Seats", code="seats", aggregation_type="sum_agg", field_name="seats",
            recurring=True,
        ),
    )  # fmt: skip
    charge = Charge(billable_metric_id=metric.lago_id, charge_model="standard")
    charge.properties = {"amount": "1"}
    await b.call(
        c.plans.create,
        Plan(
            name="Seats", code="seats", interval="monthly", amount_cents=0,
            amount_currency="USD", charges=Charges(__root__=[charge]),
        ),
    )  # fmt: skip


async def _subscribe(b: Billing, plan: str, subscription_at: str | None = None) -> Subscription:
    sub = Subscription(external_customer_id="acme", plan_code=plan, external_id="sub_1")
    if subscription_at is not None:
        sub.subscription_at = subscription_at
    return await b.call(b.client.subscriptions.create, sub)


async def _event(b: Billing, tx: str, code: str, at: datetime, **properties: object) -> None:
    await b.call(
        b.client.events.create,
        Event(
            transaction_id=tx,
            external_subscription_id="sub_1",
            code=code,
            timestamp=at.timestamp(),
            properties=properties,
        ),
    )


async def test_a_reused_external_id_carries_none_of_the_earlier_subscriptions_recurring_usage(
    billing: Billing,
) -> None:
    await _seats_plan(billing)
    now = datetime.now(UTC)
    await _subscribe(billing, "seats", (now - timedelta(days=3)).isoformat())
    await _event(billing, "s1", "seats", now - timedelta(days=2), seats=5)
    await _event(billing, "s2", "seats", now - timedelta(seconds=5), seats=1)
    await billing.event_count()  # some stored, some in the writer's tail: both are read
    await _event(billing, "s3", "seats", now - timedelta(seconds=1), seats=1)
    old = await billing.call(billing.client.customers.current_usage, "acme", "sub_1")
    assert old.charges_usage[0].units == "7"
    await billing.call(billing.client.subscriptions.destroy, "sub_1")
    await _subscribe(billing, "seats")
    await _event(billing, "n1", "seats", datetime.now(UTC), seats=2)
    usage = await billing.call(billing.client.customers.current_usage, "acme", "sub_1")
    assert (usage.charges_usage[0].units, usage.amount_cents) == ("2", 200)
    await billing.event_count()  # all stored now
    usage = await billing.call(billing.client.customers.current_usage, "acme", "sub_1")
    assert (usage.charges_usage[0].units, usage.amount_cents) == ("2", 200)


async def test_a_new_subscription_backdated_before_the_earlier_one_ended_starts_when_it_ended(
    billing: Billing,
) -> None:
    await setup_catalog(billing)  # sub_1 on pro since 2026-11-01, tokens metered
    c = billing.client
    await _event(billing, "t1", "tokens", datetime.now(UTC), tokens=10, model="gpt-4o")
    old = await billing.call(c.subscriptions.destroy, "sub_1")
    new = await _subscribe(billing, "pro", "2026-11-01T00:00:00Z")
    assert new.lago_id != old.lago_id
    assert new.started_at == old.terminated_at
    assert new.subscription_at == old.subscription_at
    usage = await billing.call(c.customers.current_usage, "acme", "sub_1")
    assert usage.amount_cents == 0  # the 10 tokens were the terminated subscription's
    await _event(billing, "t2", "tokens", datetime.now(UTC), tokens=5, model="gpt-4o")
    usage = await billing.call(c.customers.current_usage, "acme", "sub_1")
    assert usage.amount_cents == 5
