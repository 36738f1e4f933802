"""All queries on billable metrics, plans, subscriptions and usage events (SQLAlchemy Core),
and the period aggregation invoices read. Callers own the transaction boundaries; validation
lives in the billing domain."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.aggregate import Aggregate
from faregate.billing.charges import BucketKey
from faregate.billing.errors import BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period
from faregate.billing.plans import Plan, Subscription
from faregate.billing.subscription_order import LIVE_STATUSES, current_first
from faregate.metering import aggregates, derived, rollups
from faregate.store.soft_delete import soft_delete
from faregate.store.tables.billing import billable_metrics, invoices, plans, subscriptions
from faregate.store.tables.gateway import customers
from faregate.store.tables.metering import events
from faregate.store.tables.wallets import wallets

# Subscriptions ended per query when a customer or a plan is deleted (`terminate_all`).
TERMINATION_BATCH = 1000


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


async def _insert_unique(conn: AsyncConnection, stmt: Any, field: str) -> None:
    """Run an insert; a unique-key clash (a concurrent create) is Lago's value_already_exist."""
    try:
        await conn.execute(stmt)
    except IntegrityError:
        raise BillingValidationError(field, "value_already_exist") from None


async def _one(conn: AsyncConnection, query: Any) -> dict[str, Any] | None:
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def insert_metric(conn: AsyncConnection, definition: dict[str, Any]) -> dict[str, Any]:
    row = {
        "id": new_id(),
        "created_at": _now(),
        "code": definition["code"],
        "name": definition["name"],
        "aggregation_type": definition["aggregation_type"],
        "definition": definition,
    }
    await _insert_unique(conn, billable_metrics.insert().values(**row), "code")
    # Events may have arrived before their metric (gateway events): roll them up now.
    await rollups.rebuild(conn, BillableMetric.from_dict(definition))
    return row


async def update_metric_definition(
    conn: AsyncConnection, metric_id: str, definition: dict[str, Any]
) -> None:
    before = await metric_by_id(conn, metric_id)
    await conn.execute(
        update(billable_metrics)
        .where(billable_metrics.c.id == metric_id)
        .values(
            definition=definition,
            name=definition["name"],
            aggregation_type=definition["aggregation_type"],
        )
    )
    metric = BillableMetric.from_dict(definition)
    if before is None or rollups.MetricSpec.of(
        BillableMetric.from_dict(before["definition"])
    ) != rollups.MetricSpec.of(metric):
        await rollups.rebuild(conn, metric)  # new filter keys: the rollups' dims change


async def metric_by_code(conn: AsyncConnection, code: str) -> dict[str, Any] | None:
    return await _one(conn, select(billable_metrics).where(billable_metrics.c.code == code))


async def metric_by_id(conn: AsyncConnection, metric_id: str) -> dict[str, Any] | None:
    return await _one(conn, select(billable_metrics).where(billable_metrics.c.id == metric_id))


async def metrics_by_codes(conn: AsyncConnection, codes: set[str]) -> dict[str, dict[str, Any]]:
    if not codes:
        return {}
    rows = await conn.execute(select(billable_metrics).where(billable_metrics.c.code.in_(codes)))
    return {r["code"]: dict(r) for r in rows.mappings()}


async def _page(
    conn: AsyncConnection, query: Any, order: Any, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of `query` in `order`, ties in the primary key's order (so that pages of
    rows made in one instant neither repeat nor skip a row), and how many rows the whole
    query has."""
    total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    ties = [column for column in query.selected_columns if column.primary_key]
    rows = await conn.execute(query.order_by(order, *ties).limit(limit).offset(offset))
    return [dict(r) for r in rows.mappings()], int(total)


async def list_metrics(
    conn: AsyncConnection, limit: int = 100, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """A page of the metrics not deleted, oldest first, and their total count."""
    query = select(billable_metrics).where(billable_metrics.c.deleted_at.is_(None))
    return await _page(conn, query, billable_metrics.c.created_at, limit, offset)


async def delete_metric(conn: AsyncConnection, metric_id: str) -> bool:
    """Soft-delete a metric (its code stays taken, its events stay stored); False when
    another request deleted it first."""
    return await soft_delete(conn, billable_metrics, metric_id)


async def metric_ids_by_codes(conn: AsyncConnection, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    query = select(billable_metrics.c.code, billable_metrics.c.id).where(
        billable_metrics.c.code.in_(codes)
    )
    return {code: metric_id for code, metric_id in await conn.execute(query)}


async def lock_customer_currency(conn: AsyncConnection, customer_id: str) -> str | None:
    """The customer's currency, its row held until the transaction ends so that the currency
    and what is billed in it change one at a time (PostgreSQL; SQLite has one writer)."""
    query = select(customers.c.currency).where(customers.c.id == customer_id).with_for_update()
    currency = (await conn.execute(query)).scalar()
    return str(currency).upper() if currency else None


async def currencies_in_use(conn: AsyncConnection, external_customer_id: str) -> set[str]:
    """The currencies of a customer's subscriptions (their plans'), wallets and invoices,
    whatever their status."""
    plan_codes = select(subscriptions.c.plan_code).where(
        subscriptions.c.external_customer_id == external_customer_id
    )
    used = {
        str(definition.get("amount_currency", "")).upper()
        for (definition,) in await conn.execute(
            select(plans.c.definition).where(plans.c.code.in_(plan_codes))
        )
    }
    for table in (wallets, invoices):
        query = select(table.c.currency).where(table.c.external_customer_id == external_customer_id)
        used |= {
            str(currency).upper() for currency in (await conn.execute(query.distinct())).scalars()
        }
    return used - {""}


async def insert_plan(conn: AsyncConnection, definition: dict[str, Any]) -> dict[str, Any]:
    row = {
        "id": new_id(),
        "created_at": _now(),
        "code": definition["code"],
        "name": definition["name"],
        "definition": definition,
    }
    await _insert_unique(conn, plans.insert().values(**row), "code")
    return row


async def plan_by_code(conn: AsyncConnection, code: str) -> dict[str, Any] | None:
    """The plan with this code, deleted or not (a deleted plan still invoices the final
    periods of its terminated subscriptions)."""
    return await _one(conn, select(plans).where(plans.c.code == code))


async def list_plans(
    conn: AsyncConnection, limit: int = 100, offset: int = 0, *, include_deleted: bool = False
) -> tuple[list[dict[str, Any]], int]:
    query = select(plans)
    if not include_deleted:
        query = query.where(plans.c.deleted_at.is_(None))
    return await _page(conn, query, plans.c.created_at, limit, offset)


async def update_plan_definition(
    conn: AsyncConnection, plan_id: str, definition: dict[str, Any]
) -> None:
    await conn.execute(
        update(plans)
        .where(plans.c.id == plan_id)
        .values(definition=definition, name=definition["name"])
    )


async def delete_plan(conn: AsyncConnection, plan_id: str) -> bool:
    """Soft-delete a plan; False when another request deleted it first."""
    return await soft_delete(conn, plans, plan_id)


async def insert_subscription(conn: AsyncConnection, values: dict[str, Any]) -> dict[str, Any]:
    row = {"id": new_id(), "created_at": _now(), **values}
    await _insert_unique(conn, subscriptions.insert().values(**row), "external_id")
    return row


def _by_external_id(
    query: Any, external_id: str, external_customer_id: str | None, live_only: bool
) -> Any:
    query = query.where(subscriptions.c.external_id == external_id)
    if external_customer_id is not None:
        query = query.where(subscriptions.c.external_customer_id == external_customer_id)
    if live_only:
        query = query.where(subscriptions.c.status.in_(LIVE_STATUSES))
    return query.order_by(*current_first()).limit(1)


async def subscription_by_external_id(
    conn: AsyncConnection,
    external_id: str,
    *,
    external_customer_id: str | None = None,
    live_only: bool = False,
) -> dict[str, Any] | None:
    """The subscription `external_id` means (of that customer when one is given): the live
    (pending or active) one, else the most recent terminated or canceled one; with
    `live_only`, only a live one."""
    query = _by_external_id(select(subscriptions), external_id, external_customer_id, live_only)
    return await _one(conn, query)


async def subscription_by_id(conn: AsyncConnection, subscription_id: str) -> dict[str, Any] | None:
    return await _one(conn, select(subscriptions).where(subscriptions.c.id == subscription_id))


async def subscription_and_plan(
    conn: AsyncConnection, external_id: str, *, external_customer_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The subscription `external_id` means (see `subscription_by_external_id`) and its
    plan's row (None when the plan is gone), in one query."""
    query = _by_external_id(
        select(
            subscriptions, plans.c.id.label("plan_id"), plans.c.definition.label("plan_def")
        ).outerjoin(plans, plans.c.code == subscriptions.c.plan_code),
        external_id,
        external_customer_id,
        live_only=False,
    )
    row = await _one(conn, query)
    if row is None:
        return None
    plan_id, definition = row.pop("plan_id"), row.pop("plan_def")
    return row, None if plan_id is None else {"id": plan_id, "definition": definition}


async def subscriptions_by_external_ids(
    conn: AsyncConnection, external_ids: set[str]
) -> dict[str, dict[str, Any]]:
    """The subscription each external_id means (see `subscription_by_external_id`)."""
    if not external_ids:
        return {}
    rows = await conn.execute(
        select(subscriptions)
        .where(subscriptions.c.external_id.in_(external_ids))
        .order_by(*current_first())
    )
    found: dict[str, dict[str, Any]] = {}
    for r in rows.mappings():
        found.setdefault(r["external_id"], dict(r))
    return found


async def list_subscriptions(
    conn: AsyncConnection,
    external_customer_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    *,
    statuses: Sequence[str] = (),
    plan_code: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of subscriptions, oldest first, and their total count (every status when
    `statuses` is empty)."""
    query = select(subscriptions)
    if external_customer_id:
        query = query.where(subscriptions.c.external_customer_id == external_customer_id)
    if statuses:
        query = query.where(subscriptions.c.status.in_(statuses))
    if plan_code:
        query = query.where(subscriptions.c.plan_code == plan_code)
    return await _page(conn, query, subscriptions.c.created_at, limit, offset)


async def update_subscription(
    conn: AsyncConnection, subscription_id: str, values: Mapping[str, Any]
) -> None:
    await conn.execute(
        update(subscriptions).where(subscriptions.c.id == subscription_id).values(**values)
    )


async def terminate_subscription(
    conn: AsyncConnection, row: Mapping[str, Any], at: datetime
) -> dict[str, Any] | None:
    """Lago's termination: status terminated, billing ends at `at` (or at the earlier
    `ending_at`), so the next billing run invoices the final partial period. A pending
    subscription (not started yet) is canceled instead (`canceled_at` = `at`), and never
    billed. Returns the row as it now is, or None when it no longer had `row`'s status
    (another request or replica ended or activated it first): of concurrent terminations,
    one changes the row, and only that one announces it."""
    if row["status"] == "pending":
        values: dict[str, Any] = {"status": "canceled", "canceled_at": at}
    else:
        ending = row.get("ending_at")
        ending_at = at if ending is None or _utc(ending) > at else _utc(ending)
        values = {"status": "terminated", "terminated_at": at, "ending_at": ending_at}
    result = await conn.execute(
        update(subscriptions)
        .where(subscriptions.c.id == row["id"], subscriptions.c.status == row["status"])
        .values(**values)
    )
    return {**row, **values} if result.rowcount else None


async def terminate_all(
    conn: AsyncConnection,
    at: datetime,
    *,
    external_customer_id: str | None = None,
    plan_code: str | None = None,
) -> list[dict[str, Any]]:
    """Every active or pending subscription of a customer or of a plan ended at `at`
    (`terminate_subscription`), a batch at a time, however many there are; returns the
    rows this call changed. A batch in which every row was changed elsewhere meanwhile ends
    the loop, so it cannot spin on rows it does not get to change."""
    if not (external_customer_id or plan_code):  # never every subscription there is
        raise ValueError("terminate_all needs a customer or a plan")
    ended: list[dict[str, Any]] = []
    while True:
        rows, _ = await list_subscriptions(
            conn,
            external_customer_id,
            TERMINATION_BATCH,
            statuses=("active", "pending"),
            plan_code=plan_code,
        )
        changed = [await terminate_subscription(conn, row, at) for row in rows]
        ended += [row for row in changed if row is not None]
        if len(rows) < TERMINATION_BATCH or not any(changed):
            return ended


async def terminate_ended(conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
    """Mark active subscriptions whose `ending_at` has passed as terminated at `ending_at`
    (Lago terminates a subscription at its ending date); returns them as now stored, each
    by the one billing run (of several replicas') that terminated it."""
    query = select(subscriptions).where(
        subscriptions.c.status == "active",
        subscriptions.c.ending_at.is_not(None),
        subscriptions.c.ending_at <= now,
    )
    ended = []
    for row in [dict(r) for r in (await conn.execute(query)).mappings()]:
        terminated = await terminate_subscription(conn, row, _utc(row["ending_at"]))
        if terminated is not None:
            ended.append(terminated)
    return ended


async def activate_started(conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
    """Mark pending subscriptions whose `subscription_at` has come as active, started then
    (Lago activates a subscription on its start date); returns them as now stored."""
    query = select(subscriptions).where(
        subscriptions.c.status == "pending", subscriptions.c.subscription_at <= now
    )
    started = []
    for row in [dict(r) for r in (await conn.execute(query)).mappings()]:
        values = {"status": "active", "started_at": _utc(row["subscription_at"])}
        # Still pending: of billing runs on several replicas, one activates it (and says so).
        result = await conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == row["id"], subscriptions.c.status == "pending")
            .values(**values)
        )
        if result.rowcount:
            started.append({**row, **values})
    return started


async def events_by_transaction_id(
    conn: AsyncConnection, transaction_id: str, external_subscription_id: str | None = None
) -> list[dict[str, Any]]:
    """Stored events with this transaction id (one per subscription at most), oldest first:
    rows of `events`, then a request's own where its record carries them."""
    query = select(events).where(events.c.transaction_id == transaction_id)
    if external_subscription_id:
        query = query.where(events.c.external_subscription_id == external_subscription_id)
    found = [dict(r) for r in (await conn.execute(query.order_by(events.c.id))).mappings()]
    carried = await derived.by_transaction_ids(
        conn, [transaction_id], external_subscription_id or None
    )
    return found + [{**e, "precise_total_amount_cents": None} for e in carried]


async def billable_subscriptions(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Subscriptions that may have periods to invoice (active or terminated)."""
    query = (
        select(subscriptions)
        .where(subscriptions.c.status.in_(("active", "terminated")))
        .order_by(subscriptions.c.created_at)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def active_subscription_of_customer(
    conn: AsyncConnection, customer_id: str
) -> dict[str, Any] | None:
    """The customer's active subscription (the oldest when there are several)."""
    query = (
        select(subscriptions)
        .where(subscriptions.c.customer_id == customer_id, subscriptions.c.status == "active")
        .order_by(subscriptions.c.created_at)
        .limit(1)
    )
    return await _one(conn, query)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


async def period_aggregates(
    conn: AsyncConnection,
    subscription: Subscription,
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    period: Period,
    *,
    rounded: bool = True,
    unflushed: Sequence[dict[str, Any]] = (),
) -> dict[BucketKey, Aggregate]:
    """Every charge bucket's usage of `subscription` over `period` (what invoices and current
    usage price; `rounded=False` gives the raw aggregates per-request prices start from),
    from the hourly rollups (metering.aggregates: raw events only where an aggregate cannot
    be rolled up), plus `unflushed`, the usage writer's events not stored yet. Recurring
    metrics carry what was used before `period`, from the subscription's own events only: not
    those of an earlier subscription of its external_id (see `usage_since`)."""
    return await aggregates.period_aggregates(
        conn,
        plan,
        metrics_by_code,
        subscription.external_id,
        period,
        unflushed=unflushed,
        rounded=rounded,
        since=await usage_since(conn, subscription),
    )


async def usage_since(conn: AsyncConnection, subscription: Subscription) -> datetime | None:
    """When the last earlier subscription of `subscription`'s external_id ended (terminated or
    canceled), None when it is the first: events of that external_id before then are the
    earlier one's. None too for a subscription not stored (no `lago_id`)."""
    if subscription.lago_id is None:
        return None
    s = subscriptions.c
    created = select(s.created_at).where(s.id == subscription.lago_id).scalar_subquery()
    ended = func.max(func.coalesce(s.terminated_at, s.canceled_at, s.ending_at))
    query = select(ended).where(
        s.external_id == subscription.external_id,
        s.id != subscription.lago_id,
        s.status.in_(("terminated", "canceled")),
        s.created_at < created,
    )
    found = (await conn.execute(query)).scalar()
    return None if found is None else _utc(found)
