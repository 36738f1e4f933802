"""Lago v1 plans (create, find, list, update, delete) for the official Lago clients. HTTP
only: the billing domain validates (plans, catalog_changes), the repository stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from faregate.api.billing import (
    _iso,
    _lago,
    _root,
    _services,
    announce_terminations,
    page_meta,
    page_of,
)
from faregate.api.common import json_response, read_json_object
from faregate.billing import catalog_changes as changes
from faregate.billing import repository as repo
from faregate.billing import unsupported
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan


async def _plan_json(conn: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Lago's plan object; each charge carries its `lago_id` and its metric's
    `lago_billable_metric_id`."""
    d = row["definition"]
    charges = d.get("charges") or []
    metric_ids = await repo.metric_ids_by_codes(conn, {c["billable_metric_code"] for c in charges})
    return {
        "lago_id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "created_at": _iso(row["created_at"]),
        **{k: v for k, v in d.items() if k not in ("code", "name", "charges")},
        "charges": [
            {
                "lago_id": changes.charge_id(row["id"], c["code"]),
                "lago_billable_metric_id": metric_ids.get(c["billable_metric_code"]),
                "created_at": _iso(row["created_at"]),
                **c,
            }
            for c in charges
        ],
    }


def _plan_definition(plan: Plan) -> dict[str, Any]:
    return {
        "code": plan.code,
        "name": plan.name,
        "interval": plan.interval,
        "amount_cents": plan.amount_cents,
        "amount_currency": plan.amount_currency,
        "pay_in_advance": plan.pay_in_advance,
        "bill_charges_monthly": plan.bill_charges_monthly,
        "invoice_display_name": plan.invoice_display_name,
        "description": plan.description,
        "charges": [c.to_dict() for c in plan.charges],
    }


async def _name_metrics(conn: Any, charges: object) -> None:
    """Lago clients name a charge's metric by `billable_metric_id` (its lago_id); the domain
    reads `billable_metric_code`. A deleted metric cannot be charged."""
    if not isinstance(charges, list):
        return
    for charge in charges:
        if not isinstance(charge, dict) or charge.get("billable_metric_code"):
            continue
        metric_id = charge.get("billable_metric_id")
        if isinstance(metric_id, str) and metric_id:
            row = await repo.metric_by_id(conn, metric_id)
            if row is None or row.get("deleted_at") is not None:
                raise BillingNotFound("billable_metric", metric_id)
            charge["billable_metric_code"] = row["code"]


async def _validated(conn: Any, data: dict[str, Any]) -> Plan:
    """The plan of this Lago JSON, its charges checked against their (live) metrics."""
    await _name_metrics(conn, data.get("charges"))
    plan = Plan.from_dict(data)
    rows = await repo.metrics_by_codes(conn, {c.billable_metric_code for c in plan.charges})
    plan.validate_metrics(
        {
            code: BillableMetric.from_dict(r["definition"])
            for code, r in rows.items()
            if r.get("deleted_at") is None
        }
    )
    return plan


def _body(data: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in _root(data, "plan").items() if v is not None}
    unsupported.check_plan(body)
    return body


async def _live_plan(conn: Any, code: str) -> dict[str, Any]:
    row = await repo.plan_by_code(conn, code)
    if row is None or row.get("deleted_at") is not None:
        raise BillingNotFound("plan", code)
    return row


@_lago
async def create_plan(request: web.Request) -> web.Response:
    data = _body(await read_json_object(request))
    async with _services(request).engine.begin() as conn:
        plan = await _validated(conn, data)
        if await repo.plan_by_code(conn, plan.code) is not None:
            raise BillingValidationError("code", "value_already_exist")
        row = await repo.insert_plan(conn, _plan_definition(plan))
        body = await _plan_json(conn, row)
    return json_response({"plan": body})


@_lago
async def get_plan(request: web.Request) -> web.Response:
    async with _services(request).engine.connect() as conn:
        row = await _live_plan(conn, request.match_info["code"])
        body = await _plan_json(conn, row)
    return json_response({"plan": body})


@_lago
async def list_plans(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    async with _services(request).engine.connect() as conn:
        rows, total = await repo.list_plans(conn, limit=per_page, offset=(page - 1) * per_page)
        plans = [await _plan_json(conn, row) for row in rows]
    return json_response({"plans": plans, "meta": page_meta(page, per_page, total)})


@_lago
async def update_plan(request: web.Request) -> web.Response:
    """Lago's update: given fields replace stored ones, given `charges` replace them all.
    Invoices not finalized yet and current usage use the new prices at once."""
    data = _body(await read_json_object(request))
    async with _services(request).engine.begin() as conn:
        row = await _live_plan(conn, request.match_info["code"])
        _, subscribed = await repo.list_subscriptions(conn, plan_code=row["code"], limit=1)
        merged = changes.updated_plan(row["id"], row["definition"], data, subscribed=subscribed > 0)
        plan = await _validated(conn, merged)
        definition = _plan_definition(plan)
        await repo.update_plan_definition(conn, row["id"], definition)
        body = await _plan_json(conn, {**row, "name": plan.name, "definition": definition})
    return json_response({"plan": body})


@_lago
async def delete_plan(request: web.Request) -> web.Response:
    """Lago's deletion: the plan's subscriptions are terminated now (the next billing run
    invoices their final partial periods) and the plan is soft-deleted (its code stays
    taken)."""
    now = datetime.now(UTC)
    async with _services(request).engine.begin() as conn:
        row = await _live_plan(conn, request.match_info["code"])
        # Deleted first: of concurrent deletes, the one that deletes it terminates its
        # subscriptions; the others find it gone, as after a delete (404).
        if not await repo.delete_plan(conn, row["id"]):
            raise BillingNotFound("plan", row["code"])
        ended = await repo.terminate_all(conn, now, plan_code=row["code"])
        body = await _plan_json(conn, row)
    await announce_terminations(_services(request), ended)
    return json_response({"plan": body})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/plans", create_plan)
    r.add_get("/api/v1/plans", list_plans)
    r.add_get("/api/v1/plans/{code}", get_plan)
    r.add_put("/api/v1/plans/{code}", update_plan)
    r.add_delete("/api/v1/plans/{code}", delete_plan)
