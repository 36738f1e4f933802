from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from faregate.providers.base import ProviderError
from faregate.routing.breaker import BreakerPolicy
from faregate.routing.health import HealthRegistry
from faregate.routing.health_redis import RedisSharedHealth

pytestmark = pytest.mark.redis

OUTAGE = ProviderError("upstream 503", status=503)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def replica(
    client: aioredis.Redis, prefix: str, name: str, policy: BreakerPolicy | None = None
) -> HealthRegistry:
    shared = RedisSharedHealth(client, prefix, replica_id=name)
    return HealthRegistry(policy, shared=shared, sync_interval=0.05)


async def test_a_breaker_opened_by_one_replica_stops_the_other(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replica(client, redis_prefix, "a"), replica(client, redis_prefix, "b")
    b.register(["openai-1"])
    await b.sync()
    assert b.available("openai-1")
    for _ in range(5):
        a.observe("openai-1", error=OUTAGE)
    await a.sync()
    await b.sync()
    assert not b.available("openai-1")
    assert b.state("openai-1") == "open"
    assert 29 < b.available_in("openai-1") <= 30


async def test_failures_seen_by_different_replicas_add_up(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replica(client, redis_prefix, "a"), replica(client, redis_prefix, "b")
    for _ in range(3):
        a.observe("d", error=OUTAGE)
    for _ in range(2):
        b.observe("d", error=OUTAGE)
    await a.sync()
    await b.sync()
    await a.sync()
    assert a.state("d") == "open" and b.state("d") == "open"
    assert a.snapshot()[0]["shared"]["state"] == "open"


async def test_a_retry_after_cooldown_is_shared(client: aioredis.Redis, redis_prefix: str) -> None:
    a, b = replica(client, redis_prefix, "a"), replica(client, redis_prefix, "b")
    b.register(["d"])
    a.observe("d", error=ProviderError("slow down", status=429, retry_after=2.0))
    await a.sync()
    await b.sync()
    assert not b.available("d")
    assert 1.5 < b.available_in("d") <= 2.0
    assert b.state("d") == "closed"


async def test_only_one_replica_probes_a_half_open_deployment(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    policy = BreakerPolicy(cooldown_seconds=0.2)
    a = replica(client, redis_prefix, "a", policy)
    b = replica(client, redis_prefix, "b", policy)
    b.register(["d"])
    for _ in range(5):
        a.observe("d", error=OUTAGE)
    await a.sync()
    await b.sync()
    await asyncio.sleep(0.25)
    # Both see the cooldown end but neither probes before the shared store grants a lease.
    assert not a.available("d") and not b.available("d")
    await a.sync()
    await b.sync()
    assert a.try_acquire("d")
    assert not b.try_acquire("d")
    a.observe("d", latency=0.1)
    await a.sync()
    await b.sync()
    assert a.state("d") == "closed" and b.state("d") == "closed"
    assert b.try_acquire("d")


async def test_background_exchange_spreads_an_open_breaker_within_a_second(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replica(client, redis_prefix, "a"), replica(client, redis_prefix, "b")
    b.register(["d"])
    await a.start()
    await b.start()
    try:
        for _ in range(5):
            a.observe("d", error=OUTAGE)
        for _ in range(100):
            if not b.available("d"):
                break
            await asyncio.sleep(0.01)
        assert b.state("d") == "open"
    finally:
        await a.aclose()
        await b.aclose()


async def test_routing_keeps_working_on_local_state_when_redis_is_down(redis_prefix: str) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    health = replica(dead, redis_prefix, "a")
    for _ in range(5):
        health.observe("d", error=OUTAGE)
    with pytest.raises(aioredis.RedisError):
        await health.sync()
    assert health.state("d") == "open"
    await health.start()
    await asyncio.sleep(0.1)
    await health.aclose()
    await dead.aclose()
