"""What only the in-process backend has: a bounded LRU, an injected clock, purging, and the
hold-book invariants checked against a plain model with hypothesis."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.store.counters import HoldReused, MemoryCounterStore, ReserveSpec
from faregate.store.counters.lru import ByteLRU
from faregate.store.counters.memory_holds import HoldBook


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lru_evicts_the_least_recently_used_entry_past_max_entries() -> None:
    lru = ByteLRU(max_entries=2, max_bytes=1000)
    lru.set("a", b"1", None)
    lru.set("b", b"2", None)
    assert lru.get("a", 0) == b"1"
    lru.set("c", b"3", None)
    assert lru.get("b", 0) is None and lru.get("a", 0) == b"1" and len(lru) == 2


def test_lru_evicts_until_under_max_bytes_and_skips_oversized_values() -> None:
    lru = ByteLRU(max_entries=100, max_bytes=10)
    lru.set("a", b"12345", None)
    lru.set("b", b"12345", None)
    lru.set("c", b"123", None)
    assert lru.get("a", 0) is None and lru.total_bytes == 8
    lru.set("huge", b"x" * 11, None)
    assert lru.get("huge", 0) is None and lru.total_bytes == 8
    lru.set("b", b"1", None)
    assert lru.total_bytes == 4


async def test_cache_entries_expire_on_the_injected_clock() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock=clock, cache_max_entries=10, cache_max_bytes=100)
    await store.set_bytes("k", b"v", ttl_s=5)
    clock.now += 4.9
    assert await store.get_bytes("k") == b"v"
    clock.now += 0.1
    assert await store.get_bytes("k") is None


async def test_sweep_purges_finished_holds_expired_counters_and_idle_state() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock=clock)
    await store.reserve([ReserveSpec("b", 5, 10, "p", ttl_s=60)], "h1", 30)
    await store.settle("h1", 5)
    await store.incr("n", 1, ttl_s=10)
    await store.rate_limit("r", 10, 60)
    clock.now += 2 * 24 * 3600
    await store.sweep_expired()
    assert await store.spent("b:p") == 0 and await store.get("n") == 0
    assert not store._holds._holds and not store._rates and not store._ints


_ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release", "sweep"]),
        st.integers(0, 7),  # hold index
        st.integers(0, 60),  # amount / actual
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_hold_book_matches_a_plain_model(ops: list[tuple[str, int, int]]) -> None:
    asyncio.run(_check_against_model(ops))


async def _check_against_model(ops: list[tuple[str, int, int]]) -> None:
    clock = Clock()
    store = MemoryCounterStore(clock=clock)
    limit, spent = 100, 0
    pending: dict[str, int] = {}
    finished: set[str] = set()
    for op, index, amount in ops:
        hold_id = f"h{index}"
        if op == "reserve" and hold_id not in finished and hold_id not in pending:
            result = await store.reserve([ReserveSpec("s", amount, limit)], hold_id, 1000)
            fits = spent + sum(pending.values()) + amount <= limit
            assert result.ok == fits
            if fits:
                pending[hold_id] = amount
        elif op == "settle":
            after = await store.settle(hold_id, amount)
            if hold_id in pending:
                spent += amount
                del pending[hold_id]
                finished.add(hold_id)
                assert after == {"s": spent}
            else:
                assert after == {}
        elif op == "release":
            await store.release(hold_id)
            if pending.pop(hold_id, None) is not None:
                finished.add(hold_id)
        elif op == "sweep":
            assert await store.sweep_expired() == 0
        assert await store.spent("s") == spent
        assert await store.held("s") == sum(pending.values())


async def test_finished_holds_leave_a_bounded_record_and_settling_again_changes_nothing() -> None:
    store = MemoryCounterStore()
    store._holds = HoldBook(max_finished=3)
    for i in range(10):
        await store.reserve([ReserveSpec("b", 5, None, "p", ttl_s=60)], f"h{i}", 30)
        await store.settle(f"h{i}", 5)
    book = store._holds
    assert len(book._finished) == 3 and not book._holds
    assert len(book._expiries) <= 2 * len(book._holds) + 65
    assert await store.settle("h0", 5) == {} and await store.settle("h9", 5) == {}
    assert await store.spent("b:p") == 50
    with pytest.raises(HoldReused):
        await store.reserve([ReserveSpec("b", 5, None, "p", ttl_s=60)], "h9", 30)
