"""Inserting usage events idempotently, returning the ones that were new.

PostgreSQL: binary COPY straight into `events` under a savepoint; when a batch holds an event
already stored (a client's retry, a replayed journal), COPY into a session-local staging table
and `INSERT ... ON CONFLICT DO NOTHING RETURNING` instead. SQLite: multi-row INSERTs with
ON CONFLICT DO NOTHING RETURNING, in chunks of a few fixed sizes, bound without SQLAlchemy's
per-row parameter handling (store.inserts). Either way the caller learns exactly which rows
landed, so rollups count each stored event once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.store.inserts import SqliteInsertReturning
from faregate.store.tables.metering import events

COLUMNS = (
    "transaction_id",
    "external_subscription_id",
    "external_customer_id",
    "code",
    "timestamp",
    "properties",
    "precise_total_amount_cents",
    "source",
    "created_at",
)
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS events_incoming "
    "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_KEY = ("external_subscription_id", "transaction_id")
_SQLITE_INSERT = SqliteInsertReturning(events, COLUMNS, conflict=_KEY, returning=_KEY)
_FROM_STAGING = (
    f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM events_incoming ORDER BY id "
    "ON CONFLICT (external_subscription_id, transaction_id) DO NOTHING "
    "RETURNING external_subscription_id, transaction_id"
)


def first_of_each(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of an (external_subscription_id, transaction_id) within one batch."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (row["external_subscription_id"], row["transaction_id"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


async def insert_new(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the events; return those that were not stored before, in the given order.
    Runs in the caller's (already begun) transaction."""
    rows = first_of_each(rows)
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return await _insert_postgres(conn, rows)
    return await _insert_sqlite(conn, rows)


async def stored_rows(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (external_subscription_id, transaction_id) are stored rows."""
    by_subscription: dict[str, list[str]] = {}
    for subscription, transaction_id in keys:
        by_subscription.setdefault(subscription, []).append(transaction_id)
    found: set[tuple[str, str]] = set()
    for subscription, ids in by_subscription.items():
        ids.sort()
        for start in range(0, len(ids), 500):
            rows = await conn.execute(
                select(events.c.transaction_id).where(
                    events.c.external_subscription_id == subscription,
                    events.c.transaction_id.in_(ids[start : start + 500]),
                )
            )
            found.update((subscription, r[0]) for r in rows)
    return found


def _json_text(properties: dict[str, Any]) -> str:
    return orjson.dumps(properties, default=str).decode()


def _as_is(properties: dict[str, Any]) -> dict[str, Any]:
    return properties


def _record(
    row: dict[str, Any], now: datetime, properties: Callable[[dict[str, Any]], Any] = _json_text
) -> tuple[Any, ...]:
    """The row in COLUMNS order; `properties` encodes the JSON column (asyncpg's COPY takes
    text, SQLite's bind processor serializes the dict itself)."""
    return (
        row["transaction_id"],
        row["external_subscription_id"],
        row.get("external_customer_id"),
        row["code"],
        row["timestamp"],
        properties(row.get("properties") or {}),
        row.get("precise_total_amount_cents"),
        row.get("source") or "gateway",
        row.get("created_at") or now,
    )


async def _insert_postgres(
    conn: AsyncConnection, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    raw = await conn.get_raw_connection()
    pg: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    now = datetime.now(UTC)
    records = [_record(r, now) for r in rows]
    await pg.execute("SAVEPOINT fg_events")
    try:
        await pg.copy_records_to_table("events", records=records, columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        await pg.execute("ROLLBACK TO SAVEPOINT fg_events")
    else:
        await pg.execute("RELEASE SAVEPOINT fg_events")
        return rows
    await pg.execute(_STAGING)
    await pg.copy_records_to_table("events_incoming", records=records, columns=COLUMNS)
    landed = {(r[0], r[1]) for r in await pg.fetch(_FROM_STAGING)}
    return [r for r in rows if (r["external_subscription_id"], r["transaction_id"]) in landed]


async def _insert_sqlite(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    records = [_record(r, now, _as_is) for r in rows]
    landed = set(await _SQLITE_INSERT.execute(conn, records))
    if len(landed) == len(rows):  # the usual batch, all new (rows hold no repeated key)
        return rows
    return [r for r in rows if (r["external_subscription_id"], r["transaction_id"]) in landed]
