"""Lago's `GET /api/v1/customers/{external_customer_id}/current_usage`: a subscription's usage
and amounts from the start of its current billing period, per charge and filter
(billing.usage_report, which `faregate usage` shares). HTTP only."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from aiohttp import web

from faregate.api.billing import _lago, _services
from faregate.api.common import json_response
from faregate.billing.errors import BillingValidationError
from faregate.billing.usage_report import current_usage_json


def _tax_rate(request: web.Request) -> Decimal:
    """`billing.tax_rate`, as on invoices; Lago's `apply_taxes=false` leaves taxes out."""
    apply = request.query.get("apply_taxes", "true").lower()
    if apply not in ("true", "false"):
        raise BillingValidationError("apply_taxes", "value_is_invalid")
    rate: Decimal = _services(request).invoicing.settings.tax_rate
    return rate if apply == "true" else Decimal(0)


@_lago
async def get_current_usage(request: web.Request) -> web.Response:
    customer_id = request.match_info["external_id"]
    subscription_id = request.query.get("external_subscription_id")
    if not subscription_id:
        raise BillingValidationError("external_subscription_id", "value_is_mandatory")
    tax_rate = _tax_rate(request)
    services = _services(request)
    # The writer's tail is taken before the database is read: an event is then either
    # stored by the time of the read or still in the tail, never in neither.
    unflushed = services.writer.unflushed_events(subscription_id)
    async with services.engine.connect() as conn:
        # Autocommit: no BEGIN / ROLLBACK round trips. The reads need no common snapshot:
        # period_aggregates re-reads if a flush lands part of the tail meanwhile.
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        body = await current_usage_json(
            conn,
            customer_id,
            subscription_id,
            now=datetime.now(UTC),
            tax_rate=tax_rate,
            unflushed=unflushed,
        )
    for key in ("charge_code", "billable_metric_code"):
        wanted = request.query.get(key)
        if wanted:
            field = "charge" if key == "charge_code" else "billable_metric"
            body["charges_usage"] = [c for c in body["charges_usage"] if c[field]["code"] == wanted]
    return json_response({"customer_usage": body})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/customers/{external_id}/current_usage", get_current_usage)
