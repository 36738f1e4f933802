"""Lago v1 webhook endpoints (`/api/v1/webhook_endpoints`: one per URL, subscribed to types
Lago knows) and the delivery log (`/api/v1/webhooks`, a faregate extension: what was sent
where, each attempt's outcome)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import delete, false, func, select, update
from sqlalchemy.exc import IntegrityError

from faregate.api.billing import _iso, _lago, _meta, _root, query_int
from faregate.api.common import json_response, read_json_object
from faregate.api.state import SERVICES
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.store.tables.webhooks import webhook_endpoints
from faregate.webhooks import Webhooks, event_types
from faregate.webhooks.signing import ALGORITHM

_DELIVERY_STATUSES = {"pending", "succeeded", "failed"}
# Lago's `WebhookEndpoint::LIMIT`: endpoints an organization may create (422 `base:
# exceeded_limit` past it). Endpoints from the configuration file are not counted.
ENDPOINT_LIMIT = 10
# Held by a create while it counts and inserts (PostgreSQL), so racing creates on several
# replicas cannot pass the limit together.
_CREATE_LOCK = 0x66672D77686B  # "fg-whk"


def _webhooks(request: web.Request) -> Webhooks:
    return request.app[SERVICES].webhooks


def _endpoint_json(row: dict[str, Any], organization_id: str) -> dict[str, Any]:
    return {
        "lago_id": row["id"],
        "lago_organization_id": organization_id,
        "webhook_url": row["webhook_url"],
        "name": row.get("name"),
        "signature_algo": row["signature_algo"],
        "event_types": row.get("event_types"),
        "created_at": _iso(row["created_at"]),
    }


def _endpoint_values(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    url = data.get("webhook_url")
    if url is not None or creating:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BillingValidationError("webhook_url", "url_is_invalid")
        if len(url) >= 2048:
            raise BillingValidationError("webhook_url", "value_is_too_long")
        values["webhook_url"] = url
    algo = data.get("signature_algo")
    if algo is not None and algo != ALGORITHM:
        raise BillingValidationError(
            "signature_algo", "value_is_invalid", "signature_algo: only 'hmac' is supported"
        )
    if creating:
        values["signature_algo"] = ALGORITHM
    if "name" in data:
        name = data["name"]
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise BillingValidationError("name", "value_is_invalid")
        values["name"] = name
    if "event_types" in data:
        values["event_types"] = _event_types(data["event_types"])
    return values


def _event_types(value: object) -> list[str] | None:
    """Lago's reading (trimmed, lower-cased, without blanks or repeats; `["*"]` is every type)
    and Lago's 422s for a list that is not one or names a type that does not exist. None:
    every type (also an empty list, as faregate has always read it)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise BillingValidationError("event_types", "Must be an array")
    types = event_types.normalized(value)
    if types == [event_types.EVERY]:
        return None
    unknown = event_types.unknown(types)
    if unknown:
        raise BillingValidationError("event_types", event_types.invalid_types_message(unknown))
    return types or None


async def _refuse_taken_url(conn: Any, url: str | None, other_than: str | None = None) -> None:
    """Lago: one endpoint per URL (422 `webhook_url: value_already_exist`)."""
    if url is None:
        return
    query = select(webhook_endpoints.c.id).where(webhook_endpoints.c.webhook_url == url)
    if other_than is not None:
        query = query.where(webhook_endpoints.c.id != other_than)
    if (await conn.execute(query.limit(1))).first() is not None:
        raise BillingValidationError("webhook_url", "value_already_exist")


async def _refuse_past_limit(conn: Any) -> None:
    """Lago: at most ENDPOINT_LIMIT endpoints (422 `base: exceeded_limit`)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_CREATE_LOCK)))
    else:  # a write that changes nothing takes SQLite's one write lock before the count
        await conn.execute(
            update(webhook_endpoints).where(false()).values(name=webhook_endpoints.c.name)
        )
    count = (await conn.execute(select(func.count()).select_from(webhook_endpoints))).scalar()
    if count >= ENDPOINT_LIMIT:
        raise BillingValidationError("base", "exceeded_limit")


async def _write(conn: Any, statement: Any) -> None:
    """Run an insert or update of an endpoint; the unique index on the URL refusing it (a
    concurrent request took the URL first) is the same 422."""
    try:
        async with conn.begin_nested():
            await conn.execute(statement)
    except IntegrityError:
        raise BillingValidationError("webhook_url", "value_already_exist") from None


async def _endpoint_row(request: web.Request, conn: Any) -> dict[str, Any]:
    lago_id = request.match_info["lago_id"]
    row = (
        (await conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == lago_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise BillingNotFound("webhook_endpoint", lago_id)
    return dict(row)


@_lago
async def create_endpoint(request: web.Request) -> web.Response:
    values = _endpoint_values(
        _root(await read_json_object(request), "webhook_endpoint"), creating=True
    )
    row = {
        "id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC),
        "name": None,
        "event_types": None,
        **values,
    }
    hooks = _webhooks(request)
    async with hooks.engine.begin() as conn:
        await _refuse_past_limit(conn)
        await _refuse_taken_url(conn, row["webhook_url"])
        await _write(conn, webhook_endpoints.insert().values(**row))
    await hooks.reload_endpoints()
    return json_response({"webhook_endpoint": _endpoint_json(row, hooks.config.organization_id)})


@_lago
async def list_endpoints(request: web.Request) -> web.Response:
    hooks = _webhooks(request)
    async with hooks.engine.connect() as conn:
        rows = (
            (await conn.execute(select(webhook_endpoints).order_by(webhook_endpoints.c.created_at)))
            .mappings()
            .all()
        )
    items = [_endpoint_json(dict(r), hooks.config.organization_id) for r in rows]
    return json_response({"webhook_endpoints": items, "meta": _meta(len(items))})


@_lago
async def get_endpoint(request: web.Request) -> web.Response:
    hooks = _webhooks(request)
    async with hooks.engine.connect() as conn:
        row = await _endpoint_row(request, conn)
    return json_response({"webhook_endpoint": _endpoint_json(row, hooks.config.organization_id)})


@_lago
async def update_endpoint(request: web.Request) -> web.Response:
    values = _endpoint_values(
        _root(await read_json_object(request), "webhook_endpoint"), creating=False
    )
    hooks = _webhooks(request)
    async with hooks.engine.begin() as conn:
        row = await _endpoint_row(request, conn)
        if values:
            await _refuse_taken_url(conn, values.get("webhook_url"), other_than=row["id"])
            await _write(
                conn,
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == row["id"])
                .values(**values),
            )
    await hooks.reload_endpoints()
    return json_response(
        {"webhook_endpoint": _endpoint_json({**row, **values}, hooks.config.organization_id)}
    )


@_lago
async def delete_endpoint(request: web.Request) -> web.Response:
    hooks = _webhooks(request)
    async with hooks.engine.begin() as conn:
        row = await _endpoint_row(request, conn)
        await conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == row["id"]))
    await hooks.reload_endpoints()
    return json_response({"webhook_endpoint": _endpoint_json(row, hooks.config.organization_id)})


def delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "lago_id": row["id"],
        "lago_webhook_endpoint_id": row["endpoint_id"],
        "webhook_url": row["webhook_url"],
        "webhook_type": row["webhook_type"],
        "object_type": row["object_type"],
        "status": row["status"],
        "retries": max(0, row["attempts"] - 1),
        "attempts": row["attempts"],
        "http_status": row["last_http_status"],
        "last_error": row["last_error"],
        "created_at": _iso(row["created_at"]),
        "delivered_at": _iso(row["delivered_at"]),
    }


@_lago
async def list_deliveries(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in _DELIVERY_STATUSES:
        raise BillingValidationError("status", "value_is_invalid")
    limit = min(1000, query_int(request, "per_page", 100, maximum=2**62))
    rows = await _webhooks(request).deliveries(
        status=status, webhook_type=request.query.get("webhook_type"), limit=limit
    )
    items = [delivery_json(r) for r in rows]
    return json_response({"webhooks": items, "meta": _meta(len(items))})


@_lago
async def retry_delivery(request: web.Request) -> web.Response:
    lago_id = request.match_info["lago_id"]
    if await _webhooks(request).retry([lago_id]) == 0:
        raise BillingNotFound("webhook", lago_id)
    return json_response({"webhook": {"lago_id": lago_id, "status": "pending"}})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/webhook_endpoints", create_endpoint)
    r.add_get("/api/v1/webhook_endpoints", list_endpoints)
    r.add_get("/api/v1/webhook_endpoints/{lago_id}", get_endpoint)
    r.add_put("/api/v1/webhook_endpoints/{lago_id}", update_endpoint)
    r.add_delete("/api/v1/webhook_endpoints/{lago_id}", delete_endpoint)
    r.add_get("/api/v1/webhooks", list_deliveries)
    r.add_post("/api/v1/webhooks/{lago_id}/retry", retry_delivery)
