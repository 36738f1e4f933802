"""A customer bills in one currency, as in Lago: its subscriptions' plans, wallets and invoices
share it. Mismatches are Lago's 422 `currencies_does_not_match` on `currency`; they used to be
accepted (a USD customer on an EUR plan, a customer switched to EUR under its USD plan)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from lago_python_client.models import Customer, Plan, Subscription

from tests.api.conftest import Billing

MISMATCH = {"currency": ["currencies_does_not_match"]}


def _refused(response: httpx.Response, details: dict[str, Any]) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error_details"] == details


async def _plans(b: Billing) -> None:
    for currency in ("USD", "EUR"):
        plan = Plan(
            name=currency,
            code=currency.lower(),
            interval="monthly",
            amount_cents=100,
            amount_currency=currency,
        )
        await b.call(b.client.plans.create, plan)


async def _subscribe(b: Billing, customer: str, plan: str, external_id: str) -> httpx.Response:
    body = {"external_customer_id": customer, "plan_code": plan, "external_id": external_id}
    return await b.post("/api/v1/subscriptions", {"subscription": body})


async def _currency(b: Billing, customer: str) -> str | None:
    return (await b.get(f"/api/v1/customers/{customer}")).json()["customer"]["currency"]


async def test_a_customer_cannot_subscribe_to_a_plan_in_another_currency(
    billing: Billing,
) -> None:
    await _plans(billing)
    await billing.call(
        billing.client.customers.create, Customer(external_id="acme", currency="USD")
    )
    _refused(await _subscribe(billing, "acme", "eur", "sub_eur"), MISMATCH)
    assert (await billing.get("/api/v1/subscriptions/sub_eur")).status_code == 404
    assert (await _subscribe(billing, "acme", "usd", "sub_usd")).status_code == 200


async def test_a_customer_without_a_currency_takes_its_first_plans(billing: Billing) -> None:
    await _plans(billing)
    created = await billing.call(billing.client.customers.create, Customer(external_id="acme"))
    assert created.currency is None  # as in Lago: none until something bills in one
    assert (await _subscribe(billing, "acme", "eur", "sub_eur")).status_code == 200
    assert await _currency(billing, "acme") == "EUR"
    _refused(await _subscribe(billing, "acme", "usd", "sub_usd"), MISMATCH)


async def test_the_currency_of_a_customer_with_a_subscription_cannot_change(
    billing: Billing,
) -> None:
    await _plans(billing)
    c = billing.client
    await billing.call(c.customers.create, Customer(external_id="acme", currency="USD"))
    await billing.call(
        c.subscriptions.create,
        Subscription(external_customer_id="acme", plan_code="usd", external_id="sub_usd"),
    )
    switch = {"customer": {"external_id": "acme", "currency": "EUR"}}
    _refused(await billing.post("/api/v1/customers", switch), MISMATCH)
    assert await _currency(billing, "acme") == "USD"
    # Terminated, it still bills its last period in USD (Lago: any subscription counts).
    await billing.call(c.subscriptions.destroy, "sub_usd")
    _refused(await billing.post("/api/v1/customers", switch), MISMATCH)
    same = {"customer": {"external_id": "acme", "currency": "usd", "name": "Acme"}}
    assert (await billing.post("/api/v1/customers", same)).status_code == 200
    # Nothing billed yet: the currency may change.
    await billing.call(c.customers.create, Customer(external_id="zed", currency="USD"))
    moved = await billing.post(
        "/api/v1/customers", {"customer": {"external_id": "zed", "currency": "EUR"}}
    )
    assert moved.status_code == 200 and await _currency(billing, "zed") == "EUR"


async def test_a_wallet_gives_a_customer_its_currency(billing: Billing) -> None:
    await _plans(billing)
    await billing.call(billing.client.customers.create, Customer(external_id="acme"))
    wallet = {"external_customer_id": "acme", "rate_amount": "1", "currency": "EUR"}
    assert (await billing.post("/api/v1/wallets", {"wallet": wallet})).status_code == 200
    assert await _currency(billing, "acme") == "EUR"
    _refused(await _subscribe(billing, "acme", "usd", "sub_usd"), MISMATCH)
    switch = {"customer": {"external_id": "acme", "currency": "USD"}}
    _refused(await billing.post("/api/v1/customers", switch), MISMATCH)


@pytest.mark.parametrize("currency", ["US", "EURO", "12$", "ÉUR", 840])
async def test_a_currency_that_is_not_three_letters_is_refused(
    billing: Billing, currency: object
) -> None:
    """Plans required three letters; a customer or a wallet took "US"."""
    details = {"currency": ["value_is_invalid"]}
    customer = {"customer": {"external_id": "acme", "currency": currency}}
    _refused(await billing.post("/api/v1/customers", customer), details)
    assert (
        await billing.post("/api/v1/customers", {"customer": {"external_id": "acme"}})
    ).status_code == 200
    wallet = {"external_customer_id": "acme", "rate_amount": "1", "currency": currency}
    _refused(await billing.post("/api/v1/wallets", {"wallet": wallet}), details)
    plan = {
        "code": "p",
        "name": "p",
        "interval": "monthly",
        "amount_cents": 0,
        "amount_currency": currency,
    }
    response = await billing.post("/api/v1/plans", {"plan": plan})
    assert response.status_code == 422
    assert list(response.json()["error_details"]) == ["amount_currency"]
