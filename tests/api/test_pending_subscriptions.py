"""Subscriptions that start in the future, as in Lago: `pending` until they start (they were
`active` at once, so `status[]=pending` never found them), activated by the billing run when
their start comes; terminating a pending one (directly, or by deleting its customer or plan)
cancels it and it is never billed (it was stored terminated with an `ending_at` before its
start, and every billing run failed on it). The current usage of a subscription that is not
running is Lago's 405 `no_active_subscription` (it was 422 on `timestamp` or `ending_at`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from lago_python_client.models import Customer, Subscription

from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog
from tests.api.test_billing_lifecycle import refused


def _future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def _subscribe(b: Billing, external_id: str, customer: str = "acme", **fields: str):
    return await b.call(
        b.client.subscriptions.create,
        Subscription(
            external_customer_id=customer, plan_code="pro", external_id=external_id, **fields
        ),
    )


async def _run(b: Billing) -> dict:
    response = await b.post("/api/v1/billing_runs", {})
    assert response.status_code == 200, response.text
    return response.json()["billing_run"]


async def _status(b: Billing, external_id: str) -> dict:
    return (await b.get(f"/api/v1/subscriptions/{external_id}")).json()["subscription"]


async def _usage_refusal(b: Billing, external_id: str, customer: str = "acme") -> tuple:
    return await refused(b, b.client.customers.current_usage, customer, external_id)


async def test_a_future_subscription_is_pending_and_listed_as_such(billing: Billing) -> None:
    await setup_catalog(billing)
    created = await _subscribe(billing, "sub_later", subscription_at=_future(days=10))
    assert created.status == "pending" and created.started_at is None
    listed = (await billing.get("/api/v1/subscriptions?external_customer_id=acme")).json()
    assert "sub_later" not in [s["external_id"] for s in listed["subscriptions"]]
    pending = await billing.get("/api/v1/subscriptions?status[]=pending")
    assert [s["external_id"] for s in pending.json()["subscriptions"]] == ["sub_later"]
    # Sent again, it is the same pending subscription (Lago's resend).
    again = await _subscribe(billing, "sub_later", subscription_at=_future(days=10))
    assert (again.lago_id, again.status) == (created.lago_id, "pending")
    status, body = await _usage_refusal(billing, "sub_later")
    assert status == 405
    assert body == {"status": 405, "error": "Method Not Allowed", "code": "no_active_subscription"}


@pytest.mark.parametrize("how", ["subscription", "customer", "plan"])
async def test_terminating_a_pending_subscription_cancels_it_and_it_is_never_billed(
    billing: Billing, how: str
) -> None:
    await setup_catalog(billing)
    await billing.call(billing.client.customers.create, Customer(external_id="later"))
    await _subscribe(billing, "sub_later", "later", subscription_at=_future(days=10))
    path = {
        "subscription": "/api/v1/subscriptions/sub_later",
        "customer": "/api/v1/customers/later",
        "plan": "/api/v1/plans/pro",
    }[how]
    before = datetime.now(UTC).replace(microsecond=0)
    deleted = await billing.request("DELETE", path)
    assert deleted.status_code == 200, deleted.text
    canceled = await _status(billing, "sub_later")
    assert (canceled["status"], canceled["terminated_at"], canceled["ending_at"]) == (
        "canceled",
        None,
        None,
    )
    # Lago's canceled_at: when it was canceled (it was never stored nor answered).
    canceled_at = datetime.fromisoformat(canceled["canceled_at"])
    assert before <= canceled_at <= datetime.now(UTC)
    if how == "subscription":  # terminating again changes nothing
        again = await billing.request("DELETE", path)
        assert again.json()["subscription"]["status"] == "canceled"
        assert again.json()["subscription"]["canceled_at"] == canceled["canceled_at"]
        found = await billing.call(billing.client.subscriptions.find, "sub_later")
        assert found.canceled_at == canceled["canceled_at"]
    run = await _run(billing)
    assert run["failed"] == [], run
    invoices = (await billing.get("/api/v1/invoices?external_subscription_id=sub_later")).json()
    assert invoices["invoices"] == []
    listed = await billing.get("/api/v1/subscriptions?status[]=canceled")
    assert [s["external_id"] for s in listed.json()["subscriptions"]] == ["sub_later"]
    status, body = await _usage_refusal(billing, "sub_later", "later")
    if how != "customer":  # a deleted customer's usage is a 404 on the customer first
        assert (status, body["code"]) == (405, "no_active_subscription")


async def test_the_billing_run_activates_a_pending_subscription_when_it_starts(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    await _subscribe(billing, "sub_soon", subscription_at=start.isoformat())
    assert (await _status(billing, "sub_soon"))["status"] == "pending"
    await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 0.2)
    await _run(billing)
    started = await _status(billing, "sub_soon")
    assert started["status"] == "active"
    assert datetime.fromisoformat(started["started_at"]) == start.replace(
        microsecond=start.microsecond
    )
    usage = await billing.call(billing.client.customers.current_usage, "acme", "sub_soon")
    assert usage.amount_cents == 0


async def test_the_usage_of_a_subscription_past_its_ending_at_is_no_active_subscription(
    billing: Billing,
) -> None:
    await setup_catalog(billing)
    ending = datetime.now(UTC) + timedelta(seconds=1)
    await _subscribe(billing, "sub_ending", ending_at=ending.isoformat())
    await asyncio.sleep(max(0.0, (ending - datetime.now(UTC)).total_seconds()) + 0.1)
    # Before a billing run marks it terminated, and after.
    for _ in range(2):
        status, body = await _usage_refusal(billing, "sub_ending")
        assert (status, body["code"]) == (405, "no_active_subscription"), body
        await _run(billing)
    assert (await _status(billing, "sub_ending"))["status"] == "terminated"
