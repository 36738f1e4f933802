"""Lago v1 billing API: customers and billable metrics here, plus what the other Lago modules
(plans, subscriptions, events, invoices, usage) share: admin auth, Lago-shaped errors,
pagination. HTTP only: parse, validate with the billing domain, store, render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from faregate.api.common import bearer_key, json_response, read_json_object
from faregate.api.state import SERVICES, Services
from faregate.auth import repository as customers_repo
from faregate.billing import catalog_changes as changes
from faregate.billing import currencies, lago_json, unsupported
from faregate.billing import repository as repo
from faregate.billing.errors import BillingError, BillingNotFound, BillingValidationError
from faregate.billing.lago_subscription import subscription_object
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan, validate_charge
from faregate.metering import ingest
from faregate.policy.periods import is_timezone

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BATCH = 1000
MAX_PER_PAGE = 1000
# Plans read per query when a metric's update looks for the plans that charge it.
_PLANS_PER_READ = 1000
_REASONS = {
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
}


def lago_error(err: BillingError) -> web.Response:
    body: dict[str, Any] = {
        "status": err.status,
        "error": _REASONS.get(err.status, "Error"),
        "code": err.code,
    }
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
    return {
        "current_page": 1,
        "next_page": None,
        "prev_page": None,
        "total_pages": 1,
        "total_count": count,
    }


# The largest `page` taken: every page of every list starts at an offset a 64-bit integer
# holds (a larger one failed the query, a 500).
MAX_PAGE = 10**9


def query_int(
    request: web.Request,
    name: str,
    default: int,
    *,
    minimum: int = 1,
    maximum: int = MAX_PAGE,
    error: str = "value_is_invalid",
) -> int:
    """An integer query parameter in [minimum, maximum], else `{name: [error]}`. ASCII
    digits only: `str.isdigit` also takes '²', which `int` refuses (that was a 500)."""
    raw = request.query.get(name)
    if not raw:  # absent or empty
        return default
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= maximum:
        raise BillingValidationError(name, error)
    return int(raw)


def page_of(request: web.Request) -> tuple[int, int]:
    """Lago's `page` (from 1) and `per_page` (default 100, at most MAX_PER_PAGE)."""
    per_page = query_int(request, "per_page", 100, maximum=2**62)
    return query_int(request, "page", 1), min(per_page, MAX_PER_PAGE)


def page_meta(page: int, per_page: int, total: int) -> dict[str, Any]:
    """Lago's list `meta`: pages of `per_page` rows over `total` rows."""
    pages = max(1, -(-total // per_page))
    return {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


# --- customers ---------------------------------------------------------------------------


def _customer_json(row: dict[str, Any]) -> dict[str, Any]:
    created = _iso(row["created_at"])
    return {
        "lago_id": row["id"],
        "external_id": row["external_id"],
        "name": row.get("name"),
        "email": row.get("email"),
        "currency": row.get("currency"),
        "timezone": row.get("timezone"),
        "applicable_timezone": row.get("timezone") or "UTC",
        "created_at": created,
        "updated_at": created,
    }


def _customer_values(data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, size in (("name", 255), ("email", 255), ("currency", 3), ("timezone", 64)):
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > size:
            raise BillingValidationError(field, "value_is_invalid")
        if field == "timezone" and not is_timezone(value):
            raise BillingValidationError(field, "value_is_invalid")
        if field == "currency" and not currencies.is_currency_code(value):
            raise BillingValidationError(field, "value_is_invalid")  # as a plan's currency
        values[field] = value.upper() if field == "currency" else value
    return values


@_lago
async def create_customer(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "customer")
    external_id = lago_json.required_str(data, "external_id")
    values = _customer_values(data)
    async with _services(request).engine.begin() as conn:
        row = await customers_repo.customer_by_external_id(conn, external_id)
        if row is None:
            # Without a currency, as in Lago: its first subscription gives it the plan's.
            new = {"external_id": external_id, "currency": None, **values}
            try:
                async with conn.begin_nested():
                    row = await customers_repo.insert_customer(conn, new)
                return json_response({"customer": _customer_json(row)})
            except IntegrityError:
                # A concurrent create of the same customer committed first: this one updates
                # it, as if it had come second. A deleted customer keeps its external_id.
                row = await customers_repo.customer_by_external_id(conn, external_id)
                if row is None:
                    raise BillingValidationError("external_id", "value_already_exist") from None
        if values:
            if "currency" in values:
                held = await repo.lock_customer_currency(conn, row["id"])
                in_use = await repo.currencies_in_use(conn, external_id)
                currencies.check_currency_change(held, values["currency"], in_use)
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
    page, per_page = page_of(request)
    async with _services(request).engine.connect() as conn:
        rows = await customers_repo.list_customers(
            conn, limit=per_page, offset=(page - 1) * per_page
        )
        total = await customers_repo.count_customers(conn)
    return json_response(
        {"customers": [_customer_json(r) for r in rows], "meta": page_meta(page, per_page, total)}
    )


@_lago
async def delete_customer(request: web.Request) -> web.Response:
    """Lago's customer deletion: its subscriptions are terminated now (their final periods
    are invoiced by the next billing run), its API keys revoked, the customer soft-deleted."""
    external_id = request.match_info["external_id"]
    services = _services(request)
    now = datetime.now(UTC)
    async with services.engine.begin() as conn:
        row = await customers_repo.customer_by_external_id(conn, external_id)
        if row is None or not await customers_repo.delete_customer(conn, row["id"]):
            raise BillingNotFound("customer", external_id)  # or deleted meanwhile
        ended = await repo.terminate_all(conn, now, external_customer_id=external_id)
        for key in await customers_repo.list_keys(conn, row["id"]):
            await customers_repo.revoke_key(conn, key["id"])
    await announce_terminations(services, ended)
    return json_response({"customer": _customer_json(row)})


async def announce_terminations(
    services: Services, ended: Sequence[Mapping[str, Any] | None]
) -> None:
    """Lago's `subscription.terminated` for each subscription this request ended (None: one
    another request ended first, which announced it), once committed."""
    for row in ended:
        if row is not None:
            body = subscription_object(row)
            await services.webhooks.emit("subscription.terminated", "subscription", body)


# --- billable metrics --------------------------------------------------------------------


def _metric_json(row: dict[str, Any]) -> dict[str, Any]:
    d = row["definition"]
    return {
        "lago_id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "description": d.get("description"),
        "aggregation_type": d["aggregation_type"],
        "field_name": d.get("field_name"),
        "recurring": bool(d.get("recurring")),
        "rounding_function": d.get("rounding_function"),
        "rounding_precision": d.get("rounding_precision"),
        "weighted_interval": d.get("weighted_interval"),
        "expression": None,
        "filters": d.get("filters") or [],
        "created_at": _iso(row["created_at"]),
    }


@_lago
async def create_metric(request: web.Request) -> web.Response:
    data = _root(await read_json_object(request), "billable_metric")
    unsupported.check_metric(data)
    metric = BillableMetric.from_dict({k: v for k, v in data.items() if v is not None})
    async with _services(request).engine.begin() as conn:
        if await repo.metric_by_code(conn, metric.code) is not None:
            raise BillingValidationError("code", "value_already_exist")
        row = await repo.insert_metric(conn, changes.metric_json(metric))
    event_catalog(_services(request)).add_metric(metric)
    return json_response({"billable_metric": _metric_json(row)})


async def _live_metric(conn: Any, code: str) -> dict[str, Any]:
    row = await repo.metric_by_code(conn, code)
    if row is None or row.get("deleted_at") is not None:
        raise BillingNotFound("billable_metric", code)
    return row


@_lago
async def get_metric(request: web.Request) -> web.Response:
    async with _services(request).engine.connect() as conn:
        row = await _live_metric(conn, request.match_info["code"])
    return json_response({"billable_metric": _metric_json(row)})


@_lago
async def list_metrics(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    async with _services(request).engine.connect() as conn:
        rows, total = await repo.list_metrics(conn, limit=per_page, offset=(page - 1) * per_page)
    return json_response(
        {
            "billable_metrics": [_metric_json(r) for r in rows],
            "meta": page_meta(page, per_page, total),
        }
    )


async def _plans_charging(conn: Any, code: str) -> list[tuple[dict[str, Any], Plan]]:
    charging = []
    offset = 0
    while True:
        rows, _ = await repo.list_plans(
            conn, limit=_PLANS_PER_READ, offset=offset, include_deleted=True
        )
        for row in rows:
            plan = Plan.from_dict(row["definition"])
            if changes.charges_metric(plan, code):
                charging.append((row, plan))
        if len(rows) < _PLANS_PER_READ:
            return charging
        offset += len(rows)


@_lago
async def update_metric(request: web.Request) -> web.Response:
    """Lago's update: the fields given replace the stored ones. A metric charged by a plan
    keeps how it aggregates, and keeps every filter value a charge filter prices."""
    data = {
        k: v
        for k, v in _root(await read_json_object(request), "billable_metric").items()
        if v is not None
    }
    async with _services(request).engine.begin() as conn:
        row = await _live_metric(conn, request.match_info["code"])
        unsupported.check_metric(data, row["definition"])
        stored = BillableMetric.from_dict(row["definition"])
        charging = await _plans_charging(conn, stored.code)
        metric = changes.updated_metric(stored, data, charged=bool(charging))
        for _, plan in charging:
            for charge in plan.charges:
                if charge.billable_metric_code == metric.code:
                    validate_charge(charge, metric)
        definition = changes.metric_json(metric)
        await repo.update_metric_definition(conn, row["id"], definition)
    event_catalog(_services(request)).add_metric(metric)
    return json_response(
        {"billable_metric": _metric_json({**row, "name": metric.name, "definition": definition})}
    )


@_lago
async def delete_metric(request: web.Request) -> web.Response:
    """Lago's deletion: the metric is soft-deleted (its code stays taken, its events stored)
    and every plan's charges on it are removed, so current and later periods no longer bill
    it; finalized invoices are unchanged."""
    async with _services(request).engine.begin() as conn:
        row = await _live_metric(conn, request.match_info["code"])
        if not await repo.delete_metric(conn, row["id"]):  # a concurrent delete won
            raise BillingNotFound("billable_metric", row["code"])
        for plan_row, _ in await _plans_charging(conn, row["code"]):
            await repo.update_plan_definition(
                conn, plan_row["id"], changes.without_metric(plan_row["definition"], row["code"])
            )
    event_catalog(_services(request)).remove_metric(row["code"])
    return json_response({"billable_metric": _metric_json(row)})


def event_catalog(services: Services) -> ingest.Catalog:
    """The cached metrics and subscriptions that events are validated against."""
    catalog = services.components.get("event_catalog")
    if catalog is None:
        catalog = services.components["event_catalog"] = ingest.Catalog(services.engine)
    return catalog


def add_routes(app: web.Application) -> None:
    from faregate.api import events, plans, subscriptions  # they build on this module

    r = app.router
    r.add_post("/api/v1/customers", create_customer)
    r.add_get("/api/v1/customers", list_customers)
    r.add_get("/api/v1/customers/{external_id}", get_customer)
    r.add_delete("/api/v1/customers/{external_id}", delete_customer)
    r.add_post("/api/v1/billable_metrics", create_metric)
    r.add_get("/api/v1/billable_metrics", list_metrics)
    r.add_get("/api/v1/billable_metrics/{code}", get_metric)
    r.add_put("/api/v1/billable_metrics/{code}", update_metric)
    r.add_delete("/api/v1/billable_metrics/{code}", delete_metric)
    plans.add_routes(app)
    subscriptions.add_routes(app)
    events.add_routes(app)
