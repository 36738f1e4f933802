"""Lago wallet fields faregate does not implement (`applies_to`, paid top-up limits,
payment-backed top-ups) are refused with Lago's 422 naming the field when given a value,
rather than accepted and ignored; their defaults (absent, null, false) are accepted."""

from __future__ import annotations

from typing import Any

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Wallet

from tests.api.conftest import Billing


async def _customer_and_wallet(billing: Billing) -> str:
    made = await billing.post(
        "/api/v1/customers", {"customer": {"external_id": "acme", "name": "Acme"}}
    )
    assert made.status_code == 200, made.text
    wallet = await billing.post(
        "/api/v1/wallets",
        {
            "wallet": {
                "external_customer_id": "acme",
                "rate_amount": "1",
                "paid_credits": "10",
                "applies_to": {"fee_types": [], "billable_metric_codes": []},
                "invoice_requires_successful_payment": False,
                "paid_top_up_max_amount_cents": None,
            }
        },
    )
    assert wallet.status_code == 200, wallet.text
    return str(wallet.json()["wallet"]["lago_id"])


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_errors"
    assert body["error_details"] == {field: ["value_is_not_supported"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("applies_to", {"fee_types": ["charge"]}),
        ("applies_to", {"billable_metric_codes": ["tokens"]}),
        ("paid_top_up_min_amount_cents", 500),
        ("paid_top_up_max_amount_cents", 100_000),
        ("invoice_requires_successful_payment", True),
    ],
)
async def test_an_unsupported_wallet_field_with_a_value_is_refused(
    billing: Billing, field: str, value: Any
) -> None:
    wallet_id = await _customer_and_wallet(billing)
    body = {"external_customer_id": "acme", "rate_amount": "1", "paid_credits": "5", field: value}
    _refused(await billing.post("/api/v1/wallets", {"wallet": body}), field)
    _refused(await billing.put(f"/api/v1/wallets/{wallet_id}", {"wallet": {field: value}}), field)
    listed = await billing.get("/api/v1/wallets?external_customer_id=acme")
    assert [w["lago_id"] for w in listed.json()["wallets"]] == [wallet_id]  # nothing made


async def test_payment_backed_top_ups_and_rules_are_refused(billing: Billing) -> None:
    wallet_id = await _customer_and_wallet(billing)
    top_up = {"wallet_id": wallet_id, "paid_credits": "5"}
    _refused(
        await billing.post(
            "/api/v1/wallet_transactions",
            {"wallet_transaction": {**top_up, "invoice_requires_successful_payment": True}},
        ),
        "invoice_requires_successful_payment",
    )
    rule = {"trigger": "threshold", "threshold_credits": "2", "paid_credits": "5"}
    for field in ("invoice_requires_successful_payment", "grants_target_top_up"):
        response = await billing.put(
            f"/api/v1/wallets/{wallet_id}",
            {"wallet": {"recurring_transaction_rules": [{**rule, field: True}]}},
        )
        _refused(response, f"recurring_transaction_rules.{field}")
    found = (await billing.get(f"/api/v1/wallets/{wallet_id}")).json()["wallet"]
    assert found["credits_balance"] == "10.00000" and found["recurring_transaction_rules"] == []
    made = await billing.post("/api/v1/wallet_transactions", {"wallet_transaction": top_up})
    assert made.status_code == 200  # the same top-up without the field goes through


async def test_the_lago_client_gets_the_422(billing: Billing) -> None:
    await _customer_and_wallet(billing)
    wallet = Wallet(external_customer_id="acme", rate_amount="1", paid_top_up_min_amount_cents=100)
    with pytest.raises(LagoApiError) as raised:
        await billing.call(billing.client.wallets.create, wallet)
    assert raised.value.status_code == 422
    assert raised.value.response["error_details"] == {
        "paid_top_up_min_amount_cents": ["value_is_not_supported"]
    }
