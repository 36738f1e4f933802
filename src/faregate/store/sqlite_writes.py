"""The batched writers' transactions on SQLite: on the event loop's own thread, in steps
small enough to fit between requests.

A flush of the usage or ledger writer is some milliseconds of CPU on the core that serves
the requests. Through aiosqlite it was a dozen hand-overs between the event loop and the
connection's thread (each ~0.1-0.3 ms of CPU of its own), and the requests that came during
a flush waited for its pieces and for the GIL: at concurrency 1, the requests of a burst
every 0.2 s took 2-8 ms. In one uninterrupted call it would stall the loop for the whole
flush, which a client that keeps sending sees as every request it meant to send meanwhile
being late (wrk counts them so).

So the writers' SQLite work runs here, on a connection of their own (SQLAlchemy's
synchronous `pysqlite` engine on the same database file, with the same pragmas), as a
generator of small steps. Between steps that have taken `STEP_S` of the loop's time, the
transaction waits for a moment when the front has no request in flight (`enter`, `leave`),
so a request waits for at most one step. Under load there are no such moments: once
requests have been in flight without a break for `BUSY_S`, the writers take turns of the
loop with the requests instead, `BUSY_STEP_S` at a time, and keep up.

Transactions begin with `BEGIN IMMEDIATE` without waiting: when another connection holds
SQLite's write lock (an API write, a billing run), the writer sleeps and tries again, and
the loop goes on. The connection checkpoints no WAL pages at commit (that copy and its
fsync would stall the loop): a passive checkpoint runs on a worker thread once a second.
One transaction at a time uses the connection: every caller holds the engine's
`write_turn`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from faregate.store import db as store_db

# The loop's time a transaction takes between two waits for a quiet moment, and between two
# turns of the loop under load.
STEP_S = 0.000_25
BUSY_STEP_S = 0.002
# Requests in flight without a break for this long: the front is busy, the writers stop
# waiting for quiet moments.
BUSY_S = 0.05
CHECKPOINT_S = 1.0
_LOCK_RETRY_S = 0.005
_LOCK_WAIT_S = 10.0  # as the pooled connections' busy_timeout

Work = Callable[[Connection], Iterator[object]]


class SqliteWrites:
    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(
            make_url(url).set(drivername="sqlite"),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            json_serializer=store_db.json_dumps,
            json_deserializer=store_db.json_loads,
        )
        event.listen(self._engine, "connect", _pragmas)
        self._path = make_url(url).database or ""
        self._checkpointed = time.monotonic()
        self.in_flight = 0
        self._busy_since = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()

    # --- the front's requests ---------------------------------------------------------

    def enter(self) -> None:
        if not self.in_flight:
            self._busy_since = time.monotonic()
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            while self._waiting:  # one step a moment: two in one gap would add up
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return

    async def _turn(self) -> float:
        """Return at a moment with no request in flight, or after a turn of the loop once
        the front is busy; the loop's time the next step may take."""
        # A turn of the loop first, always: a request that arrived meanwhile is taken in.
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        while self.in_flight:
            left = BUSY_S - (time.monotonic() - self._busy_since)
            if left <= 0:
                return BUSY_STEP_S
            waiter = loop.create_future()
            self._waiting.append(waiter)
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        return STEP_S

    # --- transactions -----------------------------------------------------------------

    async def run(self, work: Work) -> None:
        """`work(conn)`'s steps in one transaction, committed after the last. The caller
        holds the engine's `write_turn`."""
        with self._engine.connect() as conn:
            db: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
            await _begin(db)
            try:
                until = time.perf_counter() + STEP_S
                for _ in work(conn):
                    if time.perf_counter() >= until:
                        until = time.perf_counter() + await self._turn()
                db.commit()
            except BaseException:
                db.rollback()
                raise
        now = time.monotonic()
        if now - self._checkpointed >= CHECKPOINT_S:
            self._checkpointed = now
            await asyncio.to_thread(_checkpoint, self._path)

    def close(self) -> None:
        self._engine.dispose()


async def _begin(db: sqlite3.Connection) -> None:
    waited = 0.0
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or waited >= _LOCK_WAIT_S:
                raise
        await asyncio.sleep(_LOCK_RETRY_S)
        waited += _LOCK_RETRY_S


def _checkpoint(path: str) -> None:
    """A passive checkpoint, on a connection of its own: it copies what it can of the WAL
    into the database without waiting for, or blocking, any writer."""
    db = sqlite3.connect(path, timeout=0)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _pragmas(dbapi_connection: Any, record: Any) -> None:
    store_db.sqlite_pragmas(dbapi_connection, record)
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


_WRITES: weakref.WeakKeyDictionary[AsyncEngine, SqliteWrites] = weakref.WeakKeyDictionary()


def sqlite_writes(engine: AsyncEngine) -> SqliteWrites | None:
    """The engine's SqliteWrites; None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    writes = _WRITES.get(engine)
    if writes is None:
        url = engine.url
        if url.database in (None, "", ":memory:"):
            raise ValueError("the embedded database must be a file, not in memory")
        writes = _WRITES[engine] = SqliteWrites(url.render_as_string(hide_password=False))
        weakref.finalize(engine, writes.close)
    return writes
