"""A terminated subscription's external_id taken again, as in Lago: `external_id` is unique
only among live (pending or active) subscriptions, so creating one with a terminated
subscription's external_id makes a new subscription (it answered the terminated row), and
every reader by external_id (the API, current usage, events, invoices, keys) takes the live
one, else the most recent terminated one."""

from __future__ import annotations

from datetime import UTC, datetime

from lago_python_client.models import Customer, Event, Subscription

from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog
from tests.api.test_billing_lifecycle import refused


async def _subscribe(b: Billing, customer: str, external_id: str = "sub_1") -> Subscription:
    return await b.call(
        b.client.subscriptions.create,
        Subscription(external_customer_id=customer, plan_code="pro", external_id=external_id),
    )


async def _tokens(b: Billing, tx: str, count: int, external_id: str = "sub_1") -> object:
    return await b.call(
        b.client.events.create,
        Event(
            transaction_id=tx,
            external_subscription_id=external_id,
            code="tokens",
            timestamp=datetime.now(UTC).timestamp(),
            properties={"tokens": count, "model": "gpt-4o"},
        ),
    )


async def test_a_terminated_subscriptions_external_id_makes_a_new_subscription(
    billing: Billing,
) -> None:
    await setup_catalog(billing)  # sub_1: acme on pro, active
    c = billing.client
    old = await billing.call(c.subscriptions.find, "sub_1")
    await billing.call(c.subscriptions.destroy, "sub_1")
    new = await _subscribe(billing, "acme")
    assert new.lago_id != old.lago_id
    assert (new.status, new.terminated_at) == ("active", None)
    found = await billing.call(c.subscriptions.find, "sub_1")
    assert (found.lago_id, found.status) == (new.lago_id, "active")
    # Resent while live, it is the same subscription again.
    assert (await _subscribe(billing, "acme")).lago_id == new.lago_id
    terminated = await billing.call(c.subscriptions.find_all, {"status[]": "terminated"})
    assert [s.lago_id for s in terminated["subscriptions"]] == [old.lago_id]
    # Events and current usage go to the live one.
    event = await _tokens(billing, "t1", 10)
    assert event.lago_subscription_id == new.lago_id
    usage = await billing.call(c.customers.current_usage, "acme", "sub_1")
    assert usage.amount_cents == 10  # 10 gpt-4o tokens at $0.01
    # Terminated again, the most recent terminated one is found and terminating is a no-op.
    await billing.call(c.subscriptions.destroy, "sub_1")
    latest = await billing.call(c.subscriptions.find, "sub_1")
    assert (latest.lago_id, latest.status) == (new.lago_id, "terminated")
    again = await billing.call(c.subscriptions.destroy, "sub_1")
    assert again.lago_id == new.lago_id


async def test_another_customer_may_take_a_terminated_subscriptions_external_id(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    c = billing.client
    await billing.call(c.customers.create, Customer(external_id="zed", currency="USD"))
    await billing.call(c.subscriptions.destroy, "sub_1")
    new = await _subscribe(billing, "zed")
    assert (new.external_customer_id, new.status) == ("zed", "active")
    event = await _tokens(billing, "t1", 5)
    assert (event.lago_subscription_id, event.lago_customer_id) == (
        new.lago_id,
        new.lago_customer_id,
    )
    assert await billing.event_count(external_customer_id="zed") == 1
    # Each customer's current usage reads its own subscription of that external_id.
    usage = await billing.call(c.customers.current_usage, "zed", "sub_1")
    assert usage.amount_cents == 5
    status, body = await refused(billing, c.customers.current_usage, "acme", "sub_1")
    assert (status, body["code"]) == (405, "no_active_subscription")
    # A key of the new owner may be bound to it; one of the old owner may not.
    key = await billing.post(
        "/admin/keys", {"customer": "zed", "external_subscription_id": "sub_1"}
    )
    assert key.status_code == 201, key.text
    key = await billing.post(
        "/admin/keys", {"customer": "acme", "external_subscription_id": "sub_1"}
    )
    assert key.status_code == 400, key.text
    assert key.json()["error"]["code"] == "subscription_of_another_customer"


async def test_each_subscription_of_an_external_id_is_invoiced_on_its_own(
    billing: Billing,
) -> None:
    """The terminated subscription's final period and the new one's are separate invoices,
    each billing its own subscription (lago_id) and refreshed from it."""
    await setup_catalog(billing)
    c = billing.client
    old = await billing.call(c.subscriptions.find, "sub_1")
    await billing.call(c.subscriptions.destroy, "sub_1")
    new = await _subscribe(billing, "acme")
    await billing.event_count()
    run = await billing.post("/api/v1/billing_runs", {})
    assert run.status_code == 200 and run.json()["billing_run"]["failed"] == []
    invoices = await billing.call(c.invoices.find_all, {"external_subscription_id": "sub_1"})
    billed = {i.subscriptions.__root__[0].lago_id for i in invoices["invoices"]}
    assert old.lago_id in billed and new.lago_id not in billed  # the new one's period runs on
    for invoice in invoices["invoices"]:
        refreshed = await billing.request("PUT", f"/api/v1/invoices/{invoice.lago_id}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["invoice"]["subscriptions"][0]["lago_id"] == old.lago_id
