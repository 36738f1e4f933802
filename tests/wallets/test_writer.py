"""The ledger writer: an entry comes back from a replayed segment exactly as it was recorded,
whether the segment holds entries as values (as written now) or by column name (as segments
of earlier versions do), and a replay stores each key once; a hold its batch finishes is
stored folded into its finish, and a replay never brings such a hold back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.metering.journal import Journal
from faregate.store.db import create_engine
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.writer import LedgerWriter
from tests.conftest import migrated

AT = datetime(2026, 12, 4, 21, 30, 5, 123456, tzinfo=UTC)
WALLET = {
    "id": "w",
    "customer_id": "c",
    "external_customer_id": "acme",
    "currency": "USD",
    "rate_amount": 1,
}


async def _engine_with_wallet(tmp_path: Path) -> AsyncEngine:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await migrated(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await repo.insert_wallet(conn, WALLET)
    return engine


async def test_a_replayed_journal_stores_its_entries_as_recorded_in_either_form(
    tmp_path: Path,
) -> None:
    engine = await _engine_with_wallet(tmp_path)
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
    # The hold and the post of r1 came back in one batch: stored folded, as one post.
    folded = ledger.fold_finished([hold, post])
    assert [(e.key, e.kind) for e in stored] == [
        ("tx:t1", "credit"),
        ("done:r1", "post"),
        ("hold:r2", "hold"),
    ]
    for got, want in zip(stored, (credit, *folded, old), strict=True):
        assert got.values(AT)[:9] == want.values(AT)[:9]
        assert got.subscription_id == want.subscription_id
    assert stored[1].subscription_id == "sub-1" and stored[1].consumed == 120
    assert stored[1].created_at is not None and stored[1].created_at.replace(tzinfo=UTC) == AT
    assert stored[2].created_at is not None and stored[2].created_at.replace(tzinfo=UTC) == AT
    assert wallet is not None
    assert (int(wallet["funded_nanos"]), int(wallet["consumed_nanos"])) == (1_000, 120)
    assert int(wallet["held_nanos"]) == 50
    await engine.dispose()


async def test_a_hold_its_batch_finished_is_stored_folded_into_its_finish_and_never_again(
    tmp_path: Path,
) -> None:
    """A request's hold and post in one batch are stored as one post of the real amount, a
    hold and its release as a release that moves nothing, each keeping what the hold
    reserved; a hold still open is stored as it is. A replayed segment that brings back a
    hold whose folded post is stored drops it, or it would stay held for good. A hold whose
    post was stored unfolded (its own batch failed, the post's did not) still lands."""
    engine = await _engine_with_wallet(tmp_path)
    async with engine.begin() as conn:
        await repo.apply_entries(conn, [ledger.credit("w", "t1", 1_000)])
        await repo.apply_entries(conn, [ledger.post("w", "late", 40, 15)])  # its hold: below
    writer = LedgerWriter(engine, tmp_path / "ledger")
    await writer.start()
    writer.record(ledger.hold("w", "r1", 300))
    writer.record(ledger.hold("w", "r2", 200))
    writer.record(ledger.hold("w", "open", 100))
    writer.record(ledger.post("w", "r1", 300, 120, AT))
    writer.record(ledger.release("w", "r2", 200))
    await writer.flush()
    # What a replayed segment brings back: holds of which one was folded into its post.
    Journal(tmp_path / "ledger").append(
        {"v": [ledger.hold("w", h, n).values(AT) for h, n in (("r1", 300), ("late", 40))]}
    )
    writer2 = LedgerWriter(engine, tmp_path / "ledger")
    await writer2.start()
    await writer2.close()
    await writer.close()

    async with engine.connect() as conn:
        rows = await repo.entries_of(conn, "w")
        wallet = await repo.wallet_by_id(conn, "w")
        sums = await repo.entry_sums(conn, "w")
    got = [(r["key"], r["kind"], r["available_nanos"], r["held_nanos"]) for r in rows]
    assert got == [
        ("tx:t1", "credit", 1_000, 0),
        ("done:late", "post", 25, -40),
        ("hold:open", "hold", -100, 100),
        ("done:r1", "post", -120, 0),
        ("done:r2", "release", 0, 0),
        ("hold:late", "hold", -40, 40),
    ]
    reserved = {r["key"]: r["reserved_nanos"] for r in rows}
    assert (reserved["done:r1"], reserved["done:r2"], reserved["done:late"]) == (300, 200, None)
    assert wallet is not None
    assert (int(wallet["consumed_nanos"]), int(wallet["held_nanos"])) == (135, 100)
    assert (sums.consumed, sums.held, sums.available) == (135, 100, 765)
    await engine.dispose()


async def test_a_hold_is_journaled_folded_into_its_finish_or_as_it_was_at_the_seal(
    tmp_path: Path,
) -> None:
    """A hold taken with `hold` is journaled with its finish, folded into it, when it finishes
    before the next seal; one open at a seal is journaled and stored then, with the time it
    was taken, and its finish later on its own. One a killed process never sealed comes back
    as nothing, which is what its release would have moved."""
    engine = await _engine_with_wallet(tmp_path)
    async with engine.begin() as conn:
        await repo.apply_entries(conn, [ledger.credit("w", "t1", 1_000)])

    dead = LedgerWriter(engine, tmp_path / "ledger")  # recorded, never flushed: a killed process
    dead.hold("w", "r1", 300)
    dead.record(ledger.post("w", "r1", 300, 120, AT))
    dead.hold("w", "lost", 200)
    [segment] = list((tmp_path / "ledger").glob("*.jsonl"))
    assert [v[:6] for r in Journal.read(segment) for v in r["v"]] == [
        ["w", "done:r1", "post", -120, 0, 120]
    ]

    writer = LedgerWriter(engine, tmp_path / "ledger")
    await writer.start()  # replays the folded post
    taken = datetime.now(UTC)
    writer.hold("w", "r2", 100)
    await writer.flush()  # r2 is still open: journaled and stored as a hold
    writer.record(ledger.post("w", "r2", 100, 40, AT))
    await writer.close()

    async with engine.connect() as conn:
        rows = await repo.entries_of(conn, "w")
        sums = await repo.entry_sums(conn, "w")
    got = {
        r["key"]: (r["kind"], r["available_nanos"], r["held_nanos"], r["reserved_nanos"])
        for r in rows
    }
    assert got == {
        "tx:t1": ("credit", 1_000, 0, None),
        "done:r1": ("post", -120, 0, 300),
        "hold:r2": ("hold", -100, 100, None),
        "done:r2": ("post", 60, -100, None),
    }
    hold_at = next(r["created_at"] for r in rows if r["key"] == "hold:r2")
    assert abs((hold_at.replace(tzinfo=UTC) - taken).total_seconds()) < 1
    assert (sums.consumed, sums.held, sums.available) == (160, 0, 840)
    await engine.dispose()
