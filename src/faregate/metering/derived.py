"""A gateway request's usage events, carried by its request record.

On SQLite the events a request makes for its subscription's plan are not stored as rows of
`events`: its record carries them (`requests.events`, JSON text of the events packed: the
properties they share once, then each event's code, transaction suffix and own properties),
and they are made again from it wherever events are read. Three event rows were nine B-tree
inserts and twenty-seven bound values a request, about a tenth of the pipeline's
instructions per request on the embedded default (bench/HISTORY.md, "A request's events ride
on its record"). On PostgreSQL,
where a batch of events is one COPY, they are stored as rows, as events sent to the API are
on both.

`expand` is the only maker of a gateway request's event rows: every reader builds them with
it, the writer's tail of records not stored yet included (`UsageWriter.unflushed_events`).
The flush rolls a batch's events up from the packed form without making rows
(`rollups.accumulate_carried`, tested to add what their rows add). An event of a request's is
`{request id}:{suffix}` (`req_…:requests`, `req_…:tokens:input`); readers by transaction id
look its request up by that id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.store.tables.metering import requests

Packed = dict[str, Any]  # {"p": shared properties, "e": [[code, suffix, own properties], ...]}
Carried = tuple[dict[str, Any], Packed]  # a request record and the events it carries

_COLUMNS = (
    requests.c.id,
    requests.c.external_subscription_id,
    requests.c.external_customer_id,
    requests.c.created_at,
    requests.c.events,
)
_IN_CHUNK = 500


def pack(shared: dict[str, Any], parts: list[list[Any]]) -> Packed:
    return {"p": shared, "e": parts}


def expand(
    request_id: str,
    subscription: str,
    customer: str | None,
    created_at: datetime,
    packed: Packed,
) -> list[dict[str, Any]]:
    """The request's event rows, as `events` holds them (gateway events have no amount)."""
    shared = packed["p"]
    return [
        {
            "transaction_id": f"{request_id}:{suffix}",
            "external_subscription_id": subscription,
            "external_customer_id": customer,
            "code": code,
            "timestamp": created_at,
            "properties": {**shared, **own},
            "source": "gateway",
            "created_at": created_at,
        }
        for code, suffix, own in packed["e"]
    ]


def packed_of(row: Mapping[str, Any]) -> Packed | None:
    """The events a request record carries, packed (None when it carries none)."""
    packed = row.get("events")
    if not packed:
        return None
    if isinstance(packed, str):  # as stored and journaled
        return orjson.loads(packed)  # type: ignore[no-any-return]
    return packed  # type: ignore[no-any-return]


def of_carrier(row: Mapping[str, Any], packed: Packed) -> list[dict[str, Any]]:
    """The event rows of `packed`, carried by the request record `row`."""
    return expand(
        row["id"],
        row["external_subscription_id"],
        row["external_customer_id"],
        row["created_at"],
        packed,
    )


def of_record(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events a request record carries (none when it has none)."""
    packed = packed_of(row)
    return [] if packed is None else of_carrier(row, packed)


def without(row: Mapping[str, Any], transaction_ids: set[str]) -> str | None:
    """The record's `events` without those of these transaction ids (None if none is left),
    packed as `record` journals and stores them."""
    packed = row["events"]
    if isinstance(packed, str):
        packed = orjson.loads(packed)
    prefix = f"{row['id']}:"
    kept = [part for part in packed["e"] if prefix + part[1] not in transaction_ids]
    if not kept:
        return None
    return orjson.dumps(pack(packed["p"], kept)).decode()


def request_id_of(transaction_id: str) -> str | None:
    """The request a gateway event's transaction id names, if it can name one."""
    if not transaction_id.startswith("req_"):
        return None
    head, colon, _ = transaction_id.partition(":")
    return head if colon else None


async def _records(conn: AsyncConnection, request_ids: Iterable[str]) -> list[Mapping[str, Any]]:
    ids = sorted(set(request_ids))
    found: list[Mapping[str, Any]] = []
    for start in range(0, len(ids), _IN_CHUNK):
        query = select(*_COLUMNS).where(
            requests.c.id.in_(ids[start : start + _IN_CHUNK]), requests.c.events.is_not(None)
        )
        found.extend((await conn.execute(query)).mappings())
    return found


async def by_transaction_ids(
    conn: AsyncConnection, transaction_ids: Iterable[str], subscription: str | None = None
) -> list[dict[str, Any]]:
    """The carried events with these transaction ids (of `subscription` when given)."""
    wanted = set(transaction_ids)
    ids = {r for r in map(request_id_of, wanted) if r is not None}
    if not ids:
        return []
    found = []
    for record in await _records(conn, ids):
        if subscription is not None and record["external_subscription_id"] != subscription:
            continue
        found.extend(e for e in of_record(record) if e["transaction_id"] in wanted)
    return found


async def stored_keys(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (external_subscription_id, transaction_id) are a stored request's."""
    keys = set(keys)
    ids = {r for r in (request_id_of(tx) for _, tx in keys) if r is not None}
    if not ids:
        return set()
    carried = {
        (e["external_subscription_id"], e["transaction_id"])
        for record in await _records(conn, ids)
        for e in of_record(record)
    }
    return keys & carried


async def of_subscription(
    conn: AsyncConnection,
    subscription: str,
    code: str,
    start: datetime | None,
    end: datetime,
) -> list[dict[str, Any]]:
    """The carried events of `code` of a subscription's requests made in [start, end)."""
    query = select(*_COLUMNS).where(
        requests.c.external_subscription_id == subscription,
        requests.c.events.is_not(None),
        requests.c.created_at < end,
    )
    if start is not None:
        query = query.where(requests.c.created_at >= start)
    found = []
    for record in (await conn.execute(query.order_by(requests.c.created_at))).mappings():
        found.extend(e for e in of_record(record) if e["code"] == code)
    return found


async def of_code(conn: AsyncConnection, code: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every carried event of `code`, in parts, oldest requests first."""
    query = select(*_COLUMNS).where(requests.c.events.is_not(None)).order_by(requests.c.created_at)
    result = await conn.stream(query)
    async for part in result.mappings().partitions(2000):
        yield [e for record in part for e in of_record(record) if e["code"] == code]
