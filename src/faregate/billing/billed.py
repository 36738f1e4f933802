"""A subscription with what prices it (plan, billable metrics), loaded from storage into
domain values once, for invoices, current usage and per-request prices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing import repository as repo
from faregate.billing.errors import BillingNotFound
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan, Subscription


@dataclass(frozen=True)
class Billed:
    row: Mapping[str, Any]  # the subscriptions row (lago_id is row["id"])
    subscription: Subscription
    plan: Plan
    plan_id: str
    metrics: Mapping[str, BillableMetric]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value


def subscription_of_row(row: Mapping[str, Any]) -> Subscription:
    subscription_at = _utc(row["subscription_at"])
    assert subscription_at is not None  # a NOT NULL column
    return Subscription(
        external_id=row["external_id"],
        external_customer_id=row["external_customer_id"],
        plan_code=row["plan_code"],
        subscription_at=subscription_at,
        billing_time=row["billing_time"],
        started_at=_utc(row.get("started_at")),
        ending_at=_utc(row.get("ending_at")),
        status=row["status"],
        name=row.get("name"),
        lago_id=row.get("id"),
    )


async def billed_of_row(conn: AsyncConnection, row: Mapping[str, Any]) -> Billed:
    plan_row = await repo.plan_by_code(conn, row["plan_code"])
    if plan_row is None:
        raise BillingNotFound("plan", row["plan_code"])
    plan = Plan.from_dict(plan_row["definition"])
    codes = {charge.billable_metric_code for charge in plan.charges}
    metric_rows = await repo.metrics_by_codes(conn, codes)
    metrics = {code: BillableMetric.from_dict(r["definition"]) for code, r in metric_rows.items()}
    return Billed(row, subscription_of_row(row), plan, plan_row["id"], metrics)
