"""Batch inserts compiled once per column set store exactly what SQLAlchemy's own insert
stores, skip duplicates, and keep each row's own columns when rows differ."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import create_pg_database, drop_pg_database

from faregate.store.db import create_engine, migrate
from faregate.store.inserts import PLAIN_FIRST, BatchInsert, SqliteInsertReturning
from faregate.store.tables.metering import events

NOW = datetime(2026, 11, 22, 8, 30, 1, 123456, tzinfo=UTC)


def _event(tx: str, **extra: Any) -> dict[str, Any]:
    return {
        "transaction_id": tx,
        "external_subscription_id": "sub_1",
        "external_customer_id": "cus_1",
        "code": "tokens",
        "timestamp": NOW,
        "properties": {"tokens": 3, "cost": "0.000001"},
        "source": "gateway",
        "created_at": NOW,
        **extra,
    }


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    postgres = request.param == "postgres"
    url = (
        await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    )
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()
    if postgres:
        await drop_pg_database(url)


COLUMNS = [c.name for c in events.c if c.name != "id"]
KEY = ("external_subscription_id", "transaction_id")


async def _sqlite_events(tmp_path: Path) -> tuple[Any, SqliteInsertReturning]:
    """A migrated SQLite database, and the insert of events into it that returns new keys."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    await asyncio.to_thread(migrate, url)
    return create_engine(url), SqliteInsertReturning(events, COLUMNS, conflict=KEY, returning=KEY)


async def test_rows_with_different_columns_each_keep_their_values_and_duplicates_are_skipped(
    engine: Any,
) -> None:
    insert = BatchInsert(events, ["external_subscription_id", "transaction_id"])
    rows = [
        _event("tx1"),
        _event("tx2", precise_total_amount_cents=Decimal("12.5")),
        _event("tx3"),
    ]
    for _ in range(2):
        async with engine.begin() as conn:
            await insert.execute(conn, rows)
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(select(events).order_by(events.c.transaction_id))).mappings().all()
        )
    assert [r["transaction_id"] for r in stored] == ["tx1", "tx2", "tx3"]
    assert [r["precise_total_amount_cents"] for r in stored] == [None, Decimal("12.5"), None]
    first = stored[0]
    assert first["properties"] == {"tokens": 3, "cost": "0.000001"}
    assert first["timestamp"].replace(tzinfo=UTC) == NOW
    assert first["external_customer_id"] == "cus_1" and first["source"] == "gateway"


async def test_sqlite_insert_returning_stores_what_sqlalchemy_stores_and_returns_only_new_rows(
    tmp_path: Path,
) -> None:
    engine, fast = await _sqlite_events(tmp_path)
    rows = [_event(f"tx{i}", precise_total_amount_cents=Decimal(i) / 8) for i in range(300)]
    try:
        async with engine.begin() as conn:  # SQLAlchemy's own insert, for the reference rows
            await conn.execute(events.insert(), [{**r, "transaction_id": "ref"} for r in rows[:1]])
            landed = await fast.execute(conn, [tuple(r[c] for c in COLUMNS) for r in rows[:10]])
        assert landed == [("sub_1", f"tx{i}") for i in range(10)]
        async with (
            engine.begin() as conn
        ):  # 290 new among 300: the savepoint path fails, RETURNING names them
            landed = await fast.execute(conn, [tuple(r[c] for c in COLUMNS) for r in rows])
        assert sorted(landed) == sorted(("sub_1", f"tx{i}") for i in range(10, 300))
        async with engine.connect() as conn:
            stored = {
                r["transaction_id"]: r for r in (await conn.execute(select(events))).mappings()
            }
            raw = {
                r[0]: r[1:]
                for r in await conn.exec_driver_sql(
                    "SELECT transaction_id, timestamp, properties, created_at FROM events"
                )
            }
        assert len(stored) == 301
        assert raw["tx0"] == raw["ref"]  # the same text SQLAlchemy writes
        assert stored["tx7"]["precise_total_amount_cents"] == Decimal("0.875")
        assert stored["tx7"]["properties"] == {"tokens": 3, "cost": "0.000001"}
        assert stored["tx7"]["timestamp"].replace(tzinfo=UTC) == NOW
    finally:
        await engine.dispose()


async def test_datetimes_shared_by_rows_or_equal_across_offsets_each_keep_their_own_text(
    tmp_path: Path,
) -> None:
    engine, fast = await _sqlite_events(tmp_path)
    # The same instant at another offset: SQLite's text keeps the local time, not UTC.
    elsewhere = NOW.astimezone(timezone(timedelta(hours=-5)))
    rows = [
        _event("shared1"),
        _event("shared2"),
        _event("offset", timestamp=elsewhere, created_at=elsewhere),
        _event("naive", timestamp=NOW.replace(tzinfo=None)),
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(
                events.insert(),
                [{**r, "transaction_id": f"ref-{r['transaction_id']}"} for r in rows],
            )
            await fast.execute(conn, [tuple(r.get(c) for c in COLUMNS) for r in rows])
            await BatchInsert(events, list(KEY)).execute(
                conn, [{**r, "transaction_id": f"batch-{r['transaction_id']}"} for r in rows]
            )
        async with engine.connect() as conn:
            raw = {
                r[0]: r[1:]
                for r in await conn.exec_driver_sql(
                    "SELECT transaction_id, timestamp, created_at FROM events"
                )
            }
    finally:
        await engine.dispose()
    for row in rows:
        tx = row["transaction_id"]
        assert raw[tx] == raw[f"ref-{tx}"] == raw[f"batch-{tx}"]
    assert raw["offset"] == ("2026-11-22 03:30:01.123456",) * 2
    assert raw["shared1"] == ("2026-11-22 08:30:01.123456",) * 2


async def test_sqlite_insert_returning_of_a_large_batch_joins_the_callers_transaction(
    tmp_path: Path,
) -> None:
    """A batch large enough for the savepoint path: all new, some stored before, and both
    inside a transaction that rolls back (the savepoint must not have committed anything)."""
    engine, fast = await _sqlite_events(tmp_path)
    assert PLAIN_FIRST <= 100

    def batch(first: int, count: int) -> list[tuple[Any, ...]]:
        return [
            tuple(_event(f"tx{i}").get(c) for c in COLUMNS) for i in range(first, first + count)
        ]

    async def stored() -> set[str]:
        async with engine.connect() as conn:
            return {r[0] for r in await conn.exec_driver_sql("SELECT transaction_id FROM events")}

    try:
        async with engine.begin() as conn:  # the insert is the transaction's first statement
            assert await fast.execute(conn, batch(0, 100)) == [
                ("sub_1", f"tx{i}") for i in range(100)
            ]
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await fast.execute(conn, batch(100, 50))
                raise RuntimeError("the caller fails after the insert")
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await conn.exec_driver_sql("DELETE FROM events WHERE transaction_id = 'tx0'")
                await fast.execute(conn, batch(90, 40))  # 10 stored before, 30 new
                raise RuntimeError("the caller fails after the insert")
        assert await stored() == {f"tx{i}" for i in range(100)}
        async with engine.begin() as conn:
            landed = await fast.execute(conn, batch(90, 40))
        assert landed == [("sub_1", f"tx{i}") for i in range(100, 130)]
        assert await stored() == {f"tx{i}" for i in range(130)}
    finally:
        await engine.dispose()


async def test_the_batched_writers_take_turns_on_sqlite_and_never_wait_on_postgres(
    engine: Any,
) -> None:
    from faregate.store.db import WriteConnection

    postgres = engine.dialect.name == "postgresql"
    writers = {"usage": WriteConnection(engine), "ledger": WriteConnection(engine)}
    entered = {name: asyncio.Event() for name in writers}
    order: list[str] = []

    async def writer(name: str) -> None:
        async with writers[name].transaction():
            order.append(f"{name} in")
            entered[name].set()
            if postgres:  # waits inside for the other: a lock between them would time out
                other = "ledger" if name == "usage" else "usage"
                await asyncio.wait_for(entered[other].wait(), 10)
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    try:
        await asyncio.gather(writer("usage"), writer("ledger"))
    finally:
        for each in writers.values():
            await each.close()
    if postgres:  # no lock: both enter at once
        assert sorted(order[:2]) == ["ledger in", "usage in"]
        return
    # One turn per engine: two writers' transactions one after the other.
    assert order == ["usage in", "usage out", "ledger in", "ledger out"]


def test_sqlite_binds_none_and_bools_as_before_through_the_registered_adapters() -> None:
    """store.db registers adapters for None and bool (skipping sqlite3's failed adapter
    lookups); the stored values are what sqlite3 stores without them: NULL and 0/1."""
    import sqlite3

    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    assert (bool, sqlite3.PrepareProtocol) in sqlite3.adapters
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b, c)")
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(None, True, False)] * 3)
    assert (
        db.execute("SELECT typeof(a), b, typeof(b), c, typeof(c) FROM t").fetchall()
        == [("null", 1, "integer", 0, "integer")] * 3
    )
    assert db.execute("SELECT count(*) FROM t WHERE a IS NULL AND b = 1 AND c = 0").fetchone() == (
        3,
    )


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 22, 8, 30, 1, 123456, tzinfo=UTC),
        datetime(2026, 11, 22, 8, 30, 1, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        datetime(2026, 11, 22, 8, 30, 1, 0, tzinfo=UTC),  # no fraction: isoformat's text
        datetime(2026, 11, 22, 8, 30, 1, 999999),  # naive
        datetime(1, 1, 1, 0, 0, 0, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_sqlite_datetime_text_is_the_local_time_as_isoformat_writes_it(value: datetime) -> None:
    from faregate.store.inserts import _sqlite_datetime

    process = _sqlite_datetime(lambda v: pytest.fail("only datetimes here"))
    assert process(value) == value.isoformat(" ", "microseconds")[:26]
