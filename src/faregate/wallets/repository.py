"""Wallet storage: wallets and ledger entries (their transactions: wallets.transaction_rows).
Queries only; the
services decide. Entries are inserted idempotently (first key wins) and every inserted entry
moves the wallet row's cached sums in the same transaction, so the row always equals the sum
of the stored entries."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    String,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.store.chunks import fixed_size_chunks, slice_size
from faregate.store.inserts import SqliteInsertReturning, begun, driver_statement, on_thread
from faregate.store.tables.wallets import wallet_entries, wallets
from faregate.wallets import ledger
from faregate.wallets.ledger import Balances, Entry


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


async def _one(conn: AsyncConnection, query: Any) -> dict[str, Any] | None:
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


# --- wallets ------------------------------------------------------------------------------


def _wallet_row(values: dict[str, Any]) -> dict[str, Any]:
    stamp = now()
    return {
        "id": new_id(),
        "created_at": stamp,
        "updated_at": stamp,
        "status": "active",
        "funded_nanos": 0,
        "funded_version": 0,
        "consumed_nanos": 0,
        "held_nanos": 0,
        "recurring_transaction_rules": [],
        "metadata": {},
        "priority": 50,
        **values,
    }


async def insert_wallet(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    row = _wallet_row(values)
    await conn.execute(wallets.insert().values(**row))
    return row


async def insert_wallet_if_absent(
    conn: AsyncConnection, values: dict[str, Any]
) -> dict[str, Any] | None:
    """Insert a wallet unless a unique index refuses it (None then; a concurrent insert is
    waited for, so its row is committed and visible to the next statement)."""
    row = _wallet_row(values)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    result = await conn.execute(dialect.insert(wallets).values(**row).on_conflict_do_nothing())
    return row if result.rowcount == 1 else None


async def active_wallet_by_code(
    conn: AsyncConnection, external_customer_id: str, code: str
) -> dict[str, Any] | None:
    query = select(wallets).where(
        wallets.c.external_customer_id == external_customer_id,
        wallets.c.code == code,
        wallets.c.status == "active",
    )
    return await _one(conn, query)


async def code_taken(
    conn: AsyncConnection, customer_id: str, code: str, *, other_than: str | None = None
) -> bool:
    """Whether an active wallet of this customer (other than `other_than`) has this code."""
    query = select(wallets.c.id).where(
        wallets.c.customer_id == customer_id,
        wallets.c.code == code,
        wallets.c.status == "active",
    )
    if other_than is not None:
        query = query.where(wallets.c.id != other_than)
    return (await conn.execute(query.limit(1))).first() is not None


async def wallet_by_code(
    conn: AsyncConnection, customer_id: str, code: str
) -> dict[str, Any] | None:
    """A customer's wallet by code: its active one, else its latest terminated one (a
    terminated wallet's code may have been taken again, as in Lago)."""
    query = (
        select(wallets)
        .where(wallets.c.customer_id == customer_id, wallets.c.code == code)
        .order_by((wallets.c.status == "active").desc(), wallets.c.created_at.desc())
        .limit(1)
    )
    return await _one(conn, query)


async def update_wallet(conn: AsyncConnection, wallet_id: str, values: dict[str, Any]) -> None:
    await conn.execute(
        update(wallets).where(wallets.c.id == wallet_id).values(**values, updated_at=now())
    )


async def terminate_wallet(conn: AsyncConnection, wallet_id: str, at: datetime) -> bool:
    """Mark an active wallet terminated; False when it was not active (or does not exist)."""
    result = await conn.execute(
        update(wallets)
        .where(wallets.c.id == wallet_id, wallets.c.status == "active")
        .values(status="terminated", terminated_at=at, updated_at=at)
    )
    return bool(result.rowcount == 1)


async def wallet_by_id(
    conn: AsyncConnection, wallet_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    query = select(wallets).where(wallets.c.id == wallet_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return await _one(conn, query)


async def wallets_of_customer(
    conn: AsyncConnection, external_customer_id: str, *, active_only: bool = False
) -> list[dict[str, Any]]:
    query = select(wallets).where(wallets.c.external_customer_id == external_customer_id)
    if active_only:
        query = query.where(wallets.c.status == "active")
    query = query.order_by(wallets.c.priority, wallets.c.created_at)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def list_wallets(
    conn: AsyncConnection,
    external_customer_id: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = select(wallets).order_by(wallets.c.created_at, wallets.c.id)
    if external_customer_id:
        query = query.where(wallets.c.external_customer_id == external_customer_id)
    query = query.limit(limit).offset(offset)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def count_wallets(conn: AsyncConnection, external_customer_id: str | None = None) -> int:
    query = select(func.count()).select_from(wallets)
    if external_customer_id:
        query = query.where(wallets.c.external_customer_id == external_customer_id)
    return int((await conn.execute(query)).scalar_one())


async def active_wallets(conn: AsyncConnection) -> list[dict[str, Any]]:
    query = select(wallets).where(wallets.c.status == "active")
    return [dict(r) for r in (await conn.execute(query)).mappings()]


# --- ledger -------------------------------------------------------------------------------


# Entries prepared and inserted at a time on SQLite (one call on the connection's thread
# each), or more for a large batch (store.chunks.slice_size).
_SLICE = 512
# PostgreSQL batches of this many entries or more go in by COPY (`_copy_entries`).
_COPY_FROM = 16
_ENTRY_COLUMNS = ", ".join(f'"{c}"' for c in ledger.COLUMNS)
_KEY_AT = ledger.COLUMNS.index("key")
_ENTRIES_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS entries_incoming "
    "(LIKE wallet_entries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_ENTRIES_FROM_STAGING = (
    f"INSERT INTO wallet_entries ({_ENTRY_COLUMNS}) SELECT {_ENTRY_COLUMNS} "
    "FROM entries_incoming ORDER BY id ON CONFLICT (key) DO NOTHING RETURNING key"
)
_SQLITE_ENTRIES = SqliteInsertReturning(
    wallet_entries, ledger.COLUMNS, conflict=("key",), returning=("key",)
)


def _insert(conn: AsyncConnection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(wallet_entries).on_conflict_do_nothing(index_elements=["key"])


async def apply_entries(conn: AsyncConnection, entries: Sequence[Entry]) -> list[Entry]:
    """Insert the entries whose key is new and add them to their wallet rows; returns the
    entries actually inserted (a repeated key changes nothing).

    On SQLite (the embedded writer's path, bound without SQLAlchemy) a slice at a time, so
    the event loop serving requests is never held for long: a key repeated from an earlier
    slice is a conflict, so it is not applied twice."""
    if not entries:
        return []
    stamp = now()  # one created_at for the batch's entries that have none
    size = slice_size(len(entries), _SLICE) if conn.dialect.name == "sqlite" else len(entries)
    applied: list[Entry] = []
    # Per wallet: funded, consumed and held nanos added, and the funding entries counted.
    sums: dict[str, list[int]] = {}
    consumed_at: dict[str, datetime] = {}  # per wallet: its latest entry that consumed
    for start in range(0, len(entries), size):
        unique: dict[str, Entry] = {}
        for entry in entries[start : start + size]:
            unique.setdefault(entry.key, entry)
        inserted = await _insert_entries(conn, [e.values(stamp) for e in unique.values()])
        if len(inserted) == len(unique):  # the usual batch, all new
            landed = list(unique.values())
        else:
            landed = [e for k, e in unique.items() if k in inserted]
        for entry in landed:
            total = sums.get(entry.wallet_id)
            if total is None:
                total = sums[entry.wallet_id] = [0, 0, 0, 0]
            total[0] -= entry.funding
            total[1] += entry.consumed
            total[2] += entry.held
            if entry.funding:
                total[3] += 1
            if entry.consumed > 0:
                at = _aware(entry.created_at or stamp)
                latest = consumed_at.get(entry.wallet_id)
                if latest is None or at > latest:
                    consumed_at[entry.wallet_id] = at
        applied.extend(landed)
    if sums:
        rows = [
            {
                "wallet": w,
                "funded": f,
                "consumed": c,
                "held": h,
                "versions": v,
                "consumed_at": consumed_at.get(w),
            }
            for w, (f, c, h, v) in sums.items()
        ]
        if conn.dialect.name == "sqlite":  # one hand-over to the connection's thread, not four
            sql, bind = _balances_on_sqlite(conn.dialect)
            params = bind(rows)
            await on_thread(conn, lambda db: begun(db).executemany(sql, params))
        else:
            await conn.execute(_ADD_TO_BALANCES, rows)
    return applied


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# What a batch of entries adds to each wallet's running balances, one row per wallet, and
# the time of its latest entry that consumed (never moved back: a journal replayed late
# brings older entries). Built once: building the statement cost each flush more than
# running it.
_CONSUMED_AT = bindparam("consumed_at", type_=wallets.c.last_consumed_credit_at.type)
_LAST_CONSUMED = wallets.c.last_consumed_credit_at
_ADD_TO_BALANCES = (
    update(wallets)
    .where(wallets.c.id == bindparam("wallet"))
    .values(
        funded_nanos=wallets.c.funded_nanos + bindparam("funded"),
        funded_version=wallets.c.funded_version + bindparam("versions"),
        consumed_nanos=wallets.c.consumed_nanos + bindparam("consumed"),
        held_nanos=wallets.c.held_nanos + bindparam("held"),
        last_consumed_credit_at=case(
            (_CONSUMED_AT.is_(None), _LAST_CONSUMED),
            (or_(_LAST_CONSUMED.is_(None), _LAST_CONSUMED < _CONSUMED_AT), _CONSUMED_AT),
            else_=_LAST_CONSUMED,
        ),
    )
)


@functools.cache
def _balances_on_sqlite(
    dialect: Dialect,
) -> tuple[str, Callable[[Iterable[Mapping[str, Any]]], list[tuple[Any, ...]]]]:
    return driver_statement(_ADD_TO_BALANCES, wallets, dialect)


async def _insert_entries(conn: AsyncConnection, values: list[tuple[Any, ...]]) -> set[str]:
    """Insert the rows (no key repeated); return the keys that were new."""
    if conn.dialect.name == "sqlite":
        return {r[0] for r in await _SQLITE_ENTRIES.execute(conn, values)}
    if len(values) >= _COPY_FROM:
        return await _copy_entries(conn, values)
    stmt = _insert(conn).returning(wallet_entries.c.key)
    rows = [dict(zip(ledger.COLUMNS, v, strict=True)) for v in values]
    inserted: set[str] = set()
    for chunk in fixed_size_chunks(rows):  # few statement shapes for the driver's cache
        inserted.update(row[0] for row in await conn.execute(stmt, chunk))
    return inserted


async def _copy_entries(conn: AsyncConnection, values: list[tuple[Any, ...]]) -> set[str]:
    """PostgreSQL, a batch: binary COPY straight into `wallet_entries` under a savepoint;
    when a key is already stored (a replayed journal), COPY into a session-local staging
    table and `INSERT ... ON CONFLICT DO NOTHING RETURNING key` instead, as for usage
    events (metering/event_store.py). SQLAlchemy's multi-row INSERT ... RETURNING was the
    largest part of the ledger writer's CPU."""
    await conn.exec_driver_sql("SELECT 1")  # begins the transaction the raw COPY joins
    raw = await conn.get_raw_connection()
    pg: Any = raw.driver_connection
    await pg.execute("SAVEPOINT fg_entries")
    try:
        await pg.copy_records_to_table("wallet_entries", records=values, columns=ledger.COLUMNS)
    except asyncpg.UniqueViolationError:
        await pg.execute("ROLLBACK TO SAVEPOINT fg_entries")
    else:
        await pg.execute("RELEASE SAVEPOINT fg_entries")
        return {v[_KEY_AT] for v in values}
    await pg.execute(_ENTRIES_STAGING)
    await pg.copy_records_to_table("entries_incoming", records=values, columns=ledger.COLUMNS)
    return {r[0] for r in await pg.fetch(_ENTRIES_FROM_STAGING)}


async def holds_folded(conn: AsyncConnection, hold_ids: Sequence[str]) -> set[str]:
    """Of these holds, those whose finish is stored with the hold folded in (a `done:` entry
    that moves nothing to or from `held`, `ledger.fold_finished`): storing such a hold now
    (a journal replayed after its batch was stored) would leave it held for good."""
    found: set[str] = set()
    c = wallet_entries.c
    for start in range(0, len(hold_ids), 500):
        keys = [f"done:{hold_id}" for hold_id in hold_ids[start : start + 500]]
        query = select(c.hold_id).where(c.key.in_(keys), c.held_nanos == 0)
        found.update(r[0] for r in await conn.execute(query))
    return found


def entry_of(row: Any) -> Entry:
    return Entry(
        wallet_id=row["wallet_id"],
        key=row["key"],
        kind=row["kind"],
        available=int(row["available_nanos"]),
        held=int(row["held_nanos"]),
        consumed=int(row["consumed_nanos"]),
        funding=int(row["funding_nanos"]),
        hold_id=row["hold_id"],
        transaction_id=row["transaction_id"],
        created_at=row["created_at"],
        subscription_id=row["subscription_id"],
        reserved=None if row["reserved_nanos"] is None else int(row["reserved_nanos"]),
    )


async def entries_of(
    conn: AsyncConnection,
    wallet_id: str,
    *,
    after_id: int = 0,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """A wallet's entries after `after_id`, in the order they were stored: `limit` of them
    from `offset` (a page), or read on with `after_id` (a stream)."""
    query = (
        select(wallet_entries)
        .where(wallet_entries.c.wallet_id == wallet_id, wallet_entries.c.id > after_id)
        .order_by(wallet_entries.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def count_entries(conn: AsyncConnection, wallet_id: str, *, after_id: int = 0) -> int:
    c = wallet_entries.c
    query = select(func.count()).where(c.wallet_id == wallet_id, c.id > after_id)
    return int((await conn.execute(query)).scalar_one())


async def entry_sums(conn: AsyncConnection, wallet_id: str) -> Balances:
    c = wallet_entries.c
    row = (
        await conn.execute(
            select(
                func.coalesce(func.sum(c.available_nanos), 0),
                func.coalesce(func.sum(c.held_nanos), 0),
                func.coalesce(func.sum(c.consumed_nanos), 0),
                func.coalesce(func.sum(c.funding_nanos), 0),
            ).where(c.wallet_id == wallet_id)
        )
    ).one()
    return Balances(*(int(v) for v in row))


async def stale_holds(
    conn: AsyncConnection, before: datetime, after: datetime | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Hold entries made in [after, before) that no post or release finished: left by a
    process that died (its journal was replayed) or never settled."""
    done = wallet_entries.alias("done")
    query = (
        select(wallet_entries)
        .outerjoin(done, done.c.key == literal("done:", String) + wallet_entries.c.hold_id)
        .where(
            # A literal, as the partial index on holds names it (a bound value would not
            # use it and would scan every entry of the window).
            wallet_entries.c.kind == literal_column("'hold'"),
            wallet_entries.c.created_at < before,
            done.c.id.is_(None),
            *([wallet_entries.c.created_at >= after] if after is not None else []),
        )
        .limit(limit)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


class StaleHoldScan:
    """Finds stale holds in a window that moves with time, so each sweep reads only the
    holds made since the previous one (not the whole ledger every second). It starts
    `lookback_s` back, which covers the holds of a journal replayed at start."""

    def __init__(self, ttl_s: float, lookback_s: float = 86_400.0, limit: int = 500) -> None:
        self._ttl = timedelta(seconds=ttl_s)
        self._since = now() - timedelta(seconds=lookback_s)
        self._limit = limit

    async def find(self, conn: AsyncConnection, at: datetime) -> list[dict[str, Any]]:
        until = at - self._ttl
        rows = await stale_holds(conn, until, self._since, self._limit)
        if len(rows) < self._limit:  # a full batch: the rest are read next round
            self._since = max(self._since, until)
        return rows
