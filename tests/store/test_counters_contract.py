"""The CounterStore contract, run against the memory and the Redis backend alike."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from faregate.store.counters import (
    CounterStore,
    HoldReused,
    LeaseSpec,
    LimitSpec,
    MemoryCounterStore,
    ReserveSpec,
)
from faregate.store.counters.redis_store import RedisCounterStore
from faregate.store.redis_client import PipelinedRedis

T0 = 1_800_000_000.0  # an explicit clock, honoured by both backends


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
    client = PipelinedRedis.from_url(backend)  # the client the gateway builds
    try:
        yield RedisCounterStore(client, redis_prefix)
    finally:
        await client.aclose()


# -- rate limits (GCRA) ----------------------------------------------------------------


async def test_rate_limit_allows_a_burst_of_the_limit_then_refuses(store: CounterStore) -> None:
    results = [await store.rate_limit("rpm", 60, 60, now=T0) for _ in range(61)]
    assert [r.allowed for r in results] == [True] * 60 + [False]
    assert [r.remaining for r in results[:3]] == [59, 58, 57]
    assert results[59].remaining == 0
    assert results[0].reset_after_s == pytest.approx(1.0)
    assert results[59].reset_after_s == pytest.approx(60.0)
    assert results[60].retry_after_s == pytest.approx(1.0)
    assert results[60].limit == 60


async def test_rate_limit_refills_one_unit_per_emission_interval(store: CounterStore) -> None:
    for _ in range(10):
        assert (await store.rate_limit("k", 10, 60, now=T0)).allowed
    assert not (await store.rate_limit("k", 10, 60, now=T0 + 5.9)).allowed
    again = await store.rate_limit("k", 10, 60, now=T0 + 6.0)
    assert again.allowed and again.remaining == 0
    refilled = await store.rate_limit("k", 10, 60, now=T0 + 66.0, cost=0)
    assert refilled.remaining == 10 and refilled.reset_after_s == 0


async def test_rate_limit_with_cost_counts_units_and_reports_retry(store: CounterStore) -> None:
    first = await store.rate_limit("tpm", 1000, 60, cost=700, now=T0)
    assert first.allowed and first.remaining == 300
    refused = await store.rate_limit("tpm", 1000, 60, cost=400, now=T0)
    assert not refused.allowed and refused.remaining == 300
    assert refused.retry_after_s == pytest.approx(6.0)  # 100 tokens at 1000/60s


async def test_a_cost_above_the_limit_never_fits_and_consumes_nothing(store: CounterStore) -> None:
    result = await store.rate_limit("tpm", 100, 60, cost=101, now=T0)
    assert not result.allowed and math.isinf(result.retry_after_s)
    assert (await store.rate_limit("tpm", 100, 60, cost=0, now=T0)).remaining == 100


async def test_rate_limit_many_consumes_nothing_unless_all_pass(store: CounterStore) -> None:
    assert (await store.rate_limit("b", 5, 60, cost=5, now=T0)).allowed
    specs = [LimitSpec("a", 5, 60), LimitSpec("b", 5, 60)]
    results = await store.rate_limit_many(specs, now=T0)
    assert [r.allowed for r in results] == [True, False]
    assert (await store.rate_limit("a", 5, 60, cost=0, now=T0)).remaining == 5
    ok = await store.rate_limit_many([LimitSpec("a", 5, 60), LimitSpec("c", 9, 60, 3)], now=T0)
    assert all(r.allowed for r in ok) and [r.remaining for r in ok] == [4, 6]


async def test_rate_limit_many_counts_a_repeated_key_once_per_spec(store: CounterStore) -> None:
    results = await store.rate_limit_many(
        [LimitSpec("d", 3, 60, 2), LimitSpec("d", 3, 60, 2)], now=T0
    )
    assert [r.allowed for r in results] == [True, False]
    assert (await store.rate_limit("d", 3, 60, cost=0, now=T0)).remaining == 3


async def test_rate_limit_adjust_refunds_and_charges_past_the_limit(store: CounterStore) -> None:
    await store.rate_limit("t", 1000, 60, cost=800, now=T0)
    await store.rate_limit_adjust([LimitSpec("t", 1000, 60, -600)], now=T0)
    assert (await store.rate_limit("t", 1000, 60, cost=0, now=T0)).remaining == 800
    await store.rate_limit_adjust([LimitSpec("t", 1000, 60, 1800)], now=T0)
    over = await store.rate_limit("t", 1000, 60, cost=1, now=T0)
    assert not over.allowed and over.remaining == 0
    assert over.retry_after_s == pytest.approx(60.06)  # 1001 tokens over, at 1000/60s


async def test_a_clock_running_behind_does_not_refill(store: CounterStore) -> None:
    await store.rate_limit("skew", 2, 60, cost=2, now=T0)
    assert not (await store.rate_limit("skew", 2, 60, now=T0 - 30)).allowed


# -- concurrency leases ----------------------------------------------------------------


async def test_concurrency_admits_up_to_the_limit_and_frees_on_release(store: CounterStore) -> None:
    assert await store.acquire_concurrency("c", 2, "l1", 60, now=T0)
    assert await store.acquire_concurrency("c", 2, "l2", 60, now=T0)
    assert await store.acquire_concurrency("c", 2, "l1", 60, now=T0)  # same lease again
    assert not await store.acquire_concurrency("c", 2, "l3", 60, now=T0)
    assert await store.in_flight("c", now=T0) == 2
    await store.release_concurrency("c", "l1")
    await store.release_concurrency("c", "l1")
    assert await store.acquire_concurrency("c", 2, "l3", 60, now=T0)


async def test_an_expired_lease_frees_its_slot(store: CounterStore) -> None:
    assert await store.acquire_concurrency("c", 1, "dead", 10, now=T0)
    assert not await store.acquire_concurrency("c", 1, "next", 10, now=T0 + 9.9)
    assert await store.acquire_concurrency("c", 1, "next", 10, now=T0 + 10.0)
    assert await store.in_flight("c", now=T0 + 10.0) == 1


# -- admission: rates and leases in one step ---------------------------------------------


async def test_admit_takes_every_lease_and_rate_or_nothing(store: CounterStore) -> None:
    rpm = LimitSpec("rpm", 2, 60)
    ok = await store.admit([rpm], [LeaseSpec("a", 1, "r1", 60), LeaseSpec("b", 2, "r1", 60)], T0)
    assert ok.allowed and ok.leases == (True, True) and ok.rates[0].remaining == 1
    # Slot "a" is full: the rpm is judged but not consumed, and no slot of "b" is taken.
    full = await store.admit([rpm], [LeaseSpec("b", 2, "r2", 60), LeaseSpec("a", 1, "r2", 60)], T0)
    assert not full.allowed and full.leases == (True, False)
    assert full.rates[0].allowed and full.rates[0].remaining == 1
    assert await store.in_flight("b", now=T0) == 1
    # The rpm refuses: the free slot is left free.
    await store.rate_limit("rpm", 2, 60, now=T0)
    limited = await store.admit([rpm], [LeaseSpec("c", 1, "r3", 60)], T0)
    assert not limited.allowed and limited.leases == (True,) and not limited.rates[0].allowed
    assert await store.in_flight("c", now=T0) == 0


async def test_admit_counts_one_lease_id_once_and_renews_a_live_lease(store: CounterStore) -> None:
    twice = [LeaseSpec("c", 1, "r1", 60), LeaseSpec("c", 1, "r1", 60)]
    assert (await store.admit([], twice, T0)).allowed
    other = [LeaseSpec("c", 2, "r2", 60), LeaseSpec("c", 2, "r3", 60)]
    assert (await store.admit([], other, T0)).leases == (True, False)
    assert (await store.admit([], [LeaseSpec("c", 1, "r1", 60)], T0 + 50)).allowed
    assert await store.in_flight("c", now=T0 + 100) == 1  # renewed to T0 + 110


async def test_admit_with_nothing_to_check_admits(store: CounterStore) -> None:
    assert (await store.admit([], [], T0)).allowed


async def test_end_admission_frees_the_leases_and_trues_up_the_rates(store: CounterStore) -> None:
    tpm = LimitSpec("tpm", 1000, 60, 800)
    leases = [LeaseSpec("c", 1, "r1", 60), LeaseSpec("d", 1, "r1", 60)]
    assert (await store.admit([tpm], leases, T0)).allowed
    await store.end_admission([("c", "r1"), ("d", "r1")], [LimitSpec("tpm", 1000, 60, -600)], T0)
    assert await store.in_flight("c", now=T0) == 0 and await store.in_flight("d", now=T0) == 0
    assert (await store.rate_limit("tpm", 1000, 60, cost=0, now=T0)).remaining == 800
    # Past the limit, as a true-up may go; then only a lease, then nothing at all.
    await store.end_admission([], [LimitSpec("tpm", 1000, 60, 1800)], T0)
    assert not (await store.rate_limit("tpm", 1000, 60, cost=1, now=T0)).allowed
    assert (await store.admit([], [LeaseSpec("c", 1, "r2", 60)], T0)).allowed
    await store.end_admission([("c", "r2")], [], T0)
    await store.end_admission([], [], T0)
    assert await store.in_flight("c", now=T0) == 0


@pytest.mark.parametrize("lease", [LeaseSpec("c", 0, "r", 60), LeaseSpec("c", 1, "r", 0)])
async def test_a_bad_lease_is_rejected(store: CounterStore, lease: LeaseSpec) -> None:
    with pytest.raises(ValueError):
        await store.admit([], [lease], T0)


# -- multi-scope holds -----------------------------------------------------------------


def _specs(amount: int, team_limit: int = 1000, key_limit: int = 500) -> list[ReserveSpec]:
    return [
        ReserveSpec("budget:team:design", amount, team_limit, "2026-11", 3600),
        ReserveSpec("budget:key:k1", amount, key_limit, "2026-11", 3600),
    ]


async def test_reserve_holds_on_every_scope_and_settle_turns_it_into_spend(
    store: CounterStore,
) -> None:
    result = await store.reserve(_specs(300), "h1", 60)
    assert result.ok and result.failed_key is None
    assert result.spent == {"budget:team:design:2026-11": 0, "budget:key:k1:2026-11": 0}
    assert await store.held("budget:team:design:2026-11") == 300
    after = await store.settle("h1", 120)
    assert after == {"budget:team:design:2026-11": 120, "budget:key:k1:2026-11": 120}
    assert await store.held("budget:key:k1:2026-11") == 0
    assert await store.spent_many(["budget:key:k1:2026-11", "nothing"]) == [120, 0]


async def test_reserve_refuses_when_any_scope_would_pass_its_limit(store: CounterStore) -> None:
    assert (await store.reserve(_specs(400), "h1", 60)).ok
    refused = await store.reserve(_specs(200), "h2", 60)
    assert not refused.ok and refused.failed_key == "budget:key:k1:2026-11"
    assert refused.held["budget:key:k1:2026-11"] == 400
    assert await store.held("budget:team:design:2026-11") == 400  # nothing added anywhere
    assert (await store.reserve(_specs(100), "h3", 60)).ok  # exactly at the limit fits


async def test_settling_or_releasing_twice_changes_nothing(store: CounterStore) -> None:
    await store.reserve(_specs(300), "h1", 60)
    await store.settle("h1", 250)
    assert await store.settle("h1", 250) == {}
    await store.release("h1")
    assert await store.spent("budget:key:k1:2026-11") == 250
    await store.reserve(_specs(300), "h2", 60)
    await store.release("h2")
    await store.release("h2")
    assert await store.settle("h2", 300) == {}
    assert await store.held("budget:key:k1:2026-11") == 0
    assert await store.spent("budget:key:k1:2026-11") == 250
    assert await store.settle("unknown", 5) == {}


async def test_settle_takes_a_different_actual_per_scope(store: CounterStore) -> None:
    await store.reserve(_specs(300), "h1", 60)
    after = await store.settle("h1", {"budget:team:design:2026-11": 90})
    assert after == {"budget:team:design:2026-11": 90, "budget:key:k1:2026-11": 0}


async def test_an_actual_above_the_hold_is_recorded_in_full(store: CounterStore) -> None:
    await store.reserve(_specs(100), "h1", 60)
    await store.settle("h1", 700)
    assert await store.spent("budget:key:k1:2026-11") == 700
    assert not (await store.reserve(_specs(1), "h2", 60)).ok


async def test_reserving_a_pending_hold_again_is_a_no_op(store: CounterStore) -> None:
    assert (await store.reserve(_specs(300), "h1", 60)).ok
    assert (await store.reserve(_specs(300), "h1", 60)).ok
    assert await store.held("budget:team:design:2026-11") == 300
    await store.settle("h1", 1)
    with pytest.raises(HoldReused):
        await store.reserve(_specs(300), "h1", 60)


async def test_sweep_releases_expired_holds_and_a_late_settle_still_counts(
    store: CounterStore,
) -> None:
    await store.reserve(_specs(300), "dead", 30, now=T0)
    await store.reserve(_specs(100), "alive", 300, now=T0)
    assert await store.sweep_expired(now=T0 + 29) == 0
    assert await store.sweep_expired(now=T0 + 31) == 1
    assert await store.sweep_expired(now=T0 + 32) == 0
    assert await store.held("budget:key:k1:2026-11") == 100
    assert await store.settle("dead", 40) == {
        "budget:team:design:2026-11": 40,
        "budget:key:k1:2026-11": 40,
    }
    assert await store.held("budget:key:k1:2026-11") == 100


async def test_a_reservation_sweeps_dead_holds_on_its_way(store: CounterStore) -> None:
    assert (await store.reserve(_specs(500), "dead", 30, now=T0)).ok
    assert not (await store.reserve(_specs(1), "h2", 30, now=T0 + 10)).ok
    assert (await store.reserve(_specs(500), "h3", 30, now=T0 + 31)).ok


async def test_an_unlimited_scope_tracks_without_limiting(store: CounterStore) -> None:
    spec = ReserveSpec("soft", 10**12, None)
    assert (await store.reserve([spec], "h1", 60)).ok
    assert (await store.reserve([spec], "h2", 60)).ok
    await store.settle("h1", 10**12)
    assert await store.spent("soft") == 10**12 and await store.held("soft") == 10**12


async def test_each_period_key_starts_from_zero(store: CounterStore) -> None:
    october = ReserveSpec("budget:team:design", 900, 1000, "2026-10", 3600)
    november = ReserveSpec("budget:team:design", 900, 1000, "2026-11", 3600)
    assert (await store.reserve([october], "h1", 60)).ok
    assert not (await store.reserve([october], "h2", 60)).ok
    assert (await store.reserve([november], "h3", 60)).ok


async def test_amounts_beyond_double_precision_stay_exact(store: CounterStore) -> None:
    big = 10**18
    assert (await store.reserve([ReserveSpec("big", big, big + 1)], "h1", 60)).ok
    await store.settle("h1", big)
    assert not (await store.reserve([ReserveSpec("big", 2, big + 1)], "h2", 60)).ok
    assert (await store.reserve([ReserveSpec("big", 1, big + 1)], "h3", 60)).ok
    assert await store.spent("big") == big


async def test_negative_amounts_are_rejected(store: CounterStore) -> None:
    with pytest.raises(ValueError):
        await store.reserve([ReserveSpec("x", -1, 10)], "h1", 60)
    await store.reserve([ReserveSpec("x", 1, 10)], "h2", 60)
    with pytest.raises(ValueError):
        await store.settle("h2", -5)


# -- plain counters and bytes ----------------------------------------------------------


async def test_incr_adds_and_get_reads(store: CounterStore) -> None:
    assert await store.get("n") == 0
    assert await store.incr("n", 5, ttl_s=60) == 5
    assert await store.incr("n", 10**17) == 10**17 + 5
    assert await store.get("n") == 10**17 + 5
    await store.delete("n")
    assert await store.get("n") == 0


async def test_bytes_round_trip_and_expire(store: CounterStore) -> None:
    payload = bytes(range(256)) * 4
    await store.set_bytes("k", payload, ttl_s=0.2)
    await store.set_bytes("forever", b"x")
    assert await store.get_bytes("k") == payload
    assert await store.get_bytes("missing") is None
    if isinstance(store, MemoryCounterStore):
        store._clock = lambda: 1e12  # far future: the TTL has passed
    else:
        await asyncio.sleep(0.3)
    assert await store.get_bytes("k") is None
    assert await store.get_bytes("forever") == b"x"
    await store.delete("forever")
    assert await store.get_bytes("forever") is None
