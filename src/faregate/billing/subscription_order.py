"""Which of the subscriptions sharing an external_id a lookup by external_id means. As in
Lago, an external_id is held by at most one live (pending or active) subscription, and a
terminated or canceled one's may be taken again: the live one comes first, else the most
recent one. Query ordering only; the repositories run the queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case

from faregate.store.tables.billing import subscriptions

LIVE_STATUSES = ("pending", "active")


def current_first() -> tuple[Any, ...]:
    """ORDER BY terms putting the subscription an external_id means first."""
    live = case((subscriptions.c.status.in_(LIVE_STATUSES), 0), else_=1)
    return (live, subscriptions.c.created_at.desc(), subscriptions.c.id.desc())
