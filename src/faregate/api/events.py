"""Lago v1 events: ingest one or a batch (validated synchronously, durable before the answer)
and find one by transaction id. HTTP only: metering.ingest validates, the usage writer stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from faregate.api.billing import MAX_BATCH, _lago, _services, event_catalog
from faregate.api.common import json_response, read_json_object
from faregate.api.state import Services
from faregate.billing import repository as repo
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.metering import ingest


def _events_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload, option=orjson.OPT_UTC_Z),
        status=status,
        content_type="application/json",
    )


async def _event_error(services: Services, item: object, details: dict[str, list[str]]) -> None:
    """Lago's `event.error` webhook for a refused event (after the response is decided)."""
    error = {
        "status": 422,
        "error": "Unprocessable Entity",
        "message": orjson.dumps(details).decode(),
        "event": item if isinstance(item, dict) else {"value": item},
    }
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
        return json_response(
            {
                "status": 422,
                "error": "Unprocessable Entity",
                "code": "validation_errors",
                "error_details": errors,
            },
            status=422,
        )
    return _events_response({"events": [ingest.event_json(r, catalog) for r in rows]})


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


@_lago
async def get_event(request: web.Request) -> web.Response:
    """Lago's `GET /events/{transaction_id}`; `external_subscription_id=` picks the event when
    several subscriptions used the same transaction id (else the first stored). An event
    acknowledged here but not written yet is written first, so a find after a create works."""
    transaction_id = request.match_info["transaction_id"]
    subscription = request.query.get("external_subscription_id")
    services = _services(request)
    for attempt in range(2):
        async with services.engine.connect() as conn:
            found = await repo.events_by_transaction_id(conn, transaction_id, subscription)
        if found or attempt:
            break
        await services.writer.flush()
    if not found:
        raise BillingNotFound("event", transaction_id)
    row = found[0]
    catalog = event_catalog(services)
    await catalog.load(set(), {row["external_subscription_id"]})
    event = {
        **row,
        "timestamp": _utc(row["timestamp"]),
        "created_at": _utc(row["created_at"]),
        "precise_total_amount_cents": row.get("precise_total_amount_cents"),
    }
    return _events_response({"event": ingest.event_json(event, catalog)})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/events/batch", create_events_batch)
    r.add_post("/api/v1/events", create_event)
    r.add_get("/api/v1/events/{transaction_id}", get_event)
