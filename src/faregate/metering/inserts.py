"""Idempotent batch INSERTs for the usage writer, compiled once per column set.

Rows become driver tuples through the dialect's own bind processors, then go to the
driver's executemany: SQLAlchemy's per-row parameter handling was the writer's largest
cost. A column set this cannot compile plainly (defaults to fill in, RETURNING) takes
SQLAlchemy's ordinary path, so the result is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

Processor = Callable[[Any], Any]
Plan = tuple[str, Callable[[dict[str, Any]], Any], list[tuple[int, Processor]]]


def _default_sqlite_datetime(impl: Any) -> bool:
    return isinstance(impl, sqlite.DATETIME) and (
        impl._storage_format == sqlite.DATETIME._storage_format
    )


def _sqlite_datetime(fallback: Processor) -> Processor:
    """SQLite's default DATETIME text ("YYYY-MM-DD HH:MM:SS.ffffff", time zone dropped) as
    SQLAlchemy writes it, formatted from a tuple: several times cheaper than its mapping."""

    def process(value: Any) -> Any:
        if type(value) is datetime:
            return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
            )
        return fallback(value)

    return process


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
        processors = dict(compiled._bind_processors)
        for name in order:
            column = self._table.c.get(name)
            if column is not None and _default_sqlite_datetime(column.type.dialect_impl(dialect)):
                processors[name] = _sqlite_datetime(processors[name])
        return (
            compiled.string,
            itemgetter(*order),
            [(i, processors[name]) for i, name in enumerate(order) if processors.get(name)],
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
            sql, take, processors = plan
            params = []
            for row in group:
                values = list(take(row))
                for i, process in processors:
                    values[i] = process(values[i])
                params.append(tuple(values))
            await conn.exec_driver_sql(sql, params)
