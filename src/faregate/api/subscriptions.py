"""Lago v1 subscriptions (create, find, list, update, terminate) for the official Lago
clients. HTTP only: the billing domain validates, the repository stores."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from faregate.api.billing import (
    _lago,
    _root,
    _services,
    announce_terminations,
    event_catalog,
    page_meta,
    page_of,
)
from faregate.api.common import json_response, read_json_object
from faregate.auth import repository as customers_repo
from faregate.billing import currencies, lago_json, unsupported
from faregate.billing import repository as repo
from faregate.billing.billed import subscription_of_row
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.lago_subscription import subscription_object
from faregate.billing.plans import Subscription

STATUSES = ("pending", "active", "terminated", "canceled")


@_lago
async def create_subscription(request: web.Request) -> web.Response:
    data = {
        k: v
        for k, v in _root(await read_json_object(request), "subscription").items()
        if v is not None
    }
    unsupported.check_subscription(data)
    now = datetime.now(UTC)
    data.setdefault("subscription_at", now.isoformat())
    sub = Subscription.from_dict(data)
    # Lago: a subscription starting in the future is pending until then (the billing run
    # activates it), and the default list and a customer's keys only see active ones.
    status = "pending" if sub.subscription_at > now else "active"
    async with _services(request).engine.begin() as conn:
        # Only a live subscription holds its external_id: a terminated or canceled one's is
        # taken by a new subscription (Lago's rule).
        existing = await repo.subscription_by_external_id(conn, sub.external_id, live_only=True)
        if existing is not None:
            return _resent(existing, sub)
        sub = _after_earlier(await repo.subscription_by_external_id(conn, sub.external_id), sub)
        customer = await customers_repo.customer_by_external_id(conn, sub.external_customer_id)
        if customer is None:
            raise BillingNotFound("customer", sub.external_customer_id)
        plan = await repo.plan_by_code(conn, sub.plan_code)
        if plan is None or plan.get("deleted_at") is not None:
            raise BillingNotFound("plan", sub.plan_code)
        await _bill_in_plan_currency(conn, customer, plan)
        try:
            async with conn.begin_nested():
                row = await _insert(conn, sub, customer, status)
        except BillingValidationError:
            # A concurrent create of the same id committed first: answered as a resend.
            existing = await repo.subscription_by_external_id(conn, sub.external_id, live_only=True)
            if existing is None:
                raise
            return _resent(existing, sub)
    event_catalog(_services(request)).add_subscription(row)
    body = subscription_object(row)
    if status == "active":  # Lago's activation webhook, also for one active at once
        await _services(request).webhooks.emit("subscription.started", "subscription", body)
    return json_response({"subscription": body})


def _after_earlier(earlier: dict[str, Any] | None, sub: Subscription) -> Subscription:
    """A subscription taking the external_id of one that ended after its `subscription_at`
    starts when that one ended, as Lago's does (lago-api#6139): the days and the usage both
    would bill are the earlier one's."""
    ended = earlier and (earlier.get("terminated_at") or earlier.get("canceled_at"))
    if not ended:
        return sub
    ended = ended.replace(tzinfo=UTC) if ended.utcoffset() is None else ended
    if (sub.started_at or sub.subscription_at) >= ended:
        return sub
    return replace(sub, started_at=ended)


def _resent(existing: dict[str, Any], sub: Subscription) -> web.Response:
    """A resend of the same subscription answers it again; the id taken by another
    customer's subscription, or by another plan, is refused as Lago does."""
    same = (existing["external_customer_id"], existing["plan_code"]) == (
        sub.external_customer_id,
        sub.plan_code,
    )
    if not same:
        raise BillingValidationError("external_id", "value_already_exist")
    return json_response({"subscription": subscription_object(existing)})


async def _insert(
    conn: Any, sub: Subscription, customer: dict[str, Any], status: str
) -> dict[str, Any]:
    return await repo.insert_subscription(
        conn,
        {
            "external_id": sub.external_id,
            "external_customer_id": sub.external_customer_id,
            "customer_id": customer["id"],
            "plan_code": sub.plan_code,
            "name": sub.name,
            "status": status,
            "billing_time": sub.billing_time,
            "subscription_at": sub.subscription_at,
            "started_at": sub.started_at,
            "ending_at": sub.ending_at,
        },
    )


async def _bill_in_plan_currency(conn: Any, customer: dict[str, Any], plan: dict[str, Any]) -> None:
    """The customer bills in the plan's currency: one without a currency takes it, one in
    another currency is refused (Lago's currencies_does_not_match)."""
    held = await repo.lock_customer_currency(conn, customer["id"])
    in_use = await repo.currencies_in_use(conn, customer["external_id"])
    plan_currency = str(plan["definition"]["amount_currency"]).upper()
    currency = currencies.currency_of_subscriber(held, plan_currency, in_use)
    if currency != held:
        await customers_repo.update_customer(conn, customer["id"], {"currency": currency})


def _statuses(request: web.Request) -> tuple[str, ...]:
    """Lago's `status[]` filter; without one, only active subscriptions are listed."""
    wanted = tuple(request.query.getall("status[]", ())) or tuple(
        request.query.getall("status", ())
    )
    if any(status not in STATUSES for status in wanted):
        raise BillingValidationError("status", "value_is_invalid")
    return wanted or ("active",)


@_lago
async def list_subscriptions(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    async with _services(request).engine.connect() as conn:
        rows, total = await repo.list_subscriptions(
            conn,
            request.query.get("external_customer_id"),
            limit=per_page,
            offset=(page - 1) * per_page,
            statuses=_statuses(request),
            plan_code=request.query.get("plan_code"),
        )
    return json_response(
        {
            "subscriptions": [subscription_object(r) for r in rows],
            "meta": page_meta(page, per_page, total),
        }
    )


async def _subscription(conn: Any, external_id: str) -> dict[str, Any]:
    row = await repo.subscription_by_external_id(conn, external_id)
    if row is None:
        raise BillingNotFound("subscription", external_id)
    return row


@_lago
async def get_subscription(request: web.Request) -> web.Response:
    async with _services(request).engine.connect() as conn:
        row = await _subscription(conn, request.match_info["external_id"])
    return json_response({"subscription": subscription_object(row)})


@_lago
async def update_subscription(request: web.Request) -> web.Response:
    """Lago's update of `name` and `ending_at` (billing stops there; the next billing run
    after it invoices the final partial period). A terminated subscription is not edited."""
    data = _root(await read_json_object(request), "subscription")
    unsupported.check_subscription(data)
    async with _services(request).engine.begin() as conn:
        row = await _subscription(conn, request.match_info["external_id"])
        if row["status"] in ("terminated", "canceled"):
            raise BillingValidationError("status", "subscription_terminated")
        values: dict[str, Any] = {}
        if data.get("name") is not None:
            values["name"] = lago_json.optional_str(data, "name")
        if "ending_at" in data:
            ending_at = lago_json.timestamp(data, "ending_at")
            if ending_at is not None and ending_at.utcoffset() is None:
                raise BillingValidationError("ending_at", "invalid_format")
            if ending_at is not None and ending_at <= datetime.now(UTC):
                raise BillingValidationError("ending_at", "invalid_date")
            values["ending_at"] = ending_at
        subscription_of_row({**row, **values})  # the domain's checks (timezone, after start)
        if values:
            await repo.update_subscription(conn, row["id"], values)
    return json_response({"subscription": subscription_object({**row, **values})})


@_lago
async def terminate_subscription(request: web.Request) -> web.Response:
    """Lago's `DELETE /subscriptions/{external_id}`: terminated now (a pending one canceled);
    usage and the prorated fee up to now are invoiced by the next billing run. Terminating
    again changes nothing. The request that ends it sends Lago's `subscription.terminated`
    (for a canceled one too, as Lago's TerminateService does)."""
    ended = None
    async with _services(request).engine.begin() as conn:
        for _ in range(3):  # again when a concurrent change (activation) beat this one
            row = await _subscription(conn, request.match_info["external_id"])
            if row["status"] not in ("active", "pending"):
                break
            ended = await repo.terminate_subscription(conn, row, datetime.now(UTC))
            if ended is not None:
                row = ended
                break
    await announce_terminations(_services(request), [ended])
    return json_response({"subscription": subscription_object(row)})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/subscriptions", create_subscription)
    r.add_get("/api/v1/subscriptions", list_subscriptions)
    r.add_get("/api/v1/subscriptions/{external_id}", get_subscription)
    r.add_put("/api/v1/subscriptions/{external_id}", update_subscription)
    r.add_delete("/api/v1/subscriptions/{external_id}", terminate_subscription)
