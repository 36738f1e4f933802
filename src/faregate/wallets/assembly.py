"""Builds the wallets' runtime from Settings: the hold book (Redis when configured, else
PostgreSQL's conditional update when the database is shared, else in-process), the ledger
writer for the books that do not write entries themselves, and the background loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.config import Settings
from faregate.store.db import is_sqlite
from faregate.wallets.book import HoldBook, MemoryHoldBook
from faregate.wallets.runtime import WalletRuntime
from faregate.wallets.service import WalletService
from faregate.wallets.writer import LedgerWriter


def hold_ttl(settings: Settings) -> float:
    """A hold outlives the longest request, so only holds of dead processes expire."""
    section = settings.section("wallets")
    return float(section.get("hold_ttl_s", settings.request_timeout + 60))


async def build_wallets(
    settings: Settings, engine: AsyncEngine, redis_client: Any, webhooks: Any = None
) -> WalletRuntime | None:
    section = settings.section("wallets")
    if section.get("enabled", True) is False:
        return None
    ttl = hold_ttl(settings)
    book: HoldBook
    writer: LedgerWriter | None = None
    if redis_client is not None:
        from faregate.wallets.book_redis import RedisHoldBook

        prefix = str(settings.section("server").get("redis_prefix", "fg:"))
        book = RedisHoldBook(redis_client, prefix)
    elif not is_sqlite(settings.database_url):
        from faregate.wallets.book_sql import SqlHoldBook

        book = SqlHoldBook(engine, ttl)
    else:
        book = MemoryHoldBook()
    if not book.durable:
        instance = settings.section("server").get("instance", f"{settings.host}-{settings.port}")
        writer = LedgerWriter(engine, Path(settings.data_dir) / "ledger" / str(instance))
    service = WalletService(
        engine, book=book, webhooks=webhooks, default_currency=settings.currency
    )
    runtime = WalletRuntime(
        engine=engine,
        book=book,
        service=service,
        writer=writer,
        hold_ttl_s=ttl,
        sweep_interval_s=float(section.get("sweep_interval_s", 1.0)),
    )
    await runtime.start()
    return runtime
