"""An external event re-sent with the same transaction_id but another timestamp (and other
properties) is acknowledged, stored and counted once, with the first timestamp kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.api.conftest import Billing
from tests.api.test_billing_api import setup_catalog


def _event(timestamp: datetime, tokens: int) -> dict[str, object]:
    return {
        "event": {
            "transaction_id": "tx_resent",
            "external_subscription_id": "sub_1",
            "code": "tokens",
            "timestamp": timestamp.timestamp(),
            "properties": {"tokens": tokens, "model": "gpt-4o-mini"},
        }
    }


async def test_a_resent_event_with_another_timestamp_keeps_the_first(billing: Billing) -> None:
    await setup_catalog(billing)
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.replace(day=1, hour=0, minute=0, second=0)
    first_at = max(now - timedelta(minutes=10), month)  # both in the current period
    second_at = first_at + timedelta(minutes=5)
    first = await billing.post("/api/v1/events", _event(first_at, 120))
    again = await billing.post("/api/v1/events", _event(second_at, 999))
    assert (first.status_code, again.status_code) == (200, 200)
    echoed = again.json()["event"]  # the repeat as received, under the same lago_id
    assert echoed["transaction_id"] == "tx_resent"
    assert echoed["lago_id"] == first.json()["event"]["lago_id"]
    assert await billing.event_count(transaction_id="tx_resent") == 1
    found = await billing.get("/api/v1/events/tx_resent")
    assert found.status_code == 200
    stored = found.json()["event"]
    assert datetime.fromisoformat(stored["timestamp"].replace("Z", "+00:00")) == first_at
    assert stored["properties"]["tokens"] == 120
    usage = await billing.call(billing.client.customers.current_usage, "acme", "sub_1")
    [charge] = usage.charges_usage
    assert Decimal(charge.units) == 120 and charge.events_count == 1
