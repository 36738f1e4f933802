"""A customer's wallets by code, as Lago routes them (`/api/v1/customers/{external_id}/wallets`
and `/wallets/{code}`: create, list, show, update, terminate), driven by the official client's
`customers.wallets`. They answered 404."""

from __future__ import annotations

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Wallet

from tests.api.conftest import Billing


async def _customers(billing: Billing, *ids: str) -> None:
    for external_id in ids:
        made = await billing.post("/api/v1/customers", {"customer": {"external_id": external_id}})
        assert made.status_code == 200, made.text


async def test_a_customers_wallets_are_managed_by_code(billing: Billing) -> None:
    await _customers(billing, "acme", "globex")
    wallets = billing.client.customers.wallets
    made = await billing.call(
        wallets.create,
        "acme",
        Wallet(rate_amount="0.5", code="prepaid", name="Prepaid", paid_credits="10"),
    )
    assert made.external_customer_id == "acme" and made.code == "prepaid"
    assert made.credits_balance == "10.00000" and made.balance_cents == 500
    # The path names the customer, whatever the body says.
    other = await billing.call(
        wallets.create, "acme", Wallet(external_customer_id="globex", rate_amount="1", code="b")
    )
    assert other.external_customer_id == "acme"
    await billing.call(
        wallets.create, "globex", Wallet(rate_amount="1", code="prepaid", paid_credits="1")
    )

    found = await billing.call(wallets.find, "acme", "prepaid")
    assert found.lago_id == made.lago_id and found.credits_balance == "10.00000"
    listed = await billing.call(wallets.find_all, "acme")
    assert [w.lago_id for w in listed["wallets"]] == [made.lago_id, other.lago_id]
    assert listed["meta"]["total_count"] == 2
    page = await billing.call(lambda: wallets.find_all("acme", options={"page": 2, "per_page": 1}))
    assert [w.lago_id for w in page["wallets"]] == [other.lago_id]

    updated = await billing.call(
        wallets.update, "acme", "prepaid", Wallet(name="Renamed", priority=5)
    )
    assert (updated.lago_id, updated.name, updated.priority) == (made.lago_id, "Renamed", 5)
    ended = await billing.call(wallets.destroy, "acme", "prepaid")
    assert ended.lago_id == made.lago_id and ended.status == "terminated"
    # A terminated wallet is still found by its code, until an active one takes the code.
    assert (await billing.call(wallets.find, "acme", "prepaid")).status == "terminated"
    again = await billing.call(wallets.create, "acme", Wallet(rate_amount="1", code="prepaid"))
    assert (await billing.call(wallets.find, "acme", "prepaid")).lago_id == again.lago_id
    # The other customer's wallet of that code was never touched.
    theirs = await billing.call(wallets.find, "globex", "prepaid")
    assert theirs.status == "active" and theirs.credits_balance == "1.00000"


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/api/v1/customers/acme/wallets/nope", "wallet_not_found"),
        ("PUT", "/api/v1/customers/acme/wallets/nope", "wallet_not_found"),
        ("DELETE", "/api/v1/customers/acme/wallets/nope", "wallet_not_found"),
        ("GET", "/api/v1/customers/ghost/wallets", "customer_not_found"),
        ("GET", "/api/v1/customers/ghost/wallets/prepaid", "customer_not_found"),
        ("POST", "/api/v1/customers/ghost/wallets", "customer_not_found"),
    ],
)
async def test_an_unknown_customer_or_code_is_a_404(
    billing: Billing, method: str, path: str, code: str
) -> None:
    await _customers(billing, "acme")
    body = {"wallet": {"rate_amount": "1", "name": "x"}}
    answer = await billing.request(method, path, body)
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == code


async def test_the_client_reports_a_missing_wallet(billing: Billing) -> None:
    await _customers(billing, "acme")
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.customers.wallets.find, "acme", "nope")
    assert raised.value.status_code == 404
