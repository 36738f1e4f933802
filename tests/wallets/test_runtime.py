"""The wallets' runtime: a cached wallet past its expiration is never held on; the background
sweep keeps the ledger equal to the shared Redis book after a process died: a hold it
journaled is released in the ledger once its TTL passed; a hold it took in Redis but died
before journaling leaves no ledger entry at all (the ledger never saw it, so releasing it
there would overstate the balance)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from faregate.store.db import create_engine
from faregate.store.redis_client import PipelinedRedis
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import MemoryHoldBook, Snapshot
from faregate.wallets.book_redis import RedisHoldBook
from faregate.wallets.runtime import CACHE_S, Account, WalletRuntime
from faregate.wallets.service import WalletService
from faregate.wallets.writer import LedgerWriter
from tests.conftest import migrated

TTL_S = 0.2


@pytest.fixture
async def runtime(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[WalletRuntime]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await migrated(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await repo.insert_wallet(
            conn,
            {
                "id": "w",
                "customer_id": "c",
                "external_customer_id": "acme",
                "currency": "USD",
                "rate_amount": 1,
            },
        )
        await repo.apply_entries(conn, [ledger.credit("w", "t1", 100)])
    client = PipelinedRedis.from_url(redis_url)
    book = RedisHoldBook(client, redis_prefix)
    runtime = WalletRuntime(
        engine=engine,
        book=book,
        service=WalletService(engine, book=book),
        writer=LedgerWriter(engine, tmp_path / "ledger"),
        hold_ttl_s=TTL_S,
    )
    yield runtime
    assert runtime.writer is not None
    await runtime.writer.close()  # and its connection
    await client.aclose()
    await engine.dispose()


async def test_the_sweep_releases_only_the_holds_the_ledger_has(runtime: WalletRuntime) -> None:
    [account] = await runtime.accounts_of("acme")
    assert await runtime.hold(account, "journaled", 20)  # book and journal
    # A process killed between its Redis hold and its journal write:
    assert await runtime.book.hold("w", "lost", 30, TTL_S)
    await runtime.flush()
    await asyncio.sleep(TTL_S + 0.1)
    await runtime.tick()
    await runtime.flush()
    async with runtime.engine.connect() as conn:
        entries = await repo.entries_of(conn, "w")
        row = await repo.wallet_by_id(conn, "w")
        sums = await repo.entry_sums(conn, "w")
    assert [(e["kind"], e["hold_id"]) for e in entries] == [
        ("credit", None),
        ("hold", "journaled"),
        ("release", "journaled"),
    ]
    assert row is not None and int(row["held_nanos"]) == sums.held == 0
    assert int(row["funded_nanos"]) - int(row["consumed_nanos"]) == 100
    snapshot = await runtime.book.snapshot("w")
    assert snapshot is not None and snapshot.held == 0 and snapshot.available == 100


async def test_a_cached_wallet_past_its_expiration_is_skipped_for_the_next() -> None:
    book = MemoryHoldBook()
    for wallet_id in ("old", "new"):
        await book.load(wallet_id, Snapshot(funded=100, version=1, consumed=0))
    nothing = cast(Any, None)  # holding reads neither the database nor the service
    runtime = WalletRuntime(engine=nothing, book=book, service=nothing)
    expired = Account("old", Decimal(1), expires_at=time.time() - 0.001)
    live = Account("new", Decimal(1), expires_at=time.time() + 60)
    assert await runtime.hold_first((expired, live), "r1", 10) == live
    old, new = await book.snapshot("old"), await book.snapshot("new")
    assert old is not None and old.held == 0
    assert new is not None and new.held == 10
    assert await runtime.hold_first((expired,), "r2", 10) is None


def _memory_runtime(book: MemoryHoldBook, **options: Any) -> WalletRuntime:
    nothing = cast(Any, None)  # holding and finishing read neither the database nor the service
    service = cast(Any, SimpleNamespace(webhooks=None))  # no webhooks to send
    return WalletRuntime(engine=nothing, book=book, service=service, **options)


async def test_a_price_above_the_hold_is_debited_only_as_far_as_the_wallet_covers_it() -> None:
    book = MemoryHoldBook()
    await book.load("w", Snapshot(funded=100, version=1, consumed=0))
    runtime = _memory_runtime(book)
    account = Account("w", Decimal(1))
    assert await runtime.hold(account, "r1", 30)
    await runtime.finish(account, "r1", held=30, actual=50)  # covered: 20 more are free
    after = await book.snapshot("w")
    assert after is not None and (after.consumed, after.held, after.available) == (50, 0, 50)

    assert await runtime.hold(account, "r2", 40)
    await runtime.finish(account, "r2", held=40, actual=70)  # only 10 left beyond the hold
    final = await book.snapshot("w")
    assert final is not None and final.consumed == 90 and final.held == 0
    assert final.available == 10  # the 30 over the hold did not fit: never below zero

    await runtime.finish(account, "r2", held=40, actual=70)  # finishing again changes nothing
    again = await book.snapshot("w")
    assert again == final


async def test_the_wallet_cache_and_its_locks_are_pruned_past_their_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _memory_runtime(MemoryHoldBook(), cache_limit=8)

    async def no_wallets(_customer: str) -> tuple[Account, ...]:
        return ()

    monkeypatch.setattr(runtime, "_load_accounts", no_wallets)
    clock = [1000.0]
    monkeypatch.setattr("faregate.wallets.runtime.time.monotonic", lambda: clock[0])
    for i in range(8):
        await runtime.accounts_of(f"old{i}")
    assert len(runtime._cache) == len(runtime._locks) == 8
    clock[0] += 2  # the first eight are now older than the cache TTL
    await runtime.accounts_of("new")
    assert set(runtime._cache) == set(runtime._locks) == {"new"}
    for i in range(20):  # many customers within one second: pruning waits for twice as many
        await runtime.accounts_of(f"burst{i}")
        assert len(runtime._cache) <= max(8, 2 * 21)
    clock[0] += 2
    for i in range(40):
        await runtime.accounts_of(f"later{i}")
    assert all(c.startswith("later") for c in runtime._cache)  # the burst was dropped
    assert set(runtime._locks) == set(runtime._cache)


async def test_on_the_redis_book_the_excess_is_its_own_post_in_the_ledger(
    runtime: WalletRuntime,
) -> None:
    """Each hold is finished in the batch that stores it, so it is stored folded into its
    post: one post per hold, with what the hold reserved."""
    [account] = await runtime.accounts_of("acme")  # 100 funded
    assert await runtime.hold(account, "r1", 30)
    await runtime.finish(account, "r1", held=30, actual=50)
    assert await runtime.hold(account, "r2", 40)
    await runtime.finish(account, "r2", held=40, actual=100)  # 10 left past its hold: not 60
    await runtime.flush()
    async with runtime.engine.connect() as conn:
        entries = await repo.entries_of(conn, "w")
        row = await repo.wallet_by_id(conn, "w")
        sums = await repo.entry_sums(conn, "w")
    assert [
        (e["kind"], e["hold_id"], e["consumed_nanos"], e["reserved_nanos"]) for e in entries
    ] == [
        ("credit", None, 0, None),
        ("post", "r1", 30, 30),
        ("post", "r1:excess", 20, 20),
        ("post", "r2", 40, 40),
    ]
    assert row is not None and int(row["consumed_nanos"]) == 90 and sums.held == 0
    snapshot = await runtime.book.snapshot("w")
    assert snapshot is not None and snapshot.consumed == 90 and snapshot.available == 10


async def test_past_half_the_cache_ttl_wallets_are_read_again_while_requests_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _memory_runtime(MemoryHoldBook())
    wallet = ["w1"]
    reads: list[str] = []
    gate = asyncio.Event()

    async def load(customer: str) -> tuple[Account, ...]:
        reads.append(customer)
        found = wallet[0]
        if len(reads) > 1:
            await gate.wait()
        return (Account(found, Decimal(1)),)

    monkeypatch.setattr(runtime, "_load_accounts", load)
    [first] = await runtime.accounts_of("acme")
    assert first.wallet_id == "w1"
    wallet[0] = "w2"  # a top-up or a new wallet made by another replica
    runtime._cache["acme"].at -= CACHE_S / 2 + 0.1  # past half the TTL, within it
    served = await asyncio.wait_for(
        asyncio.gather(*(runtime.accounts_of("acme") for _ in range(20))), timeout=10
    )
    assert {accounts[0].wallet_id for accounts in served} == {"w1"}  # nobody waited
    await asyncio.sleep(0)
    assert reads == ["acme", "acme"]  # one read in the background for all of them
    gate.set()
    await asyncio.gather(*list(runtime._tasks))
    [now] = await runtime.accounts_of("acme")
    assert now.wallet_id == "w2" and len(reads) == 2


async def test_past_the_cache_ttl_a_request_waits_and_a_read_begun_before_forget_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _memory_runtime(MemoryHoldBook())
    wallet = ["w1"]
    gate = asyncio.Event()
    gate.set()

    async def load(customer: str) -> tuple[Account, ...]:
        found = wallet[0]
        await gate.wait()
        return (Account(found, Decimal(1)),)

    monkeypatch.setattr(runtime, "_load_accounts", load)
    await runtime.accounts_of("acme")
    runtime._cache["acme"].at -= CACHE_S + 0.1
    gate.clear()
    waiting = asyncio.create_task(runtime.accounts_of("acme"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # wallets read more than CACHE_S ago are never used
    runtime.forget("acme")  # this process changed the wallets while they were read
    wallet[0] = "w2"
    gate.set()
    [used] = await waiting
    assert used.wallet_id == "w1"  # the request goes on with what it read ...
    assert "acme" not in runtime._cache  # ... but it is not kept: the next one reads again
    [later] = await runtime.accounts_of("acme")
    assert later.wallet_id == "w2"


async def test_cache_s_sets_how_long_a_customers_wallets_are_used_before_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`wallets.cache_s`: used as read for half of it, read again in the background from
    then, and a request waits for a read only past it."""
    runtime = _memory_runtime(MemoryHoldBook(), cache_s=60.0)
    reads: list[str] = []

    async def load(customer: str) -> tuple[Account, ...]:
        reads.append(customer)
        return (Account("w1", Decimal(1)),)

    monkeypatch.setattr(runtime, "_load_accounts", load)
    await runtime.accounts_of("acme")
    runtime._cache["acme"].at -= CACHE_S + 20  # past the default, well within 60 s
    await runtime.accounts_of("acme")
    assert reads == ["acme"]
    runtime._cache["acme"].at -= 10  # 32 s old: past half of 60 s
    await runtime.accounts_of("acme")
    await asyncio.gather(*list(runtime._tasks))
    assert reads == ["acme", "acme"]  # in the background
    runtime._cache["acme"].at -= 61
    gate = asyncio.Event()

    async def slow(customer: str) -> tuple[Account, ...]:
        await gate.wait()
        return await load(customer)

    monkeypatch.setattr(runtime, "_load_accounts", slow)
    waiting = asyncio.create_task(runtime.accounts_of("acme"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # past cache_s, the request waits for the read
    gate.set()
    await waiting
    assert reads == ["acme", "acme", "acme"]
