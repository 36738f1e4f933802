"""Builds the wallets' runtime from Settings: the hold book (Redis when configured, else
PostgreSQL's conditional update when the database is shared, else in-process), the ledger
writer for the books that do not write entries themselves, credit-threshold alert levels, and
the background loop."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.config import ConfigError, Settings
from faregate.store.db import default_flush_s, is_sqlite
from faregate.wallets.book import HoldBook, MemoryHoldBook
from faregate.wallets.credit_alerts import CreditAlerts
from faregate.wallets.runtime import CACHE_S, WalletRuntime
from faregate.wallets.service import WalletService
from faregate.wallets.writer import LedgerWriter


def hold_ttl(settings: Settings) -> float:
    """A hold outlives the longest request, so only holds of dead processes expire."""
    return settings.seconds("wallets", "hold_ttl_s", settings.request_timeout + 60)


def alert_levels(settings: Settings) -> tuple[Decimal, ...]:
    """`wallets.alert_levels`: balances, in credits, that raise `credit.threshold`."""
    raw = settings.section("wallets").get("alert_levels") or []
    if not isinstance(raw, list):
        raise ConfigError("wallets.alert_levels must be a list of credit amounts")
    levels = []
    for value in raw:
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidOperation
            level = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(f"wallets.alert_levels: {value!r} is not a number") from None
        if not level.is_finite():
            raise ConfigError(f"wallets.alert_levels: {value!r} is not a number")
        levels.append(level)
    return tuple(sorted(set(levels), reverse=True))


async def build_wallets(
    settings: Settings,
    engine: AsyncEngine,
    redis_client: Any,
    webhooks: Any = None,
    alerts: CreditAlerts | None = None,
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

        book = SqlHoldBook(
            engine, ttl, synchronous_commit=bool(section.get("synchronous_commit", False))
        )
    else:
        book = MemoryHoldBook()
    if not book.durable:
        instance = settings.section("server").get("instance", f"{settings.host}-{settings.port}")
        writer = LedgerWriter(
            engine,
            Path(settings.data_dir) / "ledger" / str(instance),
            flush_interval=settings.seconds("wallets", "journal_flush_s", default_flush_s(engine)),
        )
    service = WalletService(
        engine, book=book, webhooks=webhooks, default_currency=settings.currency
    )
    runtime = WalletRuntime(
        engine=engine,
        book=book,
        service=service,
        writer=writer,
        hold_ttl_s=ttl,
        sweep_interval_s=settings.seconds("wallets", "sweep_interval_s", 1.0),
        cache_s=settings.seconds("wallets", "cache_s", CACHE_S),
        alerts=alerts,
        alert_levels=alert_levels(settings),
    )
    await runtime.start()
    return runtime
