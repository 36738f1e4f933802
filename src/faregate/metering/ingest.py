"""External usage events (Lago's `POST /api/v1/events[/batch]`): validated synchronously
against cached metrics and subscriptions, then handed to the usage writer, which makes them
durable before the caller answers. A batch is all or nothing: one invalid item refuses it all.

Kept lean because a batch of 1,000 events runs through it per request: no per-event database
work, no SQLAlchemy, one journal write per batch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.billing.errors import BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.subscription_order import current_first
from faregate.metering.rollups import number
from faregate.metering.writer import UsageWriter
from faregate.money import MAX_USAGE_NUMBER, decimal_str, within_usage_bounds
from faregate.store.tables.billing import billable_metrics, subscriptions

Errors = dict[str, dict[str, list[str]]]
# Seconds a cached metric or subscription is used before it is read again: a change made on
# another replica (a metric updated or deleted, a terminated subscription's external_id taken
# by a new one) is seen here within this time.
SUBSCRIPTION_TTL = 1.0
_NEEDS_NUMBER = frozenset({"sum_agg", "max_agg", "latest_agg", "weighted_sum_agg"})


@dataclass(frozen=True, slots=True)
class MetricRef:
    code: str
    numeric_field: str | None  # the property that must be a number when present


@dataclass(frozen=True, slots=True)
class SubscriptionRef:
    external_id: str
    lago_id: str
    external_customer_id: str
    lago_customer_id: str | None


class Catalog:
    """Metrics and subscriptions events may name. Entries are loaded on a miss (a create on
    another replica is found by the miss); a create, update or delete here changes the entry
    at once. An entry is read again once it is `ttl` seconds old, so a change on another
    replica is seen within `ttl`: a metric updated or deleted there, an external_id taken by
    a new subscription there (at one query per batch naming it, at most once per `ttl`)."""

    def __init__(self, engine: AsyncEngine, ttl: float = SUBSCRIPTION_TTL):
        self._engine = engine
        self._ttl = ttl
        self.metrics: dict[str, MetricRef] = {}
        self.subscriptions: dict[str, SubscriptionRef] = {}
        self._read_at: dict[str, float] = {}  # when each subscription entry was read
        self._metric_read_at: dict[str, float] = {}

    def add_metric(self, metric: BillableMetric, read_at: float | None = None) -> None:
        numeric = metric.field_name if metric.aggregation_type in _NEEDS_NUMBER else None
        self.metrics[metric.code] = MetricRef(metric.code, numeric)
        self._metric_read_at[metric.code] = time.monotonic() if read_at is None else read_at

    def remove_metric(self, code: str) -> None:
        """A deleted metric: its events are refused from now on (by another replica once its
        entry is read again)."""
        self.metrics.pop(code, None)
        self._metric_read_at.pop(code, None)

    def add_subscription(self, row: dict[str, Any], read_at: float | None = None) -> None:
        self.subscriptions[row["external_id"]] = SubscriptionRef(
            row["external_id"], row["id"], row["external_customer_id"], row.get("customer_id")
        )
        self._read_at[row["external_id"]] = time.monotonic() if read_at is None else read_at

    async def load(self, codes: set[str], subscription_ids: set[str]) -> None:
        now, ttl = time.monotonic(), self._ttl
        metric_read_at, read_at = self._metric_read_at, self._read_at
        codes = {c for c in codes if now - metric_read_at.get(c, -ttl) >= ttl}
        subscription_ids = {s for s in subscription_ids if now - read_at.get(s, -ttl) >= ttl}
        if not codes and not subscription_ids:
            return
        async with self._engine.connect() as conn:
            if codes:
                found = await conn.execute(
                    select(billable_metrics.c.definition).where(
                        billable_metrics.c.code.in_(codes), billable_metrics.c.deleted_at.is_(None)
                    )
                )
                for code in codes:  # deleted on another replica, if not found again
                    self.remove_metric(code)
                for (definition,) in found:
                    self.add_metric(BillableMetric.from_dict(definition), now)
            if subscription_ids:
                found = await conn.execute(
                    select(subscriptions)
                    .where(subscriptions.c.external_id.in_(subscription_ids))
                    .order_by(*current_first())
                )
                # The subscription each external_id means is added last, so it is kept.
                for row in reversed(found.mappings().all()):
                    self.add_subscription(dict(row), now)


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if type(value) is str and 0 < len(value) <= 255:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BillingValidationError(field, "value_is_mandatory")


def _timestamp(value: object, now: datetime, seen: dict[Any, datetime]) -> datetime:
    """Unix seconds as int, float or numeric string; absent is now. `seen` remembers the
    values of this batch (its events often share a timestamp)."""
    if value is None:
        return now
    if type(value) not in (int, float, str):
        return _parse_timestamp(value)
    found = seen.get(value)
    if found is None:
        seen[value] = found = _parse_timestamp(value)
    return found


def _parse_timestamp(value: object) -> datetime:
    try:
        if type(value) is int or type(value) is float:
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            seconds = Decimal(value)
            if seconds.is_finite():
                return datetime.fromtimestamp(float(seconds), UTC)
    except (InvalidOperation, ValueError, OverflowError, OSError):
        pass
    raise BillingValidationError("timestamp", "invalid_format")


def _amount(value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, int | float | str):
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            amount = Decimal("NaN")
        if amount.is_finite():
            # Compared both ways, exactly: abs() would round to 28 digits.
            if not -MAX_USAGE_NUMBER < amount < MAX_USAGE_NUMBER:
                raise BillingValidationError("precise_total_amount_cents", "value_is_out_of_range")
            return amount
    raise BillingValidationError("precise_total_amount_cents", "value_is_invalid")


def _event(
    data: object, catalog: Catalog, now: datetime, seen: dict[Any, datetime]
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BillingValidationError("event", "value_is_invalid")
    transaction_id = _text(data, "transaction_id")
    code = _text(data, "code")
    subscription_id = _text(data, "external_subscription_id")
    properties = data.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise BillingValidationError("properties", "value_is_invalid")
    timestamp = _timestamp(data.get("timestamp"), now, seen)
    amount = _amount(data.get("precise_total_amount_cents"))
    metric = catalog.metrics.get(code)
    if metric is None:
        raise BillingValidationError("code", "billable_metric_not_found")
    sub = catalog.subscriptions.get(subscription_id)
    if sub is None:
        raise BillingValidationError("external_subscription_id", "subscription_not_found")
    field = metric.numeric_field
    if field is not None and properties.get(field) is not None:
        value = number(properties[field])
        if value is None:
            raise BillingValidationError(f"properties.{field}", "invalid_value")
        if not within_usage_bounds(value):  # what billing sums and prices exactly
            raise BillingValidationError(f"properties.{field}", "value_is_out_of_range")
    return {
        "transaction_id": transaction_id,
        "external_subscription_id": subscription_id,
        "external_customer_id": sub.external_customer_id,
        "code": code,
        "timestamp": timestamp,
        "properties": properties,
        "precise_total_amount_cents": amount,
        "source": "api",
        "created_at": now,
    }


async def accept(
    catalog: Catalog, writer: UsageWriter, items: Sequence[object]
) -> tuple[list[dict[str, Any]], Errors]:
    """Validate every item; if all are valid, hand them to the writer (durable on return).
    Returns the event rows and the errors keyed by item index; with errors nothing is kept."""
    codes, subs = set(), set()
    for item in items:
        if isinstance(item, dict):
            code, sub = item.get("code"), item.get("external_subscription_id")
            if isinstance(code, str):
                codes.add(code)
            if isinstance(sub, str):
                subs.add(sub)
    await catalog.load(codes, subs)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    errors: Errors = {}
    seen: dict[Any, datetime] = {}
    for index, item in enumerate(items):
        try:
            rows.append(_event(item, catalog, now, seen))
        except BillingValidationError as err:
            errors[str(index)] = {err.field: [err.error_code]}
    if not errors:
        await writer.room()  # backpressure: never accept faster than the database takes
        writer.record_events(rows)
    return rows, errors


def lago_id(external_subscription_id: str, transaction_id: str) -> str:
    """A stable id for an event (a repeat gets the same one), shaped like Lago's UUIDs."""
    key = f"{external_subscription_id}\0{transaction_id}".encode()
    h = hashlib.blake2b(key, digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_json(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """Lago's event response; datetimes are left to orjson (OPT_UTC_Z)."""
    sub = catalog.subscriptions[row["external_subscription_id"]]
    amount = row["precise_total_amount_cents"]
    return {
        "lago_id": lago_id(sub.external_id, row["transaction_id"]),
        "transaction_id": row["transaction_id"],
        "lago_customer_id": sub.lago_customer_id,
        "lago_subscription_id": sub.lago_id,
        "external_customer_id": sub.external_customer_id,
        "external_subscription_id": sub.external_id,
        "code": row["code"],
        "timestamp": row["timestamp"],
        "precise_total_amount_cents": None if amount is None else decimal_str(amount),
        "properties": row["properties"],
        "created_at": row["created_at"],
    }
