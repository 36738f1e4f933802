"""Wallet transactions' rows (Lago's top-ups, grants, voids and invoiced credits): queries
only; wallets.service and wallets.credits decide."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.store.tables.wallets import wallet_transactions
from faregate.wallets.repository import new_id, now


async def insert_transaction(
    conn: AsyncConnection, values: dict[str, Any]
) -> dict[str, Any] | None:
    """Insert a wallet transaction; None when its idempotency key was already used."""
    stamp = now()
    row = {
        "id": new_id(),
        "created_at": stamp,
        "settled_at": stamp,
        "status": "settled",
        "metadata": [],
        **values,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(wallet_transactions).values(**row)
    if row.get("idempotency_key"):
        stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
    result = await conn.execute(stmt)
    return row if result.rowcount == 1 else None


async def transactions_of(
    conn: AsyncConnection,
    wallet_id: str,
    limit: int = 1000,
    offset: int = 0,
    *,
    status: str | None = None,
    kind: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a wallet's transactions (oldest first), optionally only one
    `transaction_status` / `transaction_type`, and how many match in all."""
    c = wallet_transactions.c
    where = [c.wallet_id == wallet_id]
    if status:
        where.append(c.transaction_status == status)
    if kind:
        where.append(c.transaction_type == kind)
    query = (
        select(wallet_transactions)
        .where(*where)
        .order_by(c.created_at, c.id)
        .limit(limit)
        .offset(offset)
    )
    rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    total = (
        await conn.execute(select(func.count()).select_from(wallet_transactions).where(*where))
    ).scalar_one()
    return rows, int(total)


async def transaction_by_id(conn: AsyncConnection, transaction_id: str) -> dict[str, Any] | None:
    query = select(wallet_transactions).where(wallet_transactions.c.id == transaction_id)
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None
