"""Parallel batches that repeat transaction ids are stored, rolled up and reported once."""

from __future__ import annotations

import asyncio
import random

import httpx

from tests.api.conftest import ADMIN_KEY, Billing
from tests.api.test_current_usage import _mistral_like_catalog
from tests.metering.test_idempotency import _totals


async def test_parallel_batches_repeating_transaction_ids_count_each_once(
    billing: Billing,
) -> None:
    await _mistral_like_catalog(billing)
    rng = random.Random(7)
    batches = []
    for _ in range(8):
        ids = rng.sample(range(300), 200)
        batches.append(
            {
                "events": [
                    {
                        "transaction_id": f"tx{i}",
                        "external_subscription_id": "sub_m",
                        "code": "tokens",
                        "properties": {"model": "large", "type": "input", "tokens": i},
                    }
                    for i in ids
                ]
            }
        )
    async with httpx.AsyncClient(timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{billing.url}/api/v1/events/batch",
                    json=b,
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
                for b in batches
            )
        )
    assert {r.status_code for r in responses} == {200}
    distinct = {e["transaction_id"] for b in batches for e in b["events"]}
    assert await billing.event_count(code="tokens") == len(distinct)
    stored, rolled, total = await _totals(billing.engine, "tokens")
    assert (stored, rolled) == (len(distinct), len(distinct))
    assert total == sum(int(t[2:]) for t in distinct)
    usage = await billing.call(billing.client.customers.current_usage, "acme", "sub_m")
    assert usage.charges_usage[0].events_count == len(distinct)
