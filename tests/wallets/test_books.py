"""Every hold book refuses what the wallet cannot cover, finishes a hold once, and releases
a hold whose process died once its TTL passed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest

from faregate.store.db import create_engine
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import HoldBook, MemoryHoldBook, Snapshot
from faregate.wallets.book_sql import SqlHoldBook
from faregate.wallets.runtime import Account, WalletRuntime
from tests.conftest import create_pg_database, drop_pg_database, migrated


@pytest.fixture(params=["memory", "redis", "postgres"])
async def book(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[HoldBook, str]]:
    if request.param == "memory":
        memory = MemoryHoldBook()
        await memory.load("w", Snapshot(funded=100, version=1, consumed=0))
        yield memory, "w"
        return
    if request.param == "redis":
        from faregate.store.redis_client import PipelinedRedis
        from faregate.wallets.book_redis import RedisHoldBook

        client = PipelinedRedis.from_url(redis_url)  # the client the gateway builds
        shared = RedisHoldBook(client, redis_prefix)
        await shared.load("w", Snapshot(funded=100, version=1, consumed=0))
        yield shared, "w"
        await client.aclose()
        return
    url = await create_pg_database()
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
    sql_book = SqlHoldBook(engine, ttl_s=1)
    yield sql_book, "w"
    await sql_book.close()
    await engine.dispose()
    await drop_pg_database(url)


async def test_a_book_holds_only_what_is_covered_and_finishes_once(
    book: tuple[HoldBook, str],
) -> None:
    b, w = book
    assert await b.hold(w, "a", 60, ttl_s=1)
    assert not await b.hold(w, "b", 41, ttl_s=1)
    assert await b.hold(w, "b", 40, ttl_s=1)
    after = await b.finish(w, "a", 60, 25)
    assert after is not None and after.available == 100 - 25 - 40
    assert await b.finish(w, "a", 60, 25) is None  # twice changes nothing
    assert await b.hold(w, "c", 35, ttl_s=1, extra=0)
    assert not await b.hold(w, "d", 1, ttl_s=1)
    assert await b.hold(w, "d", 10, ttl_s=1, extra=10)  # a credit limit


async def test_a_book_releases_holds_whose_ttl_passed(book: tuple[HoldBook, str]) -> None:
    b, w = book
    assert await b.hold(w, "dead", 70, ttl_s=0.2)
    assert not await b.hold(w, "next", 40, ttl_s=10)
    await asyncio.sleep(0.25)
    expired = await b.sweep_expired(time.time() + 1.0)
    assert [(e.hold_id, e.amount) for e in expired] == [("dead", 70)]
    assert await b.finish(w, "dead", 70, 70) is None  # released: a late post is refused
    assert await b.hold(w, "next", 40, ttl_s=10)


async def test_the_in_process_book_forgets_finished_holds_before_their_ttl() -> None:
    """A long TTL must not keep one expiry entry per finished request (soak memory)."""
    b = MemoryHoldBook()
    await b.load("w", Snapshot(funded=10**9, version=1, consumed=0))
    for i in range(5_000):
        assert await b.hold("w", f"h{i}", 1, ttl_s=660)
        await b.finish("w", f"h{i}", 1, 1)
    assert await b.hold("w", "live", 1, ttl_s=660)
    assert len(b._expiries) <= 2 * 1 + 64 + 1
    assert [e.hold_id for e in await b.sweep_expired(time.time() + 661)] == ["live"]


async def test_on_every_book_a_price_above_its_hold_never_takes_the_wallet_below_zero(
    book: tuple[HoldBook, str],
) -> None:
    b, w = book
    service = cast(Any, SimpleNamespace(webhooks=None))
    runtime = WalletRuntime(engine=cast(Any, None), book=b, service=service)
    account = Account(w, Decimal(1))
    assert await runtime.hold(account, "a", 30)
    await runtime.finish(account, "a", held=30, actual=50)  # covered beyond the hold
    assert await runtime.hold(account, "b", 40)
    await runtime.finish(account, "b", held=40, actual=100)  # only 10 left past the hold
    after = await b.snapshot(w)
    assert after is not None and after.held == 0
    assert after.consumed == 90 and after.available == 10


async def test_a_post_or_release_whose_hold_is_not_stored_changes_nothing(
    book: tuple[HoldBook, str],
) -> None:
    """A hold a PostgreSQL crash lost (the SQL book commits without waiting for the WAL
    flush) must not be released or posted against the wallet afterwards."""
    b, w = book
    before = await b.snapshot(w)
    assert await b.finish(w, "never-held", 40, 25) is None
    assert await b.finish(w, "never-held-either", 40, None) is None
    assert await b.snapshot(w) == before
    assert await b.hold(w, "real", 40, ttl_s=1)  # the wallet is whole: 100 is still there
    assert not await b.hold(w, "more", 61, ttl_s=1)
