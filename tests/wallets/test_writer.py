"""The ledger writer's journal: an entry comes back from a replayed segment exactly as it was
recorded, whether the segment holds entries as values (as written now) or by column name (as
segments of earlier versions do), and a replay stores each key once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from faregate.metering.journal import Journal
from faregate.store.db import create_engine, migrate
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.writer import LedgerWriter

AT = datetime(2026, 12, 4, 21, 30, 5, 123456, tzinfo=UTC)


async def test_a_replayed_journal_stores_its_entries_as_recorded_in_either_form(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await asyncio.to_thread(migrate, url)
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
    credit = ledger.credit("w", "t1", 1_000)
    hold = ledger.hold("w", "r1", 300)
    post = ledger.post("w", "r1", 300, 120, AT, "sub-1")
    old = ledger.hold("w", "r2", 50)  # journaled by an earlier version: by column name

    dead = LedgerWriter(engine, tmp_path / "ledger")  # recorded, never flushed: a killed process
    dead.record(credit)
    dead.record(hold, post)
    dead.record(credit)  # the same key again: stored once
    Journal(tmp_path / "ledger").append({"l": [old.row() | {"created_at": AT.isoformat()}]})

    writer = LedgerWriter(engine, tmp_path / "ledger")
    await writer.start()  # replays what the dead process left
    await writer.close()

    async with engine.connect() as conn:
        rows = await repo.entries_of(conn, "w")
        wallet = await repo.wallet_by_id(conn, "w")
    stored = [repo.entry_of(r) for r in rows]
    assert [(e.key, e.kind) for e in stored] == [
        ("tx:t1", "credit"),
        ("hold:r1", "hold"),
        ("done:r1", "post"),
        ("hold:r2", "hold"),
    ]
    for got, want in zip(stored, (credit, hold, post, old), strict=True):
        assert got.values(AT)[:9] == want.values(AT)[:9]
        assert got.subscription_id == want.subscription_id
    assert stored[2].created_at is not None and stored[2].created_at.replace(tzinfo=UTC) == AT
    assert stored[3].created_at is not None and stored[3].created_at.replace(tzinfo=UTC) == AT
    assert wallet is not None
    assert (int(wallet["funded_nanos"]), int(wallet["consumed_nanos"])) == (1_000, 120)
    assert int(wallet["held_nanos"]) == 50
    await engine.dispose()
