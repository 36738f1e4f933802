"""A wallet's rate (what one credit is worth) is stored exactly on both databases (SQLite's
NUMERIC would keep it as a float, which changes a rate of more than 15 significant digits),
and amounts beyond what a rate or a balance can hold are refused with a 422 naming the
field, on both, with nothing kept."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from faregate.store.tables.wallets import wallet_transactions, wallets
from tests.api.conftest import ADMIN_KEY, Billing


async def _customer(billing: Billing) -> None:
    made = await billing.post(
        "/api/v1/customers", {"customer": {"external_id": "acme", "name": "Acme"}}
    )
    assert made.status_code == 200, made.text


async def _wallet(billing: Billing, **fields: Any) -> httpx.Response:
    body = {"external_customer_id": "acme", "rate_amount": "1", "paid_credits": "3", **fields}
    return await billing.post("/api/v1/wallets", {"wallet": body})


@pytest.mark.parametrize(
    ("sent", "kept", "credits"),
    [
        ("12.000000000000001", "12.000000000000001", "3"),  # a float made it ...002
        ("123456789.123456789012345", "123456789.123456789012345", "3"),
        ("999999999999999.999999999999999", "999999999999999.999999999999999", "0"),  # 30
        ("0.1234567890123456789", "0.123456789012346", "3"),  # 15 places, half up
        ("0.0000000000000005", "0.000000000000001", "3"),
        ("1000", "1000", "3"),
        ("0.5", "0.5", "3"),
    ],
)
async def test_a_wallet_rate_comes_back_as_stored(
    billing: Billing, sent: str, kept: str, credits: str
) -> None:
    await _customer(billing)
    created = await _wallet(billing, rate_amount=sent, paid_credits=credits)
    assert created.status_code == 200, created.text
    wallet_id = created.json()["wallet"]["lago_id"]

    got = await billing.get(f"/api/v1/wallets/{wallet_id}")
    assert got.status_code == 200, got.text
    assert got.json()["wallet"]["rate_amount"] == kept
    async with billing.engine.connect() as conn:
        stored = await conn.scalar(select(wallets.c.rate_amount).where(wallets.c.id == wallet_id))
    assert isinstance(stored, Decimal) and stored == Decimal(kept)


def _out_of_range(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error_details"] == {field: ["value_is_out_of_range"]}


async def _counts(billing: Billing) -> tuple[int, int]:
    async with billing.engine.connect() as conn:
        made = await conn.scalar(select(func.count()).select_from(wallets))
        moved = await conn.scalar(select(func.count()).select_from(wallet_transactions))
    return made, moved


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rate_amount": "1000000000000000"}, "rate_amount"),  # 16 digits before the point
        ({"paid_credits": "100000000000"}, "paid_credits"),  # 10^11 units: past int64 nanos
        ({"granted_credits": "5000000000"}, "granted_credits"),  # 5 x 10^9 > 2^62 nanos
        # Each fits, not both: the paid credits' transaction is not kept either.
        ({"paid_credits": "3000000000", "granted_credits": "2000000000"}, "granted_credits"),
    ],
)
async def test_a_wallet_worth_more_than_a_balance_holds_is_refused(
    billing: Billing, fields: dict[str, str], field: str
) -> None:
    await _customer(billing)
    _out_of_range(await _wallet(billing, **fields), field)
    assert await _counts(billing) == (0, 0)


async def test_a_top_up_past_what_the_balance_holds_is_refused(billing: Billing) -> None:
    await _customer(billing)
    created = await _wallet(billing, paid_credits="4000000000")
    assert created.status_code == 200, created.text
    wallet_id = created.json()["wallet"]["lago_id"]
    topped = await billing.post(
        "/api/v1/wallet_transactions",
        {"wallet_transaction": {"wallet_id": wallet_id, "paid_credits": "1000000000"}},
    )
    _out_of_range(topped, "paid_credits")
    assert await _counts(billing) == (1, 1)
    got = await billing.get(f"/api/v1/wallets/{wallet_id}")
    assert got.json()["wallet"]["credits_balance"] == "4000000000.00000"


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        # 0 at the rate's 15 places: every balance would divide by it.
        ({"rate_amount": "1e-400"}, {"rate_amount": ["invalid_amount"]}),
        ({"rate_amount": "0.0000000000000004"}, {"rate_amount": ["invalid_amount"]}),
        (
            {
                "recurring_transaction_rules": [
                    {"trigger": "interval", "interval": "monthly", "paid_credits": "1e30"}
                ]
            },
            {"paid_credits": ["value_is_out_of_range"]},
        ),
        (
            {
                "recurring_transaction_rules": [
                    {"trigger": "threshold", "threshold_credits": "1e400", "paid_credits": "1"}
                ]
            },
            {"threshold_credits": ["value_is_out_of_range"]},
        ),
    ],
)
async def test_a_rate_or_a_rule_a_wallet_cannot_work_with_is_refused(
    billing: Billing, fields: dict[str, Any], details: dict[str, Any]
) -> None:
    await _customer(billing)
    refused = await _wallet(billing, **fields)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error_details"] == details
    assert await _counts(billing) == (0, 0)
    smallest = await _wallet(billing, rate_amount="0.0000000000000005", paid_credits="0")
    assert smallest.json()["wallet"]["rate_amount"] == "0.000000000000001"


async def test_a_top_up_name_or_idempotency_key_past_its_column_is_refused(
    billing: Billing,
) -> None:
    await _customer(billing)
    created = await _wallet(billing)
    wallet_id = created.json()["wallet"]["lago_id"]
    body = {"wallet_transaction": {"wallet_id": wallet_id, "paid_credits": "1", "name": "n" * 256}}
    refused = await billing.post("/api/v1/wallet_transactions", body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error_details"] == {"name": ["value_is_invalid"]}
    body["wallet_transaction"]["name"] = "n" * 255
    async with httpx.AsyncClient() as http:
        url = f"{billing.url}/api/v1/wallet_transactions"
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Idempotency-Key": "k" * 201}
        refused = await http.post(url, json=body, headers=headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error_details"] == {"idempotency_key": ["value_is_invalid"]}
        headers["Idempotency-Key"] = "k" * 200
        for _ in range(2):  # the second is the same top-up: nothing more is made
            made = await http.post(url, json=body, headers=headers)
            assert made.status_code == 200, made.text
    assert await _counts(billing) == (1, 2)
