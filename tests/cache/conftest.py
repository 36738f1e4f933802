"""A CounterStore per test, on both backends: in-process and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from faregate.store.counters import CounterStore, MemoryCounterStore
from faregate.store.counters.redis_store import RedisCounterStore
from faregate.store.redis_client import PipelinedRedis


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def store(backend: str | None, redis_prefix: str) -> AsyncIterator[CounterStore]:
    if backend is None:
        yield MemoryCounterStore()
        return
    pool = aioredis.BlockingConnectionPool.from_url(backend, max_connections=32)
    client = PipelinedRedis.from_pool(pool)  # the client the gateway builds
    try:
        yield RedisCounterStore(client, redis_prefix)
    finally:
        await client.aclose()
