"""Lago v1 billing API (customers, billable metrics, plans, subscriptions, events) for the
official Lago clients. HTTP only: parse, validate with the billing domain, store, render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from faregate.api.common import bearer_key, json_response, read_json_object
from faregate.api.state import SERVICES, Services
from faregate.auth import repository as customers_repo
from faregate.billing import repository as repo
from faregate.billing.errors import BillingError, BillingNotFound, BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan, Subscription
from faregate.metering import ingest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BATCH = 1000
_REASONS = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}


def lago_error(err: BillingError) -> web.Response:
    body: dict[str, Any] = {"status": err.status, "error": _REASONS.get(err.status, "Error"),
                            "code": err.code}
    if isinstance(err, BillingValidationError):
        body["error_details"] = {err.field: [err.error_code]}
    return json_response(body, status=err.status)


def _lago(handler: Handler) -> Handler:
    """Admin auth, then Lago-shaped bodies for billing errors (others go to the middleware)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        await request.app[SERVICES].admin(bearer_key(request))
        try:
            return await handler(request)
        except BillingError as err:
            return lago_error(err)

    return wrapped


lago_endpoint = _lago  # for the other Lago API modules (invoices)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _root(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise BillingValidationError(key, "value_is_mandatory")
    return value


def _meta(count: int) -> dict[str, Any]:
    return {"current_page": 1, "next_page": None, "prev_page": None, "total_pages": 1,
            "total_count": count}


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


# --- customers ---------------------------------------------------------------------------


def _customer_json(row: dict[str, Any]) -> dict[str, Any]:
    created = _iso(row["created_at"])
    return {"lago_id": row["id"], "external_id": row["external_id"], "name": row.get("name"),
            "email": row.get("email"), "currency": row.get("currency"),
            "timezone": row.get("timezone"), "applicable_timezone": row.get("timezone") or "UTC",
            "created_at": created, "updated_at": created}


def _customer_values(data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, size in (("name", 255), ("email", 255), ("currency", 3), ("timezone", 64)):
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > size:
            raise BillingValidationError(field, "value_is_invalid")
        values[field] = value.upper() if field == "currency" else value
    return values


@_lago
async def create_customer(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "customer")
    external_id = data.get("external_id")
    if not isinstance(external_id, str) or not external_id:
        raise BillingValidationError("external_id", "value_is_mandatory")
    values = _customer_values(data)
    async with _services(request).engine.begin() as conn:
        row = await customers_repo.customer_by_external_id(conn, external_id)
        if row is None:
            row = await customers_repo.insert_customer(conn, {"external_id": external_id, **values})
        elif values:
            await customers_repo.update_customer(conn, row["id"], values)
            row = {**row, **values}
    return json_response({"customer": _customer_json(row)})


@_lago
async def get_customer(request: web.Request) -> web.Response:
    external_id = request.match_info["external_id"]
    async with _services(request).engine.connect() as conn:
        row = await customers_repo.customer_by_external_id(conn, external_id)
    if row is None:
        raise BillingNotFound("customer", external_id)
    return json_response({"customer": _customer_json(row)})


@_lago
async def list_customers(request: web.Request) -> web.Response:
    async with _services(request).engine.connect() as conn:
        rows = await customers_repo.list_customers(conn, limit=1000)
    return json_response({"customers": [_customer_json(r) for r in rows], "meta": _meta(len(rows))})


# --- billable metrics --------------------------------------------------------------------


def _metric_json(row: dict[str, Any]) -> dict[str, Any]:
    d = row["definition"]
    return {"lago_id": row["id"], "code": row["code"], "name": row["name"],
            "description": d.get("description"), "aggregation_type": row["aggregation_type"],
            "field_name": d.get("field_name"), "recurring": bool(d.get("recurring")),
            "rounding_function": d.get("rounding_function"),
            "rounding_precision": d.get("rounding_precision"),
            "weighted_interval": d.get("weighted_interval"), "expression": None,
            "filters": d.get("filters") or [], "created_at": _iso(row["created_at"])}


def _metric_definition(metric: BillableMetric) -> dict[str, Any]:
    return {"code": metric.code, "name": metric.name, "aggregation_type": metric.aggregation_type,
            "field_name": metric.field_name, "recurring": metric.recurring,
            "rounding_function": metric.rounding_function,
            "rounding_precision": metric.rounding_precision,
            "weighted_interval": metric.weighted_interval, "description": metric.description,
            "filters": [{"key": f.key, "values": list(f.values)} for f in metric.filters]}


@_lago
async def create_metric(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "billable_metric")
    metric = BillableMetric.from_dict({k: v for k, v in data.items() if v is not None})
    async with _services(request).engine.begin() as conn:
        if await repo.metric_by_code(conn, metric.code) is not None:
            raise BillingValidationError("code", "value_already_exist")
        row = await repo.insert_metric(conn, _metric_definition(metric))
    event_catalog(_services(request)).add_metric(metric)
    return json_response({"billable_metric": _metric_json(row)})


@_lago
async def get_metric(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    async with _services(request).engine.connect() as conn:
        row = await repo.metric_by_code(conn, code)
    if row is None:
        raise BillingNotFound("billable_metric", code)
    return json_response({"billable_metric": _metric_json(row)})


@_lago
async def list_metrics(request: web.Request) -> web.Response:
    async with _services(request).engine.connect() as conn:
        rows = await repo.list_metrics(conn, limit=1000)
    return json_response({"billable_metrics": [_metric_json(r) for r in rows],
                          "meta": _meta(len(rows))})


# --- plans -------------------------------------------------------------------------------


def _plan_json(row: dict[str, Any]) -> dict[str, Any]:
    d = row["definition"]
    return {"lago_id": row["id"], "code": row["code"], "name": row["name"],
            "created_at": _iso(row["created_at"]), **{k: v for k, v in d.items()
                                                       if k not in ("code", "name")}}


def _plan_definition(plan: Plan) -> dict[str, Any]:
    return {"code": plan.code, "name": plan.name, "interval": plan.interval,
            "amount_cents": plan.amount_cents, "amount_currency": plan.amount_currency,
            "pay_in_advance": plan.pay_in_advance,
            "bill_charges_monthly": plan.bill_charges_monthly,
            "invoice_display_name": plan.invoice_display_name, "description": plan.description,
            "charges": [c.to_dict() for c in plan.charges]}


async def _name_metrics(conn: Any, charges: object) -> None:
    """Lago clients name a charge's metric by `billable_metric_id` (its lago_id); the domain
    reads `billable_metric_code`."""
    if not isinstance(charges, list):
        return
    for charge in charges:
        if not isinstance(charge, dict) or charge.get("billable_metric_code"):
            continue
        metric_id = charge.get("billable_metric_id")
        if isinstance(metric_id, str) and metric_id:
            row = await repo.metric_by_id(conn, metric_id)
            if row is None:
                raise BillingNotFound("billable_metric", metric_id)
            charge["billable_metric_code"] = row["code"]


@_lago
async def create_plan(request: web.Request) -> web.Response:
    data = {k: v for k, v in _root(await read_json_object(request), "plan").items()
            if v is not None}
    async with _services(request).engine.begin() as conn:
        await _name_metrics(conn, data.get("charges"))
        plan = Plan.from_dict(data)
        codes = {c.billable_metric_code for c in plan.charges}
        if await repo.plan_by_code(conn, plan.code) is not None:
            raise BillingValidationError("code", "value_already_exist")
        rows = await repo.metrics_by_codes(conn, codes)
        plan.validate_metrics({code: BillableMetric.from_dict(r["definition"])
                               for code, r in rows.items()})
        row = await repo.insert_plan(conn, _plan_definition(plan))
    return json_response({"plan": _plan_json(row)})


@_lago
async def get_plan(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    async with _services(request).engine.connect() as conn:
        row = await repo.plan_by_code(conn, code)
    if row is None:
        raise BillingNotFound("plan", code)
    return json_response({"plan": _plan_json(row)})


# --- subscriptions -----------------------------------------------------------------------


def _subscription_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"lago_id": row["id"], "external_id": row["external_id"],
            "lago_customer_id": row.get("customer_id"),
            "external_customer_id": row["external_customer_id"], "plan_code": row["plan_code"],
            "name": row.get("name"), "status": row["status"], "billing_time": row["billing_time"],
            "subscription_at": _iso(row["subscription_at"]),
            "started_at": _iso(row.get("started_at") or row["subscription_at"]),
            "ending_at": _iso(row.get("ending_at")), "created_at": _iso(row["created_at"])}


@_lago
async def create_subscription(request: web.Request) -> web.Response:
    data = {k: v for k, v in _root(await read_json_object(request), "subscription").items()
            if v is not None}
    data.setdefault("subscription_at", datetime.now(UTC).isoformat())
    sub = Subscription.from_dict(data)
    async with _services(request).engine.begin() as conn:
        existing = await repo.subscription_by_external_id(conn, sub.external_id)
        if existing is not None:
            if existing["plan_code"] != sub.plan_code:
                raise BillingValidationError("external_id", "value_already_exist")
            return json_response({"subscription": _subscription_json(existing)})
        customer = await customers_repo.customer_by_external_id(conn, sub.external_customer_id)
        if customer is None:
            raise BillingNotFound("customer", sub.external_customer_id)
        if await repo.plan_by_code(conn, sub.plan_code) is None:
            raise BillingNotFound("plan", sub.plan_code)
        row = await repo.insert_subscription(conn, {
            "external_id": sub.external_id, "external_customer_id": sub.external_customer_id,
            "customer_id": customer["id"], "plan_code": sub.plan_code, "name": sub.name,
            "status": sub.status, "billing_time": sub.billing_time,
            "subscription_at": sub.subscription_at, "started_at": sub.started_at,
            "ending_at": sub.ending_at})
    event_catalog(_services(request)).add_subscription(row)
    return json_response({"subscription": _subscription_json(row)})


@_lago
async def list_subscriptions(request: web.Request) -> web.Response:
    external_customer_id = request.query.get("external_customer_id")
    async with _services(request).engine.connect() as conn:
        rows = await repo.list_subscriptions(conn, external_customer_id, limit=1000)
    return json_response({"subscriptions": [_subscription_json(r) for r in rows],
                          "meta": _meta(len(rows))})


# --- events ------------------------------------------------------------------------------


def event_catalog(services: Services) -> ingest.Catalog:
    """The cached metrics and subscriptions that events are validated against."""
    catalog = services.components.get("event_catalog")
    if catalog is None:
        catalog = services.components["event_catalog"] = ingest.Catalog(services.engine)
    return catalog


def _events_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload, option=orjson.OPT_UTC_Z), status=status,
                        content_type="application/json")


async def _event_error(services: Services, item: object, details: dict[str, list[str]]) -> None:
    """Lago's `event.error` webhook for a refused event (after the response is decided)."""
    error = {"status": 422, "error": "Unprocessable Entity",
             "message": orjson.dumps(details).decode(),
             "event": item if isinstance(item, dict) else {"value": item}}
    await services.webhooks.emit("event.error", "event_error", error)


@_lago
async def create_event(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    event = body.get("event")
    if not isinstance(event, dict):
        raise BillingValidationError("event", "value_is_mandatory")
    services = _services(request)
    catalog = event_catalog(services)
    rows, errors = await ingest.accept(catalog, services.writer, [event])
    if errors:
        await _event_error(services, event, errors["0"])
        field, codes = next(iter(errors["0"].items()))
        raise BillingValidationError(field, codes[0])
    return _events_response({"event": ingest.event_json(rows[0], catalog)})


@_lago
async def create_events_batch(request: web.Request) -> web.Response:
    """All or nothing, as in Lago: one invalid item refuses the batch (422 with the errors of
    each bad item by index) and none of it is stored, so a corrected batch can be re-sent."""
    body = await read_json_object(request)
    items = body.get("events")
    if not isinstance(items, list) or not items:
        raise BillingValidationError("events", "no_events")
    if len(items) > MAX_BATCH:
        raise BillingValidationError("events", "too_many_events")
    services = _services(request)
    catalog = event_catalog(services)
    rows, errors = await ingest.accept(catalog, services.writer, items)
    if errors:
        for index, details in errors.items():
            await _event_error(services, items[int(index)], details)
        return json_response({"status": 422, "error": "Unprocessable Entity",
                              "code": "validation_errors", "error_details": errors}, status=422)
    return _events_response({"events": [ingest.event_json(r, catalog) for r in rows]})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/customers", create_customer)
    r.add_get("/api/v1/customers", list_customers)
    r.add_get("/api/v1/customers/{external_id}", get_customer)
    r.add_post("/api/v1/billable_metrics", create_metric)
    r.add_get("/api/v1/billable_metrics", list_metrics)
    r.add_get("/api/v1/billable_metrics/{code}", get_metric)
    r.add_post("/api/v1/plans", create_plan)
    r.add_get("/api/v1/plans/{code}", get_plan)
    r.add_post("/api/v1/subscriptions", create_subscription)
    r.add_get("/api/v1/subscriptions", list_subscriptions)
    r.add_post("/api/v1/events/batch", create_events_batch)
    r.add_post("/api/v1/events", create_event)
