"""Races the hold book must win: a void is checked by the book's atomic step (not the wallet
row, which lags the in-process and Redis books while entries wait in the journal), and two
replicas creating a customer's automatic credit-limit wallet at once make one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from faregate.auth import repository as customers_repo
from faregate.billing.errors import BillingValidationError
from faregate.store.db import create_engine
from faregate.store.tables.wallets import wallets
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import HoldBook, MemoryHoldBook
from faregate.wallets.runtime import Account, WalletRuntime, _credit_limit_wallet
from faregate.wallets.service import TopUp, WalletService
from faregate.wallets.writer import LedgerWriter
from tests.conftest import create_pg_database, drop_pg_database, migrated


@pytest.fixture(params=["memory", "redis"])
async def lagging(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[WalletRuntime]:
    """A runtime on a journaled book whose writer is never started: every hold stays out of
    the wallet row, as it does for up to 0.2 s in a running gateway."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await migrated(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        values = {"id": "w", "customer_id": "c", "external_customer_id": "acme"}
        await repo.insert_wallet(conn, {**values, "currency": "USD", "rate_amount": 1})
        await repo.apply_entries(conn, [ledger.credit("w", "t1", 100_000_000_000)])  # 100
    client: Any = None
    book: HoldBook = MemoryHoldBook()
    if request.param == "redis":
        from faregate.store.redis_client import PipelinedRedis
        from faregate.wallets.book_redis import RedisHoldBook

        client = PipelinedRedis.from_url(redis_url)
        book = RedisHoldBook(client, redis_prefix)
    runtime = WalletRuntime(
        engine=engine,
        book=book,
        service=WalletService(engine, book=book),
        writer=LedgerWriter(engine, tmp_path / "ledger"),
    )
    yield runtime
    assert runtime.writer is not None
    await runtime.writer.close()  # and its connection
    if client is not None:
        await client.aclose()
    await engine.dispose()


async def test_a_void_is_refused_when_a_hold_in_flight_took_the_credits(
    lagging: WalletRuntime,
) -> None:
    runtime, service = lagging, lagging.service
    account = Account("w", Decimal(1))
    assert await runtime.hold(account, "in-flight", 70_000_000_000)  # 70 of 100 credits
    row = await service.get("w")
    assert int(row["held_nanos"]) == 0  # the row has not seen the hold yet
    with pytest.raises(BillingValidationError):
        await service.top_up("w", TopUp(voided=Decimal(50)))
    [made] = await service.top_up("w", TopUp(voided=Decimal(30)))
    assert made["transaction_status"] == "voided"
    snapshot = await runtime.book.snapshot("w")
    assert snapshot is not None and snapshot.available == 0 and snapshot.held == 70_000_000_000
    assert not await runtime.hold(account, "next", 1)  # nothing left to hold
    await runtime.finish(account, "in-flight", 70_000_000_000, 70_000_000_000)
    await runtime.flush()
    async with runtime.engine.connect() as conn:
        sums = await repo.entry_sums(conn, "w")
    assert sums.available == 0 and sums.held == 0 and sums.consumed == 70_000_000_000


async def test_a_void_and_a_hold_racing_for_the_same_credits_never_both_win(
    lagging: WalletRuntime,
) -> None:
    runtime, account = lagging, Account("w", Decimal(1))
    void = asyncio.create_task(lagging.service.top_up("w", TopUp(voided=Decimal(60))))
    hold = asyncio.create_task(runtime.hold(account, "r", 60_000_000_000))
    voided, held = await asyncio.gather(void, hold, return_exceptions=True)
    assert [held is True, not isinstance(voided, BaseException)].count(True) == 1
    snapshot = await runtime.book.snapshot("w")
    assert snapshot is not None and snapshot.available == 40_000_000_000


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    url = await create_pg_database()
    await migrated(url)
    yield url
    await drop_pg_database(url)


async def test_two_replicas_creating_the_credit_limit_wallet_at_once_make_one(pg: str) -> None:
    first, second = create_engine(pg), create_engine(pg)
    try:
        async with first.begin() as conn:
            customer = await customers_repo.insert_customer(
                conn, {"external_id": "acme", "name": "Acme", "credit_limit_nanos": 10**10}
            )
        # Interleaved by hand: the second insert waits on the first's uncommitted row.
        async with first.begin() as one:
            made = await _credit_limit_wallet(one, customer, "acme")

            async def other() -> dict[str, Any]:
                async with second.begin() as two:
                    return await _credit_limit_wallet(two, customer, "acme")

            racing = asyncio.create_task(other())
            await asyncio.sleep(0.2)
            assert not racing.done()  # blocked on the unique index, not inserting its own
        assert (await racing)["id"] == made["id"]

        # And through the runtimes, all at once: every replica holds on the same wallet.
        runtimes = [
            WalletRuntime(engine=e, book=MemoryHoldBook(), service=WalletService(e))
            for e in (first, second)
        ]
        async with first.begin() as conn:
            await repo.terminate_wallet(conn, made["id"], repo.now())
        found = await asyncio.gather(*(r.accounts_of("acme") for r in runtimes * 4))
        assert len({accounts[0].wallet_id for accounts in found}) == 1
        async with first.connect() as conn:
            active = select(func.count()).where(wallets.c.status == "active")
            assert (await conn.execute(active)).scalar_one() == 1
    finally:
        await first.dispose()
        await second.dispose()
