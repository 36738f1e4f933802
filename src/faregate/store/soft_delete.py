"""Soft deletion of catalog rows (customers, metrics, plans): `deleted_at` is set, the row
and what refers to it stay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection


async def soft_delete(conn: AsyncConnection, table: Any, row_id: str) -> bool:
    """Mark a live row deleted; False when it is deleted already. A concurrent delete of the
    same row holds its row lock (SQLite: the write lock) until it commits, so of several
    deletes at once exactly one finds the row live."""
    result = await conn.execute(
        update(table).where(table.c.id == row_id, table.c.deleted_at.is_(None)),
        {"deleted_at": datetime.now(UTC)},
    )
    return bool(result.rowcount)
