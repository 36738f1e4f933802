"""A batched writer's transactions on the kept connection: committed whole or not at all,
`then` only after a commit, the connection reused (on SQLite, shared by the writers), and a
broken one replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.conftest import create_pg_database, drop_pg_database

from faregate.store.db import WriteConnection, create_engine
from faregate.store.inserts import begun, on_thread


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "postgres":
        url = await create_pg_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (a INTEGER)"))
    yield engine
    await engine.dispose()
    if request.param == "postgres":
        await drop_pg_database(url)


async def _rows(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT a FROM t ORDER BY a"))).scalars())


async def _insert(conn: object, value: int, *, raw: bool) -> None:
    """A row through the driver on the connection's thread (as the writers' SQLite
    statements go), or through SQLAlchemy (as their other statements do)."""
    if raw:
        await on_thread(conn, lambda db: begun(db).execute(f"INSERT INTO t VALUES ({value})"))  # type: ignore[arg-type]
    else:
        await conn.execute(text(f"INSERT INTO t VALUES ({value})"))  # type: ignore[attr-defined]


async def _sqlite_engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (a INTEGER)"))
    return engine


async def _break_in_a_transaction(writes: WriteConnection) -> object:
    """A transaction whose driver connection is closed under it, so that it cannot be rolled
    back and is given up; returns that connection."""
    with pytest.raises(Exception):  # noqa: B017 - whatever the closed connection raises
        async with writes.transaction() as broken:
            await _insert(broken, 1, raw=True)
            raw = await broken.get_raw_connection()
            await raw.driver_connection.close()  # type: ignore[union-attr]
            raise RuntimeError("boom")
    return broken


@pytest.mark.parametrize("raw", [True, False], ids=["driver", "sqlalchemy"])
async def test_a_transaction_commits_then_runs_then(engine: AsyncEngine, raw: bool) -> None:
    if raw and engine.dialect.name != "sqlite":
        pytest.skip("statements on the connection's thread are SQLite's")
    writes = WriteConnection(engine)
    done: list[list[int]] = []
    async with writes.transaction(lambda: done.append([1])) as conn:
        await _insert(conn, 1, raw=raw)
        await _insert(conn, 2, raw=raw)
        assert done == []
    assert done == [[1]]
    assert await _rows(engine) == [1, 2]
    async with writes.transaction() as again:  # the same connection, a new transaction
        await _insert(again, 3, raw=raw)
    if engine.dialect.name == "sqlite":
        assert again is conn
    assert await _rows(engine) == [1, 2, 3]
    await writes.close()


@pytest.mark.parametrize("raw", [True, False], ids=["driver", "sqlalchemy"])
async def test_a_failed_transaction_is_rolled_back_and_then_not_run(
    engine: AsyncEngine, raw: bool
) -> None:
    if raw and engine.dialect.name != "sqlite":
        pytest.skip("statements on the connection's thread are SQLite's")
    writes = WriteConnection(engine)
    done: list[int] = []
    with pytest.raises(RuntimeError):
        async with writes.transaction(lambda: done.append(1)) as conn:
            await _insert(conn, 1, raw=raw)
            raise RuntimeError("boom")
    assert done == []
    assert await _rows(engine) == []
    async with writes.transaction() as conn:  # the write lock was given back
        await _insert(conn, 2, raw=raw)
    assert await _rows(engine) == [2]
    await writes.close()


async def test_a_connection_that_cannot_roll_back_is_replaced(tmp_path: Path) -> None:
    engine = await _sqlite_engine(tmp_path)
    writes = WriteConnection(engine)
    broken = await _break_in_a_transaction(writes)
    async with writes.transaction() as conn:
        assert conn is not broken
        await _insert(conn, 2, raw=True)
    assert await _rows(engine) == [2]
    await writes.close()
    await engine.dispose()


@pytest.mark.parametrize("raw", [True, False], ids=["driver", "sqlalchemy"])
async def test_a_commit_that_fails_is_rolled_back(tmp_path: Path, raw: bool) -> None:
    """A deferred constraint fails at the commit, after the block: the transaction is rolled
    back there, not left open for the next flush to join."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (a INTEGER)"))
        await conn.execute(text("CREATE TABLE p (id INTEGER PRIMARY KEY)"))
        await conn.execute(
            text("CREATE TABLE c (p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    writes = WriteConnection(engine)
    done: list[int] = []
    with pytest.raises(Exception, match="FOREIGN KEY"):
        async with writes.transaction(lambda: done.append(1)) as conn:
            await _insert(conn, 1, raw=raw)
            if raw:
                await on_thread(conn, lambda db: db.execute("INSERT INTO c VALUES (99)"))
            else:
                await conn.execute(text("INSERT INTO c VALUES (99)"))
    assert done == []
    async with writes.transaction() as conn:
        await _insert(conn, 2, raw=raw)
    assert await _rows(engine) == [2]
    await writes.close()
    await engine.dispose()


async def test_the_writers_share_one_connection_on_sqlite(tmp_path: Path) -> None:
    """Two writers on one SQLite engine take turns on one connection (so that neither finds
    its page cache emptied by the other's writes). A writer that closes closes it; a writer
    that flushes after that opens it again."""
    engine = await _sqlite_engine(tmp_path)
    usage, ledger = WriteConnection(engine), WriteConnection(engine)
    order: list[str] = []

    async def write(writes: WriteConnection, name: str, value: int) -> object:
        async with writes.transaction() as conn:
            order.append(f"{name} in")
            await _insert(conn, value, raw=True)
            await asyncio.sleep(0.01)  # the other writer is waiting for its turn meanwhile
            order.append(f"{name} out")
            return conn

    first, second = await asyncio.gather(write(usage, "usage", 1), write(ledger, "ledger", 2))
    assert first is second
    assert order == ["usage in", "usage out", "ledger in", "ledger out"]  # one at a time
    assert await _rows(engine) == [1, 2]

    async def close_while_ledger_writes() -> None:
        await asyncio.sleep(0.001)  # the ledger writer's transaction has begun
        await usage.close()

    order.clear()
    await asyncio.gather(write(ledger, "ledger", 3), close_while_ledger_writes())
    assert order == ["ledger in", "ledger out"]  # the close waited for its turn
    assert first.closed  # type: ignore[attr-defined]
    async with ledger.transaction() as conn:  # opened again for a late flush
        assert conn is not first
        await _insert(conn, 4, raw=True)
    await ledger.close()
    assert conn.closed
    await ledger.close()  # nothing left to close
    assert await _rows(engine) == [1, 2, 3, 4]
    await engine.dispose()


async def test_a_connection_one_writer_gave_up_is_replaced_for_the_other(tmp_path: Path) -> None:
    engine = await _sqlite_engine(tmp_path)
    usage, ledger = WriteConnection(engine), WriteConnection(engine)
    broken = await _break_in_a_transaction(usage)
    async with ledger.transaction() as conn:
        assert conn is not broken
        await _insert(conn, 2, raw=True)
    async with usage.transaction() as again:
        assert again is conn
    assert await _rows(engine) == [2]
    await usage.close()
    await ledger.close()
    await engine.dispose()
