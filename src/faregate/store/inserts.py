"""Idempotent batch INSERTs for the batched writers (usage records and events, wallet ledger
entries), compiled once per column set.

Rows become driver tuples through the dialect's own bind processors, then go to the
driver's executemany (PostgreSQL) or to multi-row statements of a few fixed sizes (SQLite):
SQLAlchemy's per-row parameter handling was the writer's largest cost. A column set this
cannot compile plainly (defaults to fill in, RETURNING) takes SQLAlchemy's ordinary path,
so the result is the same either way.

On SQLite two more things count as much as the binding:

- Steps: `sqlite3` lets go of the GIL around every step of SQLite's engine, and each step
  (a row of executemany, a row of RETURNING) is a hand-over of the GIL between the
  connection's thread and the event loop. A multi-row INSERT is one step per chunk.
- Round trips: each statement sent to aiosqlite's thread resumes the writer only at the
  event loop's next turn, and under load a turn serves dozens of requests. With a round trip
  per chunk, a flush took seconds and the writers fell tens of thousands of requests behind.
  So the chunks are bound on the event loop (yielding to it between chunks) and then run
  together, in one call on the connection's thread (`on_thread`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from faregate.store.chunks import fixed_size_chunks

Processor = Callable[[Any], Any]
# A column's position in the row, its bind processor, and whether its values are formatted
# once per object (see `_bind`).
Binder = tuple[int, Processor, bool]
# The executemany SQL (or, on SQLite, the multi-row statements), the row's values in
# column order, and the binders.
Plan = tuple["str | _Values", Callable[[dict[str, Any]], Any], list[Binder]]
# Multi-row statements with this many rows or more first try the statement without RETURNING
# (SqliteInsertReturning).
PLAIN_FIRST = 16
# The row counts of SQLite's multi-row statements: 128 rows of 35 columns stay far below
# SQLite's 32,766 parameters and are bound in about half a millisecond.
SQLITE_CHUNKS = (128, 32, 8, 1)
BIND_YIELDS = 4
T = TypeVar("T")
# Statements of one chunk each: its row count and its parameters, flat.
Chunks = list[tuple[int, tuple[Any, ...]]]


def _default_sqlite_datetime(impl: Any) -> bool:
    return isinstance(impl, sqlite.DATETIME) and (
        impl._storage_format == sqlite.DATETIME._storage_format
    )


def _sqlite_datetime(fallback: Processor) -> Processor:
    """SQLite's default DATETIME text ("YYYY-MM-DD HH:MM:SS.ffffff", time zone dropped, not
    converted) as SQLAlchemy writes it: several times cheaper than SQLAlchemy's mapping. The
    first 26 characters of an RFC 3339 text are the local time whatever the offset (years
    always have four digits), which spares a `replace(tzinfo=None)` copy. orjson writes that
    text 2.6x faster than `datetime.isoformat` (whose C formatting goes through sprintf
    field by field), but leaves out a zero fraction: those go to `isoformat`."""

    def process(value: Any) -> Any:
        if type(value) is datetime:
            if value.microsecond:
                return orjson.dumps(value)[1:27].decode().replace("T", " ")
            return value.isoformat(" ", "microseconds")[:26]
        return fallback(value)

    return process


def _binders(table: Table, dialect: Dialect, compiled: Any, names: Sequence[str]) -> list[Binder]:
    """The dialect's bind processor of each column that has one, SQLite's default DATETIME
    one swapped for the equivalent formatter (and formatted once per object)."""
    processors = dict(compiled)
    binders = []
    for i, name in enumerate(names):
        process = processors.get(name)
        if process is None:
            continue
        column = table.c.get(name)
        by_object = column is not None and _default_sqlite_datetime(
            column.type.dialect_impl(dialect)
        )
        binders.append((i, _sqlite_datetime(process) if by_object else process, by_object))
    return binders


def _bind(rows: Iterable[Sequence[Any]], binders: Sequence[Binder]) -> list[list[Any]]:
    """Each row's values through its columns' bind processors.

    Formatting a datetime costs microseconds, and most datetimes of a batch are one object
    seen many times (a request's created_at is its events' timestamp and created_at too; a
    batch's `now`): those are formatted once per object. The memo is keyed by `id`, which is
    sound because the caller's rows keep every value alive until this returns."""
    texts: dict[int, Any] = {}
    bound = []
    for row in rows:
        values = list(row)
        for i, process, by_object in binders:
            value = values[i]
            if by_object:
                text = texts.get(id(value))
                if text is None:
                    text = texts[id(value)] = process(value)
                values[i] = text
            else:
                values[i] = process(value)
        bound.append(values)
    return bound


def driver_statement(
    statement: Any, table: Table, dialect: Dialect
) -> tuple[str, Callable[[Iterable[Mapping[str, Any]]], list[tuple[Any, ...]]]]:
    """A statement of named parameters (an UPDATE, say) as the driver's text, and what binds
    rows of those parameters for it, through the dialect's processors as `BatchInsert`
    binds its rows: for running it on the connection's thread (`on_thread`)."""
    compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup
    assert order is not None
    binders = _binders(table, dialect, compiled._bind_processors, order)

    def bind(rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        values = ([row[name] for name in order] for row in rows)
        return [tuple(bound) for bound in _bind(values, binders)]

    return compiled.string, bind


class BatchInsert:
    """`INSERT ... ON CONFLICT DO NOTHING` of many rows (dicts keyed by column)."""

    def __init__(self, table: Table, conflict: Sequence[str] | None = None) -> None:
        self._table = table
        self._conflict = list(conflict) if conflict else None
        self._plans: dict[tuple[str, tuple[str, ...]], Plan | None] = {}

    def statement(self, dialect_name: str) -> Insert:
        module = postgresql if dialect_name == "postgresql" else sqlite
        insert = module.insert(self._table)
        if self._conflict:
            return insert.on_conflict_do_nothing(index_elements=self._conflict)
        return insert.on_conflict_do_nothing()

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> Plan | None:
        compiled = self.statement(dialect.name).compile(
            dialect=dialect, column_keys=list(keys), for_executemany=True
        )
        order = compiled.positiontup
        if (
            order is None
            or len(order) < 2
            or sorted(order) != sorted(keys)
            or compiled.effective_returning
        ):
            return None
        sql: str | _Values = compiled.string
        if dialect.name == "sqlite":
            conflict = f" ({', '.join(map(_quote, self._conflict))})" if self._conflict else ""
            sql = _Values(self._table.name, order, f" ON CONFLICT{conflict} DO NOTHING")
        return (
            sql,
            itemgetter(*order),
            _binders(self._table, dialect, compiled._bind_processors, order),
        )

    async def execute(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        dialect = conn.dialect
        for keys, group in groups.items():
            cache_key = (dialect.name, keys)
            if cache_key not in self._plans:
                self._plans[cache_key] = self._plan(dialect, keys)
            plan = self._plans[cache_key]
            if plan is None:
                await conn.execute(self.statement(dialect.name), group)
                continue
            sql, take, binders = plan
            if isinstance(sql, _Values):
                await sql.insert(conn, [take(row) for row in group], binders)
            else:
                bound = _bind(map(take, group), binders)
                await conn.exec_driver_sql(sql, [tuple(values) for values in bound])


class _Values:
    """`INSERT INTO t (columns) VALUES (...), (...) <tail>` on SQLite, one text per row
    count, in chunks of a few fixed sizes (few statement shapes for the driver's statement
    cache)."""

    def __init__(self, table: str, columns: Sequence[str], tail: str) -> None:
        self.width = len(columns)
        self._head = f"INSERT INTO {table} ({', '.join(map(_quote, columns))}) VALUES "
        self._group = "(" + ", ".join("?" * self.width) + ")"
        self._tail = tail
        self._texts: dict[int, str] = {}

    def text(self, rows: int) -> str:
        sql = self._texts.get(rows)
        if sql is None:
            sql = self._texts[rows] = self._head + ", ".join([self._group] * rows) + self._tail
        return sql

    def run(self, db: sqlite3.Connection, chunks: Chunks) -> int:
        """On the connection's thread: every chunk; the rows inserted (a conflict skips)."""
        return sum(db.execute(self.text(count), params).rowcount for count, params in chunks)

    async def insert(
        self, conn: AsyncConnection, rows: Sequence[Sequence[Any]], binders: Sequence[Binder]
    ) -> int:
        chunks, _ = await _bind_chunks(rows, binders)
        return await on_thread(conn, lambda db: self.run(begun(db), chunks))


async def _bind_chunks(
    rows: Sequence[Sequence[Any]], binders: Sequence[Binder]
) -> tuple[Chunks, list[list[Any]]]:
    """The rows bound, in chunks, and all of them bound in order.

    Yields to the event loop between chunks, at most `BIND_YIELDS` times: under load each
    yield waits for a whole turn of the loop (dozens of requests), so a number of yields
    that grew with the batch would let the writer fall behind for good. Light traffic
    gives small batches, and so small pieces of binding between yields."""
    parts = list(fixed_size_chunks(rows, SQLITE_CHUNKS))
    per_yield = -(-len(parts) // BIND_YIELDS)
    chunks: Chunks = []
    every: list[list[Any]] = []
    for i, chunk in enumerate(parts):
        if i and i % per_yield == 0:
            await asyncio.sleep(0)
        bound = _bind(chunk, binders)
        chunks.append((len(bound), tuple(chain.from_iterable(bound))))
        every += bound
    return chunks, every


async def on_thread(conn: AsyncConnection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` run on the aiosqlite connection's own thread with its `sqlite3` connection, in
    the caller's transaction: many statements for one hand-over, not one each. A connection
    that holds its driver connection hands it over as it is; `get_raw_connection` is for
    one that has to get it again (a greenlet started for nothing, else)."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        raw: Any = sync.connection
    else:
        raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    return await driver._execute(lambda: work(driver._conn))  # type: ignore[no-any-return]


def begun(db: sqlite3.Connection) -> sqlite3.Connection:
    """The connection with its transaction begun: a savepoint outside one would commit on
    release, and the first write of a flush takes the write lock anyway."""
    if not db.in_transaction:
        db.execute("BEGIN IMMEDIATE")
    return db


class SqliteInsertReturning:
    """`INSERT ... ON CONFLICT DO NOTHING` of many rows on SQLite that returns the
    `returning` columns of the rows that landed. Rows are tuples in `columns` order, bound
    through the dialect's own processors as SQLAlchemy would bind them, at about a fifth of
    the CPU of SQLAlchemy's insertmanyvalues path.

    A batch of `PLAIN_FIRST` rows or more is inserted under a savepoint without RETURNING
    (one step per chunk, not one per row); when every row landed, which is the usual batch,
    the rows are the answer. When some did not, the savepoint is rolled back and the batch
    inserted again with RETURNING, which names the rows that landed. The savepoint needs a
    transaction around it: one is begun here when no statement has begun it yet."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        conflict: Sequence[str],
        returning: Sequence[str],
    ) -> None:
        self._table = table
        self._columns = tuple(columns)
        skip = f" ON CONFLICT ({', '.join(map(_quote, conflict))}) DO NOTHING"
        self._plain = _Values(table.name, self._columns, skip)
        self._returning = _Values(
            table.name, self._columns, f"{skip} RETURNING {', '.join(map(_quote, returning))}"
        )
        self._take = itemgetter(*(self._columns.index(c) for c in returning))
        self._single = len(returning) == 1
        self._bind: list[Binder] | None = None

    def _binders(self, dialect: Dialect) -> list[Binder]:
        if self._bind is None:
            compiled = sqlite.insert(self._table).compile(
                dialect=dialect, column_keys=list(self._columns)
            )
            self._bind = _binders(self._table, dialect, compiled._bind_processors, self._columns)
        return self._bind

    async def execute(
        self, conn: AsyncConnection, rows: Sequence[Sequence[Any]]
    ) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        chunks, bound = await _bind_chunks(rows, self._binders(conn.dialect))
        landed = await on_thread(conn, lambda db: self._run(begun(db), chunks, len(rows)))
        if landed is not None:
            return landed
        if self._single:
            return [(self._take(values),) for values in bound]
        return [self._take(values) for values in bound]

    def _run(
        self, db: sqlite3.Connection, chunks: Chunks, count: int
    ) -> list[tuple[Any, ...]] | None:
        """On the connection's thread: None when every row landed, else the returned rows."""
        if count >= PLAIN_FIRST:
            db.execute("SAVEPOINT fg_rows")
            if self._plain.run(db, chunks) == count:
                db.execute("RELEASE fg_rows")
                return None
            db.execute("ROLLBACK TO fg_rows")
            db.execute("RELEASE fg_rows")
        landed: list[tuple[Any, ...]] = []
        for rows, params in chunks:
            landed += map(tuple, db.execute(self._returning.text(rows), params))
        return landed


def _quote(name: str) -> str:
    return f'"{name}"'
