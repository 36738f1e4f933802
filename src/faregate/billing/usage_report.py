"""A subscription's current usage as Lago's `customer_usage`, read and priced one way for
`GET /api/v1/customers/{external_customer_id}/current_usage` and `faregate usage`: the
customer's subscription with that external_id (the live one, else its latest), running now,
priced over its current period from the rollups. Storage reads and JSON; no HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.auth import repository as customers_repo
from faregate.billing import repository as repo
from faregate.billing.billed import subscription_of_row
from faregate.billing.catalog_changes import charge_id
from faregate.billing.errors import BillingNotAllowed, BillingNotFound
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import subscription_period
from faregate.billing.plans import Plan
from faregate.billing.usage import ChargeUsage, CustomerUsage, FilterUsage, current_usage
from faregate.money import decimal_str


async def current_usage_json(
    conn: AsyncConnection,
    external_customer_id: str,
    external_subscription_id: str,
    *,
    now: datetime,
    tax_rate: Decimal,
    unflushed: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Lago's `customer_usage` of the customer's subscription from the start of its current
    period to `now`; `unflushed` are the usage writer's events of it not stored yet.

    Raises BillingNotFound (customer, subscription or plan) and, for a subscription that is
    not running (pending, terminated, canceled, past its ending_at), Lago's 405
    `no_active_subscription`."""
    if await customers_repo.customer_by_external_id(conn, external_customer_id) is None:
        raise BillingNotFound("customer", external_customer_id)
    found = await repo.subscription_and_plan(
        conn, external_subscription_id, external_customer_id=external_customer_id
    )
    if found is None:
        raise BillingNotFound("subscription", external_subscription_id)
    row, plan_row = found
    if plan_row is None:
        raise BillingNotFound("plan", row["plan_code"])
    if not _running(row, now):
        raise BillingNotAllowed("no_active_subscription")
    plan = Plan.from_dict(plan_row["definition"])
    metric_rows = await repo.metrics_by_codes(conn, {c.billable_metric_code for c in plan.charges})
    metrics = {code: BillableMetric.from_dict(r["definition"]) for code, r in metric_rows.items()}
    subscription = subscription_of_row(row)
    period = subscription_period(subscription, plan.charges_interval, now)
    aggregates = await repo.period_aggregates(
        conn, subscription, plan, metrics, period, unflushed=unflushed
    )
    usage = current_usage(
        subscription, plan, metrics, aggregates, period, currency=plan.amount_currency,
        tax_rate=tax_rate,
    )  # fmt: skip
    return usage_json(usage, plan_row["id"], {c: r["id"] for c, r in metric_rows.items()})


def _running(row: dict[str, Any], now: datetime) -> bool:
    """Active, started and not past its `ending_at` (a billing run terminates it soon)."""
    start = _utc(row.get("started_at") or row["subscription_at"])
    ending = row.get("ending_at")
    return row["status"] == "active" and start <= now and (ending is None or now < _utc(ending))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _filter_json(f: FilterUsage) -> dict[str, Any]:
    return {
        "invoice_display_name": f.invoice_display_name,
        "values": None if f.values is None else {k: list(v) for k, v in f.values.items()},
        "units": decimal_str(f.units),
        "total_aggregated_units": decimal_str(f.total_aggregated_units),
        "events_count": f.events_count,
        "amount_cents": f.amount_cents,
    }


def _charge_json(c: ChargeUsage, plan_id: str, metric_ids: dict[str, str]) -> dict[str, Any]:
    return {
        "units": decimal_str(c.units),
        "total_aggregated_units": decimal_str(c.total_aggregated_units),
        "events_count": c.events_count,
        "amount_cents": c.amount_cents,
        "amount_currency": c.amount_currency,
        "charge": {
            "lago_id": charge_id(plan_id, c.charge.code),
            "code": c.charge.code,
            "charge_model": c.charge.charge_model,
            "invoice_display_name": c.charge.invoice_display_name,
        },
        "billable_metric": {
            "lago_id": metric_ids.get(c.billable_metric.code, c.billable_metric.code),
            "name": c.billable_metric.name,
            "code": c.billable_metric.code,
            "aggregation_type": c.billable_metric.aggregation_type,
        },
        "filters": [_filter_json(f) for f in c.filters],
        "grouped_usage": [],
    }


def usage_json(usage: CustomerUsage, plan_id: str, metric_ids: dict[str, str]) -> dict[str, Any]:
    return {
        "from_datetime": _iso(usage.from_datetime),
        "to_datetime": _iso(usage.to_datetime),
        "issuing_date": usage.issuing_date.isoformat(),
        "lago_invoice_id": None,
        "currency": usage.currency,
        "amount_cents": usage.amount_cents,
        "taxes_amount_cents": usage.taxes_amount_cents,
        "total_amount_cents": usage.total_amount_cents,
        "charges_usage": [_charge_json(c, plan_id, metric_ids) for c in usage.charges_usage],
    }
