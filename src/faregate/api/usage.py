"""Lago's `GET /api/v1/customers/{external_customer_id}/current_usage`: a subscription's usage
and amounts from the start of its current billing period, per charge and filter, read from
rollups (metering.aggregates) and priced by the billing domain (billing.usage). HTTP only."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from faregate.api.billing import _lago, _services
from faregate.api.common import json_response
from faregate.billing import repository as repo
from faregate.billing.catalog_changes import charge_id
from faregate.billing.errors import BillingNotAllowed, BillingNotFound, BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import subscription_period
from faregate.billing.plans import Plan, Subscription
from faregate.billing.usage import ChargeUsage, CustomerUsage, FilterUsage, current_usage
from faregate.metering.aggregates import period_aggregates
from faregate.money import decimal_str


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=UTC)
    return value


def subscription_of(row: dict[str, Any]) -> Subscription:
    return Subscription(
        external_id=row["external_id"],
        external_customer_id=row["external_customer_id"],
        plan_code=row["plan_code"],
        subscription_at=_aware(row["subscription_at"]),  # type: ignore[arg-type]
        billing_time=row["billing_time"],
        started_at=_aware(row.get("started_at")),
        ending_at=_aware(row.get("ending_at")),
        status=row["status"],
        name=row.get("name"),
    )


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


def _tax_rate(request: web.Request) -> Decimal:
    """`billing.tax_rate`, as on invoices; Lago's `apply_taxes=false` leaves taxes out."""
    apply = request.query.get("apply_taxes", "true").lower()
    if apply not in ("true", "false"):
        raise BillingValidationError("apply_taxes", "value_is_invalid")
    rate: Decimal = _services(request).invoicing.settings.tax_rate
    return rate if apply == "true" else Decimal(0)


def _running(row: dict[str, Any], now: datetime) -> bool:
    """Active, started and not past its `ending_at` (a billing run terminates it soon)."""
    start = _utc(row.get("started_at") or row["subscription_at"])
    ending = row.get("ending_at")
    return row["status"] == "active" and start <= now and (ending is None or now < _utc(ending))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value


@_lago
async def get_current_usage(request: web.Request) -> web.Response:
    customer_id = request.match_info["external_id"]
    subscription_id = request.query.get("external_subscription_id")
    if not subscription_id:
        raise BillingValidationError("external_subscription_id", "value_is_mandatory")
    services = _services(request)
    # The writer's tail is taken before the database is read: an event is then either
    # stored by the time of the read or still in the tail, never in neither.
    unflushed = services.writer.unflushed_events(subscription_id)
    async with services.engine.connect() as conn:
        # Autocommit: no BEGIN / ROLLBACK round trips. The reads need no common snapshot:
        # period_aggregates re-reads if a flush lands part of the tail meanwhile.
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        found = await repo.subscription_and_plan(
            conn, subscription_id, external_customer_id=customer_id
        )
        if found is None:
            raise BillingNotFound("subscription", subscription_id)
        row, plan_row = found
        if plan_row is None:
            raise BillingNotFound("plan", row["plan_code"])
        plan = Plan.from_dict(plan_row["definition"])
        metric_rows = await repo.metrics_by_codes(
            conn, {c.billable_metric_code for c in plan.charges}
        )
        metrics = {
            code: BillableMetric.from_dict(r["definition"]) for code, r in metric_rows.items()
        }
        now = datetime.now(UTC)
        if not _running(row, now):
            # Lago's answer for a subscription that is not active (405, no timestamp named).
            raise BillingNotAllowed("no_active_subscription")
        subscription = subscription_of(row)
        period = subscription_period(subscription, plan.charges_interval, now)
        aggregates = await period_aggregates(
            conn, plan, metrics, subscription_id, period, unflushed=unflushed
        )
    usage = current_usage(
        subscription,
        plan,
        metrics,
        aggregates,
        period,
        currency=plan.amount_currency,
        tax_rate=_tax_rate(request),
    )
    body = usage_json(usage, plan_row["id"], {c: r["id"] for c, r in metric_rows.items()})
    for key in ("charge_code", "billable_metric_code"):
        wanted = request.query.get(key)
        if wanted:
            field = "charge" if key == "charge_code" else "billable_metric"
            body["charges_usage"] = [c for c in body["charges_usage"] if c[field]["code"] == wanted]
    return json_response({"customer_usage": body})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/customers/{external_id}/current_usage", get_current_usage)
