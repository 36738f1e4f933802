"""A SQLite connection handed back to the pool is rolled back when, and only when, a
transaction is still open on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.store.db import create_engine
from faregate.store.inserts import on_thread


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (a INTEGER)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each rollback sent to aiosqlite's thread, with whether a transaction was open."""
    sent: list[bool] = []
    rollback = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        sent.append(self.in_transaction)
        await rollback(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    return sent


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_no_rollback_after_a_commit(engine: AsyncEngine, rollbacks: list[bool]) -> None:
    """A batched writer's flush: a transaction committed, then the connection handed back."""
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t VALUES (1)"))
    assert rollbacks == []
    assert await _count(engine) == 1


async def test_a_transaction_left_open_on_the_driver_is_rolled_back(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    """Work done on the connection's thread (`on_thread`) opens transactions SQLAlchemy does
    not know of: one still open when the connection goes back is rolled back, so its writes
    are gone and the write lock is free for the next writer."""
    async with engine.connect() as conn:
        await on_thread(conn, lambda db: db.execute("BEGIN IMMEDIATE"))
        await on_thread(conn, lambda db: db.execute("INSERT INTO t VALUES (2)"))
    assert rollbacks == [True]
    async with engine.begin() as conn:  # the lock is free: this would wait, then fail
        await conn.execute(text("INSERT INTO t VALUES (3)"))
    assert rollbacks == [True]
    assert await _count(engine) == 1


async def test_a_failed_transaction_is_rolled_back_once(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (4)"))
            raise RuntimeError("boom")
    assert rollbacks == [True]  # SQLAlchemy's own; the pool adds none
    assert await _count(engine) == 0
