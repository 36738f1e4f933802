"""The wallet migrations bring stored wallets along: 0016 fills `last_consumed_credit_at` from
the ledger, 0017 gives each later active wallet sharing a customer's code a code of its own
before the index refuses a second one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import IntegrityError
from tests.conftest import create_pg_database, drop_pg_database

from faregate.store.db import create_engine, migrate

_WALLET = text(
    "INSERT INTO wallets (id, customer_id, external_customer_id, currency, rate_amount, code,"
    " status, priority, recurring_transaction_rules, metadata, funded_nanos, funded_version,"
    " consumed_nanos, held_nanos, created_at, updated_at) VALUES (:id, :customer, :customer,"
    " 'USD', '1', :code, :status, 50, '[]', '{}', 0, 0, 0, 0, :at, :at)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))
_ENTRY = text(
    "INSERT INTO wallet_entries (wallet_id, key, kind, available_nanos, held_nanos,"
    " consumed_nanos, funding_nanos, created_at) VALUES (:wallet, :key, :kind, :available,"
    " :held, :consumed, 0, :at)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))


def _utc_text(value: object) -> str:
    """A stored time as `YYYY-MM-DD HH:MM:SS` in UTC (SQLite gives text, PostgreSQL a
    datetime)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_stored_wallets_get_their_last_consumption_and_codes_of_their_own(
    backend: str, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    if backend == "postgres":
        url = await create_pg_database()
    try:
        await asyncio.to_thread(migrate, url, "0014_subscription_id_reuse")
        engine = create_engine(url)
        async with engine.begin() as conn:
            for i, (customer, code, status) in enumerate(
                [
                    ("c1", "prepaid", "active"),
                    ("c1", "prepaid", "active"),
                    ("c1", "prepaid", "active"),
                    ("c1", "prepaid", "terminated"),
                    ("c2", "prepaid", "active"),
                    ("c1", None, "active"),
                    ("c1", None, "active"),
                ]
            ):
                at = datetime(2026, 1, i + 1, tzinfo=UTC)
                values = {"id": f"w{i}", "customer": customer, "code": code, "status": status}
                await conn.execute(_WALLET, {**values, "at": at})
            for key, kind, consumed, at in [
                ("done:a", "post", 5, datetime(2026, 2, 1, 10, tzinfo=UTC)),
                ("done:b", "post", 7, datetime(2026, 2, 3, 10, tzinfo=UTC)),
                ("hold:c", "hold", 0, datetime(2026, 2, 5, 10, tzinfo=UTC)),  # consumes nothing
            ]:
                held = 0 if consumed else 3
                await conn.execute(
                    _ENTRY,
                    {
                        "wallet": "w0",
                        "key": key,
                        "kind": kind,
                        "available": -consumed - held,
                        "held": held,
                        "consumed": consumed,
                        "at": at,
                    },
                )
        await engine.dispose()
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id, code, last_consumed_credit_at FROM wallets ORDER BY id")
            )
            found = {r[0]: (r[1], r[2]) for r in rows}
        assert {w: code for w, (code, _) in found.items()} == {
            "w0": "prepaid",  # the oldest keeps it
            "w1": "prepaid-w1",
            "w2": "prepaid-w2",
            "w3": "prepaid",  # terminated
            "w4": "prepaid",  # another customer's
            "w5": None,
            "w6": None,
        }
        assert _utc_text(found["w0"][1]) == "2026-02-03 10:00:00"
        assert all(at is None for w, (_, at) in found.items() if w != "w0")
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                values = {"id": "w9", "customer": "c1", "code": "prepaid", "status": "active"}
                await conn.execute(_WALLET, {**values, "at": datetime(2026, 3, 1, tzinfo=UTC)})
        await engine.dispose()
    finally:
        if backend == "postgres":
            await drop_pg_database(url)
