"""Every stored usage event, for tests: the rows of `events`, then the events the request
records carry (metering.derived), as the readers see them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.metering import derived
from faregate.store.tables.metering import events, requests


async def stored_events(conn: AsyncConnection, **where: Any) -> list[dict[str, Any]]:
    """Stored events whose columns equal `where` (e.g. `code="tokens"`), rows first."""
    rows = [dict(r) for r in (await conn.execute(select(events).order_by(events.c.id))).mappings()]
    query = select(requests).where(requests.c.events.is_not(None)).order_by(requests.c.created_at)
    for record in (await conn.execute(query)).mappings():
        rows.extend(derived.of_record(record))
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


async def events_of_request(conn: AsyncConnection, request_id: str) -> list[dict[str, Any]]:
    return [
        r for r in await stored_events(conn) if r["transaction_id"].startswith(request_id + ":")
    ]
