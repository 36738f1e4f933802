"""Database engine for SQLite (embedded default, WAL) and PostgreSQL (asyncpg), and the
`migrate` entry point. Repositories receive the engine; nothing else opens connections."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from faregate import inflight
from faregate.inflight import InFlight
from faregate.store.inserts import on_thread

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL, synced at checkpoints; and temporary storage in memory. The batched writers'
    multi-row inserts and savepoints keep statement journals (the pages a statement
    changed, as they were before it) that outgrow SQLite's 64 KiB spill limit; on disk
    they were three `pwrite` calls per request, more than the WAL's own."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


# `sqlite3` binds int, float, str and bytearray values directly. Any other value, None and
# bools included, first goes through its adapter protocol: a lookup in the registered
# adapters and, when none is registered, two attribute lookups (`__adapt__`, `__conform__`)
# that each fail with a formatted AttributeError before the value is bound as it is. The
# batched writers bind dozens of NULLs and bools per request, and those failed lookups were
# ~2.8% of a request's instructions (`bench/pipeline.py --instructions`). Registered
# adapters that return what the default binding stores (NULL, 0/1) skip them. Process-wide:
# every sqlite3 connection of the process binds these values the same as before, faster.
sqlite3.register_adapter(type(None), {}.get)  # {}.get(None) is None: a C-level identity
sqlite3.register_adapter(bool, int)


def _sqlite_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    """A SQLite connection back in the pool is rolled back only if a transaction is open on
    it. SQLAlchemy's own reset rolls back every connection it is handed back, and through
    aiosqlite each rollback is a trip to the connection's thread and back (~45 µs of CPU
    here), one per read and one per batched writer's flush, most of them after a commit.
    Whether a transaction is open is read off the `sqlite3` connection, without the trip."""
    if state.terminate_only or not state.asyncio_safe:
        return  # discarded, or out of reach of the event loop: SQLAlchemy's own rules
    try:
        open_transaction = record.driver_connection.in_transaction  # aiosqlite's
    except (AttributeError, ValueError):  # closed
        return
    if open_transaction:
        dbapi_connection.rollback()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """JSON columns go through orjson: the batched writer serializes every event's
    properties, and the standard library's encoder was a visible share of its CPU."""
    json = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_reset_on_return=None, **json)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _sqlite_reset)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **json
    )


def default_flush_s(engine: AsyncEngine) -> float:
    """The batched writers' default flush interval. On SQLite the writes run in the serving
    process, on the core its requests use, and a flush's CPU delays the requests in flight
    while it runs: small flushes, 20 a second, keep each such delay short (the c = 1 tail
    in bench/HISTORY.md), and twice as many at light load (`FlushClock`). On PostgreSQL the
    database does the work in its own process and each flush is a round trip to it: 5 a
    second."""
    return 0.05 if engine.dialect.name == "sqlite" else 0.2


# At light load on SQLite, the share of the interval a writer waits between flushes.
LIGHT_SHARE = 0.5


class FlushClock:
    """A batched writer's beat (`next_beat`): every `interval` seconds under load; on SQLite,
    every `interval * LIGHT_SHARE` while the serving loop has lulls (moments with no request
    in flight, `faregate.inflight`) between one flush and the next.

    A flush costs a fixed ~1.3 ms of CPU (both writers, seven trips to SQLite's thread, a
    commit, a journal segment sealed) and ~19 µs a request. At light load each request
    meets the writes alone, and how long a flush holds the core is what the unlucky ones
    wait: half the batch, half the wait (at c = 1, wrk's p99 0.2-0.4 ms lower in six pairs
    of runs out of six: bench/HISTORY.md, "Half the flush interval at light load"). Under
    load the requests queue anyway and the fixed cost is what counts: twice the flushes
    would add ~2.5% to a request's CPU at c = 32, so the interval stays."""

    __slots__ = ("_by_load", "_count", "_idle", "_lulls_seen", "interval", "phase")

    def __init__(self, engine: AsyncEngine, interval: float, phase: float = 0.0) -> None:
        self.interval = interval
        self.phase = phase
        self._by_load = engine.dialect.name == "sqlite"  # PostgreSQL: the interval as it is
        self._count: InFlight | None = None  # the writer's loop's, once it runs
        self._lulls_seen = 0
        self._idle = True  # at the last call: a lull, for the interval that followed

    def current(self) -> float:
        """The interval to the next flush: light if a lull came since the last call."""
        if not self._by_load:
            return self.interval
        count = self._count
        if count is None:
            count = self._count = inflight.of_loop(asyncio.get_running_loop())
        idle = not count.requests
        light = idle or self._idle or count.lulls != self._lulls_seen
        self._lulls_seen, self._idle = count.lulls, idle
        return self.interval * LIGHT_SHARE if light else self.interval

    async def next(self, wake: asyncio.Event, *, arrived: asyncio.Event) -> None:
        await next_beat(wake, self.current(), self.phase, arrived=arrived)


async def next_beat(
    wake: asyncio.Event, interval: float, phase: float = 0.0, *, arrived: asyncio.Event
) -> None:
    """Wait for a batched writer's next flush: once `arrived` is set (the writer has
    something to write: an idle writer does not wake 20 times a second for nothing), the
    next beat of a fixed clock, one every `interval` seconds offset by `phase` of an
    interval, or at once when `wake` is set (a batch full).

    On a clock rather than `interval` after the last flush ended, so two writers keep the
    offset they were given instead of drifting by their flushes' own times: the usage
    writer flushes on the beat and the ledger writer half an interval later, so a request
    meets one writer's flush at most, not the two back to back (they take turns on
    SQLite's write lock). A flush that overran waits for the beat after it."""
    await arrived.wait()
    arrived.clear()
    loop = asyncio.get_running_loop()
    now = loop.time()
    offset = phase * interval
    due = (math.floor((now - offset) / interval) + 1) * interval + offset
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), due - now)
    wake.clear()


def _commit_open(db: sqlite3.Connection, then: Callable[[], None] | None = None) -> None:
    if db.in_transaction:
        db.commit()
    if then is not None:
        then()


def _rollback_open(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.rollback()


class _Writes:
    """What an SQLite engine's batched writers share: the connection they write on (`conn`,
    None until a transaction opens it and again once a writer closes it or gives it up), and
    `turn`, held around each transaction, so this process's writers take turns on the
    database's one write lock here instead of inside SQLite. SQLite answers a writer that
    finds the lock taken with sleeps of up to 100 ms, not with a wake-up when it is free:
    under load the usage and ledger writers waited on each other that way until their
    backlog was tens of thousands of requests. An asyncio lock hands the turn over the
    moment the other transaction ends. PostgreSQL needs no turn."""

    __slots__ = ("conn", "turn")

    def __init__(self) -> None:
        self.turn = asyncio.Lock()
        self.conn: Any = None  # AsyncConnection


_WRITES: weakref.WeakKeyDictionary[AsyncEngine, _Writes] = weakref.WeakKeyDictionary()


def _writes_of(engine: AsyncEngine) -> _Writes:
    writes = _WRITES.get(engine)
    if writes is None:
        writes = _WRITES[engine] = _Writes()
    return writes


class WriteConnection:
    """A batched writer's transactions: on SQLite, on one connection that the process's
    batched writers share, kept open from one flush to the next, each transaction in its
    turn on the write lock (`_Writes`); on PostgreSQL, a pooled connection per
    transaction (`engine.begin()`).

    A flush's fixed cost on SQLite was mostly SQLAlchemy's work around the statements, not
    the statements: checking a connection out of the pool, beginning, committing and handing
    it back took ~0.35 ms of the event loop's CPU per flush here, as much as inserting a
    request's rows, and 20 flushes a second per writer pay it (bench/HISTORY.md, "A
    writer's own connection"). On the kept connection a transaction is begun by its first
    statement (the writers' statements on the connection's thread begin it with
    `inserts.begun`; SQLAlchemy's own autobegin) and committed in one trip to the
    connection's thread, with the blocking work that was to follow the commit (`then`: a
    journal segment recycled) in the same trip. A transaction that fails is rolled back,
    and a connection that cannot be rolled back is closed, so the next transaction opens a
    new one.

    Shared, not one per writer: SQLite empties a connection's page cache whenever another
    connection has written since its last transaction, so with a connection each, the usage
    and ledger writers, taking turns, each began every flush with an empty cache and read
    the pages it was to change again (a `pread` each, ~1.2 a request). On one connection
    the cache stays warm from one turn to the next: a third of the reads, and ~9% less of
    SQLite's CPU (bench/HISTORY.md, "Around the fifth full run of 2026-12-06"). A writer that
    closes closes it, in its turn: a writer still flushing after that opens it again."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._kept = _writes_of(engine) if engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def transaction(
        self, then: Callable[[], None] | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction committed when the block ends, rolled back if it raises; `then` is
        called once the commit returned (not after a rollback)."""
        kept = self._kept
        if kept is None:
            async with self._engine.begin() as conn:
                yield conn
            if then is not None:
                await asyncio.to_thread(then)
            return
        async with kept.turn:
            conn = kept.conn
            if conn is None:
                conn = kept.conn = await self._engine.connect()
            try:
                yield conn
                if conn.in_transaction():  # SQLAlchemy began it; its commit is the driver's
                    await conn.commit()
                    if then is not None:
                        await asyncio.to_thread(then)
                else:
                    await on_thread(conn, functools.partial(_commit_open, then=then))
            except BaseException:  # the block's error, or the commit's
                await asyncio.shield(self._rollback(kept, conn))
                raise

    @staticmethod
    async def _rollback(kept: _Writes, conn: AsyncConnection) -> None:
        """Roll back what is open; a connection that cannot is given up, for every writer
        (the caller raises the error that made it roll back)."""
        try:
            if conn.get_transaction() is not None:  # SQLAlchemy's, active or failed
                await conn.rollback()
            # And the driver's: after a failed commit SQLAlchemy only forgets its own.
            await on_thread(conn, _rollback_open)
        except Exception:
            if kept.conn is conn:
                kept.conn = None
            with contextlib.suppress(Exception):
                await conn.invalidate()

    async def close(self) -> None:
        """Close the kept connection, in its turn (no other writer's transaction is cut
        short)."""
        kept = self._kept
        if kept is None:
            return
        async with kept.turn:
            conn, kept.conn = kept.conn, None
            if conn is not None:
                await conn.close()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "heads") -> None:
    """Bring the database schema to `revision` with Alembic (synchronous; run before serving)."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)
