"""The ledger's invariants, by property: every entry balances, balances are the sums of the
entries, and finishing a hold a second time (post or release, in any order) changes
nothing — in the in-process hold book and in the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.store.db import create_engine
from faregate.store.tables.base import metadata
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import MemoryHoldBook, Snapshot

W = "w1"
WALLET = {
    "id": W,
    "customer_id": "c",
    "external_customer_id": "acme",
    "currency": "USD",
    "rate_amount": 1,
}
amounts = st.integers(min_value=0, max_value=10**12)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), amounts),
        st.tuples(st.just("void"), amounts),
        st.tuples(st.just("hold"), st.integers(0, 5), amounts),
        st.tuples(st.just("post"), st.integers(0, 5), st.integers(-(10**9), 10**12)),
        st.tuples(st.just("release"), st.integers(0, 5)),
    ),
    max_size=40,
)


async def _run(sequence: list[tuple]) -> tuple[list[ledger.Entry], Snapshot]:
    """Drive the book as WalletRuntime does and keep the entries it would record."""
    book = MemoryHoldBook()
    await book.load(W, Snapshot(0, 0, 0))
    entries: list[ledger.Entry] = []
    held: dict[str, int] = {}
    version = 0
    for n, op in enumerate(sequence):
        if op[0] in ("credit", "void"):
            snapshot = await book.snapshot(W)
            assert snapshot is not None
            if op[0] == "void" and op[1] > snapshot.available:
                continue  # the service refuses to void more than is available
            entry = (ledger.credit if op[0] == "credit" else ledger.void)(W, f"t{n}", op[1])
            entries.append(entry)
            version += 1
            await book.set_funded(W, ledger.fold(entries).funded, version)
        elif op[0] == "hold":
            hold_id = f"h{op[1]}"
            if hold_id in held:
                continue
            if await book.hold(W, hold_id, op[2], ttl_s=60):
                held[hold_id] = op[2]
                entries.append(ledger.hold(W, hold_id, op[2]))
        else:
            hold_id = f"h{op[1]}"
            amount = held.get(hold_id, 0)
            actual = op[2] if op[0] == "post" else None
            if await book.finish(W, hold_id, amount, actual):
                entries.append(
                    ledger.release(W, hold_id, amount)
                    if actual is None
                    else ledger.post(W, hold_id, amount, actual)
                )
    snapshot = await book.snapshot(W)
    assert snapshot is not None
    return entries, snapshot


@given(ops)
@settings(max_examples=300, deadline=None)
def test_the_book_equals_the_sum_of_its_entries(sequence: list[tuple]) -> None:
    entries, snapshot = asyncio.run(_run(sequence))
    total = ledger.fold(entries)
    assert total.available + total.held + total.consumed + total.funding == 0
    assert (total.funded, total.consumed, total.held) == (
        snapshot.funded,
        snapshot.consumed,
        snapshot.held,
    )
    assert total.ongoing == snapshot.available


@given(ops)
@settings(max_examples=200, deadline=None)
def test_posting_or_releasing_twice_changes_nothing(sequence: list[tuple]) -> None:
    entries, _ = asyncio.run(_run(sequence))
    done = [e for e in entries if e.kind in ("post", "release")]
    # Storage keeps the first entry of a key: a repeated post, or a release after a post,
    # carries the same `done:` key and adds nothing.
    repeats = [ledger.release(e.wallet_id, e.hold_id or "", 7) for e in done]
    assert ledger.fold(entries + repeats + done) == ledger.fold(entries)


@given(ops, st.lists(st.integers(0, 80), max_size=4))
@settings(max_examples=300, deadline=None)
def test_folding_the_holds_each_batch_finishes_changes_no_sum(
    sequence: list[tuple], cuts: list[int]
) -> None:
    """However the entries fall into the writer's batches, storing each batch folded keeps
    every sum, stores no hold its own batch finishes, and finishes each hold once."""
    entries, _ = asyncio.run(_run(sequence))
    bounds = sorted({0, len(entries), *(min(c, len(entries)) for c in cuts)})
    stored: list[ledger.Entry] = []
    for start, end in pairwise(bounds):
        batch = entries[start:end]
        folded = ledger.fold_finished(batch)
        finished = {e.hold_id for e in batch if e.kind in ("post", "release")}
        assert not [e for e in folded if e.kind == "hold" and e.hold_id in finished]
        assert len(folded) <= len(batch)
        stored += folded
    assert ledger.fold(stored) == ledger.fold(entries)
    assert len({e.key for e in stored}) == len(stored)
    for entry in stored:
        if entry.kind == "post" and f"hold:{entry.hold_id}" not in {e.key for e in stored}:
            assert entry.held == 0  # folded: the real amount only
            assert (entry.available, entry.consumed) == (-entry.consumed, entry.consumed)


def test_an_unbalanced_entry_is_refused() -> None:
    with pytest.raises(ValueError):
        ledger.Entry(W, "k", "debit", available=-5, consumed=4)


@given(ops)
@settings(max_examples=25, deadline=None)
def test_the_database_row_is_the_sum_of_its_stored_entries(
    tmp_path_factory: pytest.TempPathFactory, sequence: list[tuple]
) -> None:
    path: Path = tmp_path_factory.mktemp("ledger") / "l.db"

    async def run() -> None:
        entries, snapshot = await _run(sequence)
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await repo.insert_wallet(conn, WALLET)
            # Replayed journals insert entries again: the first of each key wins.
            await repo.apply_entries(conn, entries)
            await repo.apply_entries(conn, entries[::-1])
            row = await repo.wallet_by_id(conn, W)
            sums = await repo.entry_sums(conn, W)
        await engine.dispose()
        assert row is not None
        assert sums == ledger.fold(entries)
        assert (row["funded_nanos"], row["consumed_nanos"], row["held_nanos"]) == (
            snapshot.funded,
            snapshot.consumed,
            snapshot.held,
        )

    asyncio.run(run())


def test_an_entrys_values_are_its_row_in_column_order() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    for entry in (
        ledger.post("w", "h", 10, 7, at, "sub"),
        ledger.hold("w", "h", 10),
        ledger.credit("w", "t", 5),
    ):
        row = entry.row()
        values = entry.values(row["created_at"])  # type: ignore[arg-type]
        assert tuple(row) == ledger.COLUMNS
        assert values == tuple(row.values())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_batch_of_entries_and_its_replay_land_once_in_the_rows_and_the_wallet(
    backend: str, tmp_path: Path
) -> None:
    """A batch large enough for the bulk paths (COPY on PostgreSQL, multi-row statements on
    SQLite), then a replay of half of it with new entries mixed in."""
    from tests.conftest import create_pg_database, drop_pg_database, migrated

    url = (
        await create_pg_database()
        if backend == "postgres"
        else f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    )
    await migrated(url)
    engine = create_engine(url)
    first = [ledger.credit(W, "t0", 10**12)] + [ledger.hold(W, f"h{i}", 1000) for i in range(60)]
    second = [*first[30:], *(ledger.post(W, f"h{i}", 1000, 400) for i in range(60))]
    try:
        async with engine.begin() as conn:
            await repo.insert_wallet(conn, WALLET)
            assert [e.key for e in await repo.apply_entries(conn, first)] == [e.key for e in first]
        async with engine.begin() as conn:
            applied = await repo.apply_entries(conn, second)
            assert [e.key for e in applied] == [f"done:h{i}" for i in range(60)]
        async with engine.connect() as conn:
            row = await repo.wallet_by_id(conn, W)
            sums = await repo.entry_sums(conn, W)
            stored = await repo.entries_of(conn, W)
        assert len(stored) == 121
        assert sums == ledger.fold([*first, *second[30:]])
        assert row is not None
        assert (row["funded_nanos"], row["consumed_nanos"], row["held_nanos"]) == (
            10**12,
            60 * 400,
            0,
        )
    finally:
        await engine.dispose()
        if backend == "postgres":
            await drop_pg_database(url)
