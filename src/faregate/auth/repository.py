"""All queries on customers, teams and API keys. Callers own the transaction boundaries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.subscription_order import current_first
from faregate.store.soft_delete import soft_delete
from faregate.store.tables.billing import subscriptions
from faregate.store.tables.gateway import api_keys, customers, teams


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


async def insert_customer(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    row = {
        "id": new_id(),
        "created_at": _now(),
        "metadata": {},
        "currency": "USD",
        "timezone": "UTC",
        **values,
    }
    await conn.execute(customers.insert().values(**row))
    return row


async def update_customer(conn: AsyncConnection, customer_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(customers).where(customers.c.id == customer_id).values(**values))


async def delete_customer(conn: AsyncConnection, customer_id: str) -> bool:
    """Soft-delete a live customer; False when a concurrent delete did first."""
    return await soft_delete(conn, customers, customer_id)


async def customer_by_external_id(conn: AsyncConnection, external_id: str) -> dict[str, Any] | None:
    row = (
        (
            await conn.execute(
                select(customers).where(
                    customers.c.external_id == external_id, customers.c.deleted_at.is_(None)
                )
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def customer_by_id(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(customers).where(customers.c.id == customer_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def list_customers(
    conn: AsyncConnection, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(customers)
        .where(customers.c.deleted_at.is_(None))
        .order_by(customers.c.created_at, customers.c.id)  # ties: pages neither repeat nor skip
        .limit(limit)
        .offset(offset)
    )
    return [dict(r) for r in rows.mappings()]


async def count_customers(conn: AsyncConnection) -> int:
    query = select(func.count()).select_from(customers).where(customers.c.deleted_at.is_(None))
    return int((await conn.execute(query)).scalar_one())


async def insert_team(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    row = {"id": new_id(), "created_at": _now(), "metadata": {}, **values}
    await conn.execute(teams.insert().values(**row))
    return row


async def team_by_name(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(teams).where(teams.c.name == name))).mappings().first()
    return dict(row) if row else None


async def team_by_id(conn: AsyncConnection, team_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(teams).where(teams.c.id == team_id))).mappings().first()
    return dict(row) if row else None


async def list_teams(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(select(teams).order_by(teams.c.name))
    return [dict(r) for r in rows.mappings()]


async def insert_key(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    row = {"id": new_id(), "created_at": _now(), "tags": [], "settings": {}, **values}
    await conn.execute(api_keys.insert().values(**row))
    return row


def _customer_subscription() -> Any:
    """The external_id of the key's customer's active subscription (the oldest one)."""
    return (
        select(subscriptions.c.external_id)
        .where(subscriptions.c.customer_id == api_keys.c.customer_id)
        .where(subscriptions.c.status == "active")
        .order_by(subscriptions.c.created_at)
        .limit(1)
        .scalar_subquery()
    )


async def key_by_prefix(conn: AsyncConnection, prefix: str) -> dict[str, Any] | None:
    """The key with its customer's external_id, its team's name and the customer's active
    subscription (`customer_subscription_id`, billed when the key names none)."""
    query = (
        select(
            api_keys,
            customers.c.external_id.label("external_customer_id"),
            teams.c.name.label("team_name"),
            _customer_subscription().label("customer_subscription_id"),
        )
        .select_from(
            api_keys.outerjoin(customers, api_keys.c.customer_id == customers.c.id).outerjoin(
                teams, api_keys.c.team_id == teams.c.id
            )
        )
        .where(api_keys.c.prefix == prefix)
    )
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def subscription_owner(conn: AsyncConnection, external_subscription_id: str) -> str | None:
    """The customer_id of the subscription an external_id means (the live one, else the
    most recent), None when there is no such subscription."""
    query = (
        select(subscriptions.c.customer_id)
        .where(subscriptions.c.external_id == external_subscription_id)
        .order_by(*current_first())
        .limit(1)
    )
    return (await conn.execute(query)).scalar()


async def key_by_id(conn: AsyncConnection, key_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
    return dict(row) if row else None


async def list_keys(conn: AsyncConnection, customer_id: str | None = None) -> list[dict[str, Any]]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    if customer_id:
        query = query.where(api_keys.c.customer_id == customer_id)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def update_key(conn: AsyncConnection, key_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))


async def revoke_key(conn: AsyncConnection, key_id: str) -> bool:
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=_now())
    )
    return bool(result.rowcount)
