"""What only the Redis backend has: server-side expiry of every key it writes, batched
sweeps, connection failures translated at the boundary; and its Lua scripts checked step for
step against the Python implementation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faregate.store.counters import (
    CounterStore,
    CounterStoreUnavailable,
    HoldReused,
    LeaseSpec,
    LimitSpec,
    MemoryCounterStore,
    ReserveSpec,
)
from faregate.store.counters.redis_store import RedisCounterStore

T0 = 1_800_000_000.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_every_key_written_expires(client: aioredis.Redis, redis_prefix: str) -> None:
    store = RedisCounterStore(client, redis_prefix)
    await store.rate_limit("r", 10, 60)
    await store.acquire_concurrency("c", 2, "l1", 30)
    await store.reserve([ReserveSpec("b", 5, 10, "p", ttl_s=3600)], "h1", 60)
    await store.settle("h1", 5)
    await store.incr("n", 1, ttl_s=60)
    await store.set_bytes("bytes", b"x", ttl_s=60)
    keys = [k async for k in client.scan_iter(match=redis_prefix + "*", count=10_000)]
    ttls = {k.decode()[len(redis_prefix) :]: await client.pttl(k) for k in keys}
    assert set(ttls) == {"rl:r", "cc:c", "b:b:p", "hold:h1", "n:n", "c:bytes"}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert 0 < ttls["rl:r"] <= 6001 and ttls["b:b:p"] > 3_000_000


async def test_a_sweep_releases_more_holds_than_one_batch(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisCounterStore(client, redis_prefix)
    spec = [ReserveSpec("b", 1, None)]
    for i in range(1203):
        await store.reserve(spec, f"h{i}", 10, now=T0)
    assert await store.held("b") == 1203
    assert await store.sweep_expired(now=T0 + 11) == 1203
    assert await store.held("b") == 0
    assert await client.zcard(f"{redis_prefix}holds") == 0


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError):
        RedisCounterStore(client)
    await client.aclose()


async def test_an_unreachable_redis_is_reported_as_unavailable(unused_port: int) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{unused_port}/0")
    store = RedisCounterStore(client, "fgtest:down:")
    with pytest.raises(CounterStoreUnavailable) as down:
        await store.rate_limit("r", 1, 1)
    assert (down.value.status, down.value.code) == (503, "counter_store_unavailable")
    with pytest.raises(CounterStoreUnavailable):
        await store.get_bytes("k")
    await client.aclose()


_rate_ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # key
        st.integers(-3, 6),  # cost (negative: a refund through rate_limit_adjust)
        st.integers(0, 4000),  # milliseconds since the previous step
        st.sampled_from([1, 3, 7]),  # limit
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_rate_ops)
def test_the_lua_gcra_matches_the_python_one(
    redis_url: str, ops: list[tuple[int, int, int, int]]
) -> None:
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        prefix = f"fgtest:{uuid.uuid4().hex[:10]}:"
        stores: list[CounterStore] = [MemoryCounterStore(), RedisCounterStore(client, prefix)]
        now = T0
        try:
            for key, cost, dt_ms, limit in ops:
                now += dt_ms / 1000
                if cost < 0:
                    for store in stores:
                        await store.rate_limit_adjust([LimitSpec(f"k{key}", limit, 10, cost)], now)
                    continue
                spec = [LimitSpec(f"k{key}", limit, 10, cost), LimitSpec("shared", 9, 10, 1)]
                memory, remote = [await s.rate_limit_many(spec, now) for s in stores]
                assert memory == remote
        finally:
            await client.delete(
                *[k async for k in client.scan_iter(match=prefix + "*", count=10_000)] or ["-"]
            )
            await client.aclose()

    asyncio.run(run())


_admit_ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit", "release"]),
        st.integers(0, 1),  # rate key
        st.integers(0, 4),  # cost
        st.integers(0, 1),  # lease key
        st.integers(0, 4),  # lease id
        st.integers(0, 3000),  # milliseconds since the previous step
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_admit_ops)
def test_the_lua_admission_matches_the_python_one(
    redis_url: str, ops: list[tuple[str, int, int, int, int, int]]
) -> None:
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        prefix = f"fgtest:{uuid.uuid4().hex[:10]}:"
        stores: list[CounterStore] = [MemoryCounterStore(), RedisCounterStore(client, prefix)]
        now = T0
        try:
            for op, rate, cost, slot, lease, dt_ms in ops:
                now += dt_ms / 1000
                if op == "release":
                    for store in stores:
                        await store.release_concurrency(f"c{slot}", f"l{lease}")
                    continue
                rates = [LimitSpec(f"r{rate}", 5, 10, cost)]
                leases = [
                    LeaseSpec(f"c{slot}", 2, f"l{lease}", 5),
                    LeaseSpec("shared", 3, f"l{lease}", 8),
                ]
                memory, remote = [await s.admit(rates, leases, now) for s in stores]
                assert memory == remote
                for key in (f"c{slot}", "shared"):
                    assert len({await s.in_flight(key, now) for s in stores}) == 1
        finally:
            await client.delete(
                *[k async for k in client.scan_iter(match=prefix + "*", count=10_000)] or ["-"]
            )
            await client.aclose()

    asyncio.run(run())


_hold_ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release", "sweep"]),
        st.integers(0, 5),  # hold
        st.integers(0, 40),  # amount
        st.integers(0, 20),  # seconds since the previous step
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_hold_ops)
def test_the_lua_hold_book_matches_the_python_one(
    redis_url: str, ops: list[tuple[str, int, int, int]]
) -> None:
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        prefix = f"fgtest:{uuid.uuid4().hex[:10]}:"
        clock = [T0]
        stores: list[CounterStore] = [
            MemoryCounterStore(clock=lambda: clock[0]),
            RedisCounterStore(client, prefix),
        ]
        try:
            for op, hold, amount, dt in ops:
                clock[0] += dt
                outcomes = [await _apply(s, op, f"h{hold}", amount, clock[0]) for s in stores]
                assert outcomes[0] == outcomes[1], (op, hold)
                totals = [(await s.spent("a:p"), await s.held("b:p")) for s in stores]
                assert totals[0] == totals[1]
        finally:
            await client.delete(
                *[k async for k in client.scan_iter(match=prefix + "*", count=10_000)] or ["-"]
            )
            await client.aclose()

    asyncio.run(run())


async def _apply(store: CounterStore, op: str, hold_id: str, amount: int, now: float) -> object:
    specs = [ReserveSpec("a", amount, 60, "p", 3600), ReserveSpec("b", amount, None, "p", 3600)]
    try:
        if op == "reserve":
            return await store.reserve(specs, hold_id, 30, now=now)
        if op == "settle":
            return await store.settle(hold_id, {"a:p": amount, "b:p": amount // 2})
        if op == "release":
            return await store.release(hold_id)
        return await store.sweep_expired(now=now)
    except HoldReused:
        return "reused"
