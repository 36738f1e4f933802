"""A wallet's `code` names one active wallet of its customer, as in Lago: a second active
wallet with the code gets Lago's 422 `{"code": ["value_already_exist"]}` (on create and on
update, also when the creates race); another customer's wallet, or a terminated one, may
share it. faregate accepted any number of them."""

from __future__ import annotations

import asyncio

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Wallet

from tests.api.conftest import Billing

TAKEN = {
    "status": 422,
    "error": "Unprocessable Entity",
    "code": "validation_errors",
    "error_details": {"code": ["value_already_exist"]},
}


def _wallet(customer: str = "acme", code: str | None = "prepaid") -> Wallet:
    return Wallet(external_customer_id=customer, rate_amount="1", code=code, currency="USD")


async def _customers(billing: Billing, *ids: str) -> None:
    for external_id in ids:
        made = await billing.post("/api/v1/customers", {"customer": {"external_id": external_id}})
        assert made.status_code == 200, made.text


async def test_a_second_active_wallet_with_the_code_is_refused(billing: Billing) -> None:
    await _customers(billing, "acme", "globex")
    first = await billing.call(billing.client.wallets.create, _wallet())
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.wallets.create, _wallet())
    assert raised.value.status_code == 422
    assert raised.value.response == TAKEN
    # Another customer's wallet, and wallets without a code, are not concerned.
    await billing.call(billing.client.wallets.create, _wallet("globex"))
    await billing.call(billing.client.wallets.create, _wallet(code=None))
    await billing.call(billing.client.wallets.create, _wallet(code=None))
    listed = await billing.call(billing.client.wallets.find_all, {"external_customer_id": "acme"})
    assert [w.code for w in listed["wallets"]] == ["prepaid", None, None]
    # Once terminated, its code may be taken again.
    await billing.call(billing.client.wallets.destroy, first.lago_id)
    again = await billing.call(billing.client.wallets.create, _wallet())
    assert again.code == "prepaid" and again.status == "active"


async def test_an_update_to_a_code_in_use_is_refused(billing: Billing) -> None:
    await _customers(billing, "acme")
    await billing.call(billing.client.wallets.create, _wallet(code="prepaid"))
    other = await billing.call(billing.client.wallets.create, _wallet(code="promo"))
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.wallets.update, Wallet(code="prepaid"), other.lago_id)
    assert raised.value.status_code == 422
    assert raised.value.response == TAKEN
    same = await billing.call(billing.client.wallets.update, Wallet(code="promo"), other.lago_id)
    renamed = await billing.call(billing.client.wallets.update, Wallet(code="bonus"), same.lago_id)
    assert renamed.code == "bonus"
    found = await billing.call(billing.client.wallets.find, other.lago_id)
    assert found.code == "bonus"


async def test_racing_creates_of_one_code_make_one_wallet(billing: Billing) -> None:
    await _customers(billing, "acme")
    body = {"wallet": {"external_customer_id": "acme", "rate_amount": "1", "code": "prepaid"}}
    answers = await asyncio.gather(*(billing.post("/api/v1/wallets", body) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [422] * 7, [a.text for a in answers]
    assert all(a.json() == TAKEN for a in answers if a.status_code == 422)
    listed = await billing.call(billing.client.wallets.find_all, {"external_customer_id": "acme"})
    assert [w.code for w in listed["wallets"]] == ["prepaid"]
