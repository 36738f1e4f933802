"""Alerts: logged, sent as `alert.triggered` webhooks, deduplicated across replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from faregate.alerts import Alerts
from faregate.store.counters import CounterStore, MemoryCounterStore
from faregate.store.counters.redis_store import RedisCounterStore

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def store(backend: str | None, redis_prefix: str) -> AsyncIterator[CounterStore]:
    if backend is None:
        yield MemoryCounterStore()
        return
    client = aioredis.from_url(backend)
    try:
        yield RedisCounterStore(client, redis_prefix)
    finally:
        await client.aclose()


class Webhooks:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = fail

    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("outbox down")
        self.sent.append((webhook_type, object_type, obj))


async def test_an_alert_becomes_one_alert_triggered_webhook() -> None:
    hooks = Webhooks()
    await Alerts(hooks, clock=lambda: NOW).emit("budget.threshold", {"budget_id": "b"})
    assert hooks.sent == [
        (
            "alert.triggered",
            "alert",
            {
                "alert_type": "budget.threshold",
                "triggered_at": "2026-11-22T09:00:00+00:00",
                "budget_id": "b",
            },
        )
    ]


async def test_emit_once_raises_an_alert_once_across_replicas(store: CounterStore) -> None:
    hooks = Webhooks()
    replicas = [Alerts(hooks, store), Alerts(hooks, store)]
    results = [
        await a.emit_once("credit.threshold", "wallet-1:0.8", {"wallet": "w"}) for a in replicas
    ]
    assert results == [True, False] and len(hooks.sent) == 1
    assert await replicas[0].emit_once("credit.threshold", "wallet-1:0.5", {"wallet": "w"})


async def test_a_failing_webhook_channel_never_raises(caplog: Any) -> None:
    await Alerts(Webhooks(fail=True)).emit("spend.anomaly", {})
    await Alerts(None).emit("spend.anomaly", {})
    assert "alert spend.anomaly" in caplog.text


async def test_credit_thresholds_alert_once_per_level_crossed(store: CounterStore) -> None:
    hooks = Webhooks()
    alerts = Alerts(hooks, store)
    wallet = {"lago_id": "w1", "external_customer_id": "acme"}
    levels = [Decimal(10), Decimal(5), Decimal(1)]
    assert await alerts.credit_thresholds(wallet, Decimal(12), Decimal(4), levels) == 2
    assert await alerts.credit_thresholds(wallet, Decimal(12), Decimal(4), levels) == 0
    assert await alerts.credit_thresholds(wallet, Decimal(4), Decimal(1), levels) == 1
    assert [o["threshold"] for _, _, o in hooks.sent] == ["10", "5", "1"]
    assert all(o["alert_type"] == "credit.threshold" for _, _, o in hooks.sent)
    # After a top-up (a new episode) the same level alerts again.
    assert await alerts.credit_thresholds(wallet, Decimal(20), Decimal(9), levels, "t2") == 1
