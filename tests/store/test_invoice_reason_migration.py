"""Migration 0020: the invoice of a terminated subscription's last period, stored as
`subscription_periodic` before `subscription_terminating` existed, says
`subscription_terminating`; the subscription's other invoices, and those of subscriptions
still active, keep their reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import create_pg_database, drop_pg_database

from faregate.store.db import create_engine, migrate
from faregate.store.tables.billing import invoices, subscriptions

T0 = datetime(2026, 9, 1, tzinfo=UTC)
PARIS = timezone(timedelta(hours=2))


def _subscription(sub_id: str, status: str, ending_at: datetime | None) -> dict[str, Any]:
    return {
        "id": sub_id,
        "external_id": f"ext_{sub_id}",
        "external_customer_id": "acme",
        "plan_code": "pro",
        "status": status,
        "billing_time": "calendar",
        "subscription_at": T0,
        "started_at": T0,
        "ending_at": ending_at,
        "terminated_at": ending_at if status == "terminated" else None,
        "created_at": T0,
    }


def _invoice(
    invoice_id: str, sub_id: str, reason: str, start: datetime, end: datetime
) -> dict[str, Any]:
    document = {"from_datetime": start.isoformat(), "to_datetime": end.isoformat(), "fees": []}
    return {
        "id": invoice_id,
        "external_customer_id": "acme",
        "external_subscription_id": f"ext_{sub_id}",
        "subscription_id": sub_id,
        "plan_code": "pro",
        "invoice_type": "subscription",
        "billing_reason": reason,
        "status": "finalized",
        "currency": "USD",
        "issuing_date": end.date(),
        "from_datetime": start,
        "to_datetime": end,
        "fees_amount_cents": 0,
        "taxes_amount_cents": 0,
        "prepaid_credit_amount_cents": 0,
        "total_amount_cents": 0,
        "document": document,
        "created_at": end,
        "updated_at": end,
    }


OCT, NOV = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
ENDED = datetime(2026, 10, 15, 12, 30, tzinfo=UTC)
# A subscription anchored in another zone: its period ends are stored with their offset.
ENDED_PARIS = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)

SUBSCRIPTIONS = [
    _subscription("s_term", "terminated", ENDED),
    _subscription("s_paris", "terminated", ENDED_PARIS),
    _subscription("s_done", "terminated", ENDED),  # already has its terminating invoice
    _subscription("s_active", "active", None),
    _subscription("s_ending", "active", datetime(2026, 12, 15, tzinfo=UTC)),
]
INVOICES = [
    _invoice("i_start", "s_term", "subscription_starting", T0, OCT),
    _invoice("i_sept", "s_term", "subscription_periodic", T0, OCT),
    _invoice("i_last", "s_term", "subscription_periodic", OCT, ENDED),
    _invoice("i_paris", "s_paris", "subscription_periodic", OCT, ENDED_PARIS.astimezone(PARIS)),
    _invoice("i_done_sept", "s_done", "subscription_periodic", T0, OCT),
    _invoice("i_done", "s_done", "subscription_terminating", OCT, ENDED),
    _invoice("i_active", "s_active", "subscription_periodic", OCT, NOV),
    _invoice("i_ending", "s_ending", "subscription_periodic", OCT, NOV),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_terminated_subscriptions_last_periodic_invoice_becomes_terminating(
    backend: str, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    if backend == "postgres":
        url = await create_pg_database()
    try:
        await asyncio.to_thread(migrate, url, "0019_webhook_endpoint_url_unique")
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(subscriptions.insert(), SUBSCRIPTIONS)
            await conn.execute(invoices.insert(), INVOICES)
        await engine.dispose()
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        async with engine.connect() as conn:
            rows = await conn.execute(select(invoices.c.id, invoices.c.billing_reason))
            reasons = dict(rows.all())
        await engine.dispose()
    finally:
        if backend == "postgres":
            await drop_pg_database(url)
    assert reasons == {
        "i_start": "subscription_starting",
        "i_sept": "subscription_periodic",
        "i_last": "subscription_terminating",
        "i_paris": "subscription_terminating",
        "i_done_sept": "subscription_periodic",
        "i_done": "subscription_terminating",
        "i_active": "subscription_periodic",
        "i_ending": "subscription_periodic",
    }
