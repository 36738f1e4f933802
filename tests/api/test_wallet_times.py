"""Wallet and wallet-transaction times are RFC 3339 in UTC (`...Z`) like every other billing
resource. On SQLite they came back without a zone (`2026-12-05T06:27:13.899325`), and an
`expiration_at` sent with an offset was stored as its wall time, read back hours off."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Billing


def _times(obj: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in obj.items() if k.endswith("_at") and v is not None}


async def test_wallet_and_transaction_times_are_utc_with_a_z(billing: Billing) -> None:
    await billing.post("/api/v1/customers", {"customer": {"external_id": "acme"}})
    rule = {
        "trigger": "interval",
        "interval": "monthly",
        "paid_credits": "1",
        "started_at": "2030-01-01T02:00:00+02:00",
        "expiration_at": "2031-01-01T00:00:00Z",
    }
    made = await billing.post(
        "/api/v1/wallets",
        {
            "wallet": {
                "external_customer_id": "acme",
                "rate_amount": "1",
                "paid_credits": "10",
                "expiration_at": "2030-06-01T02:00:00+02:00",
                "recurring_transaction_rules": [rule],
            }
        },
    )
    assert made.status_code == 200, made.text
    wallet = made.json()["wallet"]
    wallet_id = wallet["lago_id"]
    top_up = {"wallet_transaction": {"wallet_id": wallet_id, "granted_credits": "5"}}
    [granted] = (await billing.post("/api/v1/wallet_transactions", top_up)).json()[
        "wallet_transactions"
    ]
    ended = (await billing.request("DELETE", f"/api/v1/wallets/{wallet_id}")).json()["wallet"]
    found = (await billing.get(f"/api/v1/wallets/{wallet_id}")).json()["wallet"]
    listed = (await billing.get(f"/api/v1/wallets/{wallet_id}/wallet_transactions")).json()
    one = (await billing.get(f"/api/v1/wallet_transactions/{granted['lago_id']}")).json()
    ledger = (await billing.get(f"/api/v1/wallets/{wallet_id}/ledger")).json()
    times = [
        _times(obj)
        for obj in (
            wallet,
            granted,
            ended,
            found,
            *found["recurring_transaction_rules"],
            *listed["wallet_transactions"],
            one["wallet_transaction"],
            *ledger["entries"],
        )
    ]
    assert {"created_at", "last_balance_sync_at", "terminated_at"} <= set(_times(ended))
    assert {"created_at", "settled_at"} <= set(_times(granted))
    for found_times in times:
        assert found_times, "no times"
        for field, value in found_times.items():
            assert value.endswith("Z"), (field, value)
    assert found["expiration_at"] == "2030-06-01T00:00:00Z"
    [stored_rule] = found["recurring_transaction_rules"]
    assert stored_rule["started_at"] == "2030-01-01T00:00:00Z"
