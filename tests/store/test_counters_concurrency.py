"""Limits hold under real concurrency: many tasks, two Redis connections, two OS processes."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from faregate.store.counters import (
    CounterStore,
    LeaseSpec,
    LimitSpec,
    MemoryCounterStore,
    ReserveSpec,
)
from faregate.store.counters.redis_store import RedisCounterStore
from faregate.store.redis_client import PipelinedRedis

AMOUNT = 27
LIMIT_FOR_37 = 37 * AMOUNT + AMOUNT - 1  # 37 holds fit, the 38th does not


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
    client = _client(backend)
    try:
        yield RedisCounterStore(client, redis_prefix)
    finally:
        await client.aclose()


def _client(url: str) -> aioredis.Redis:
    # A blocking pool queues callers for a free connection instead of failing them.
    return PipelinedRedis.from_pool(  # the client the gateway builds
        aioredis.BlockingConnectionPool.from_url(url, max_connections=32)
    )


def _spec() -> list[ReserveSpec]:
    return [ReserveSpec("race", AMOUNT, LIMIT_FOR_37, "p1", 600)]


async def test_200_concurrent_reservations_admit_exactly_37(store: CounterStore) -> None:
    results = await asyncio.gather(*(store.reserve(_spec(), f"h{i}", 60) for i in range(200)))
    assert sum(r.ok for r in results) == 37
    assert await store.held("race:p1") == 37 * AMOUNT


async def test_concurrent_reserve_and_settle_never_pass_the_limit(store: CounterStore) -> None:
    rng = random.Random(7)

    async def request(i: int) -> None:
        result = await store.reserve(_spec(), f"h{i}", 60)
        await asyncio.sleep(rng.random() / 200)
        if result.ok:
            await store.settle(f"h{i}", rng.randint(0, AMOUNT))

    await asyncio.gather(*(request(i) for i in range(300)))
    assert await store.spent("race:p1") <= LIMIT_FOR_37
    assert await store.held("race:p1") == 0


async def test_concurrent_acquires_admit_exactly_the_limit(store: CounterStore) -> None:
    results = await asyncio.gather(
        *(store.acquire_concurrency("conc", 7, f"l{i}", 60) for i in range(100))
    )
    assert sum(results) == 7


async def test_concurrent_admissions_take_slots_and_rates_together(store: CounterStore) -> None:
    async def admit(i: int) -> bool:
        rates = [LimitSpec("adm:rpm", 37, 60)]
        leases = [LeaseSpec("adm:shared", 60, f"l{i}", 60), LeaseSpec("adm:own", 7, f"l{i}", 60)]
        return (await store.admit(rates, leases)).allowed

    results = await asyncio.gather(*(admit(i) for i in range(100)))
    assert sum(results) == 7
    assert await store.in_flight("adm:shared") == 7  # the refused took no shared slot
    assert (await store.rate_limit("adm:rpm", 37, 60, cost=30)).allowed  # 7 used, 30 left


async def test_two_connections_racing_share_one_limit(redis_url: str, redis_prefix: str) -> None:
    clients = [_client(redis_url) for _ in range(2)]
    try:
        stores = [RedisCounterStore(c, redis_prefix) for c in clients]
        reserves = [stores[i % 2].reserve(_spec(), f"h{i}", 60) for i in range(200)]
        limits = [stores[i % 2].rate_limit("rl", 100, 3600) for i in range(400)]
        results = await asyncio.gather(*reserves)
        allowed = await asyncio.gather(*limits)
    finally:
        for client in clients:
            await client.aclose()
    assert sum(r.ok for r in results) == 37
    assert 99 <= sum(r.allowed for r in allowed) <= 101


_WORKER = """
import asyncio, sys
import redis.asyncio as aioredis
from faregate.store.counters import ReserveSpec
from faregate.store.counters.redis_store import RedisCounterStore

async def main(url, prefix, tag, n, limit):
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32)
    client = aioredis.Redis.from_pool(pool)
    store = RedisCounterStore(client, prefix)
    await store.rate_limit("warm", 1, 1, cost=0)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async def one(i):
        held = await store.reserve([ReserveSpec("race", 27, limit, "p1", 600)], f"{tag}{i}", 60)
        rate = await store.rate_limit("rl", 100, 3600)
        return held.ok, rate.allowed
    results = await asyncio.gather(*(one(i) for i in range(n)))
    print(sum(a for a, _ in results), sum(b for _, b in results), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


async def test_two_processes_racing_share_one_limit(redis_url: str, redis_prefix: str) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            redis_url,
            redis_prefix,
            tag,
            "200",
            str(LIMIT_FOR_37),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    outputs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    assert all(p.returncode == 0 for p in procs)
    counts = [tuple(int(x) for x in out.split()) for out, _ in outputs]
    assert sum(held for held, _ in counts) == 37
    assert 99 <= sum(rate for _, rate in counts) <= 101
