"""A subscription's usage over a period, per charge and filter bucket, read from the hourly
rollups (plus events accepted here but not yet written), never by scanning raw events, except
where an aggregate cannot be rolled up: unique_count metrics, charges priced per event
(percentage with free units or per-transaction limits), and periods that do not start and end
on a UTC hour. Those scan the subscription's raw events of that metric.

Usage is read by external_id, which an earlier subscription may have held (a terminated or
canceled subscription's external_id may be taken again): `since` says when that earlier
holder stopped, and no event before it counts, recurring metrics included. The hourly
rollups are keyed by external_id, so the hour `since` falls in is read from raw events.

`period_aggregates` returns what `billing.charges.plan_aggregates` returns for the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.aggregate import Aggregate
from faregate.billing.aggregations import WEIGHTED_EXPONENT, seconds_between
from faregate.billing.charges import BucketKey, bucket_keys, charge_aggregates, metric_of
from faregate.billing.events import Event
from faregate.billing.filters import best_filter
from faregate.billing.metrics import BillableMetric, apply_rounding
from faregate.billing.periods import Period
from faregate.billing.plans import Charge, Plan
from faregate.metering import derived, event_store, rollups
from faregate.money import EXACT, exact
from faregate.store.tables.metering import events, usage_rollups

ZERO = Decimal(0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


def _on_hour(at: datetime) -> bool:
    at = at.astimezone(UTC)
    return at.minute == 0 and at.second == 0 and at.microsecond == 0


def rolled_up(charge: Charge, metric: BillableMetric, period: Period) -> bool:
    """Whether this charge's usage over `period` can come from rollups."""
    priced = (charge.properties, *(f.properties for f in charge.filters))
    return (
        metric.aggregation_type in rollups.ROLLED
        and not any(charge.model.needs_event_values(p) for p in priced)
        and _on_hour(period.start)
        and _on_hour(period.end)
    )


async def period_aggregates(
    conn: AsyncConnection,
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    external_subscription_id: str,
    period: Period,
    *,
    unflushed: Sequence[dict[str, Any]] = (),
    rounded: bool = True,
    since: datetime | None = None,
) -> dict[BucketKey, Aggregate]:
    """Aggregates of every bucket of every charge of `plan` over `period` (`rounded=False`
    leaves the metrics' rounding out).

    Recurring metrics start from everything the subscription used before the period.
    `unflushed` are event rows accepted but perhaps not in the database yet (the usage
    writer's tail); those already stored are ignored, so nothing counts twice. Events of
    the external_id before `since` are another subscription's: none counts, and a period
    starting earlier is read from `since`.
    """
    if since is not None and period.start < since:
        period = replace(period, start=min(since, period.end))
    for _ in range(5):
        tail = await _not_stored(conn, external_subscription_id, unflushed)
        if since is not None:  # after the dedup: a repeat of an earlier holder's event is not new
            tail = [r for r in tail if _utc(r["timestamp"]) >= since]
        result = await _aggregates(
            conn, plan, metrics_by_code, external_subscription_id, period, tail, rounded, since
        )
        # Outside a snapshot, a flush may commit part of the tail while we read: then the
        # rollups read may or may not hold it, so read again.
        if not tail or len(await _not_stored(conn, external_subscription_id, tail)) == len(tail):
            return result
    return result


async def _aggregates(
    conn: AsyncConnection,
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    external_subscription_id: str,
    period: Period,
    tail: list[dict[str, Any]],
    rounded: bool,
    since: datetime | None,
) -> dict[BucketKey, Aggregate]:
    result: dict[BucketKey, Aggregate] = {}
    by_rollup = [c for c in plan.charges if rolled_up(c, metric_of(c, metrics_by_code), period)]
    if by_rollup:
        codes = {c.billable_metric_code for c in by_rollup}
        specs = {code: rollups.MetricSpec.of(metrics_by_code[code]) for code in codes}
        metrics = {c: metrics_by_code[c] for c in codes}
        rows = await _rollup_rows(conn, external_subscription_id, metrics, period, since)
        head = await _head_rows(conn, external_subscription_id, metrics, period, since)
        tail_cells: dict[rollups.RollupKey, rollups.Cell] = {}
        rollups.accumulate(tail_cells, specs, [*head, *tail])
        rows.extend((key[1], key[2], key[3], cell) for key, cell in tail_cells.items())
        for charge in by_rollup:
            metric = metrics_by_code[charge.billable_metric_code]
            result.update(_from_rollups(charge, metric, rows, period, rounded))
    for charge in plan.charges:
        metric = metric_of(charge, metrics_by_code)
        if charge not in by_rollup:
            raw = await _raw_events(conn, external_subscription_id, metric, period, tail, since)
            result.update(_from_events(charge, metric, raw, period, rounded))
    return result


async def _not_stored(
    conn: AsyncConnection, subscription: str, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = [r for r in rows if r["external_subscription_id"] == subscription]
    if not rows:
        return []
    keys = {(subscription, r["transaction_id"]) for r in rows}
    stored = {tx for _, tx in await event_store.stored_rows(conn, keys)}
    stored.update(tx for _, tx in await derived.stored_keys(conn, keys))
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["transaction_id"] not in stored:
            fresh.setdefault(row["transaction_id"], row)  # the first one accepted wins
    return list(fresh.values())


# --- from rollups ------------------------------------------------------------------------

RollupRow = tuple[str, str, datetime, rollups.Cell]  # code, dims, hour, cell


def _first_whole_hour(since: datetime | None) -> datetime:
    """The first rollup hour of the external_id's current holder only."""
    if since is None:
        return EPOCH
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour if hour == since else hour + _HOUR


async def _rollup_rows(
    conn: AsyncConnection,
    subscription: str,
    metrics: Mapping[str, BillableMetric],
    period: Period,
    since: datetime | None,
) -> list[RollupRow]:
    if conn.dialect.name == "postgresql":
        return await _grouped_rows(conn, subscription, metrics, period, since)
    codes = set(metrics)
    recurring = any(m.recurring for m in metrics.values())
    c = usage_rollups.c
    query = select(usage_rollups).where(
        c.external_subscription_id == subscription, c.code.in_(codes), c.hour < period.end
    )
    if not recurring:
        query = query.where(c.hour >= period.start)
    elif since is not None:
        query = query.where(c.hour >= _first_whole_hour(since))
    rows = await conn.execute(query)
    return [(r["code"], r["dims"], _utc(r["hour"]), rollups.cell_of(r)) for r in rows.mappings()]


# PostgreSQL sums the period's hourly rows per (code, dims) itself, so a month of a busy
# subscription comes back as one row per filter combination instead of thousands.
_GROUPED = text(
    """
SELECT code, dims,
  sum(events_count) FILTER (WHERE hour >= :start) AS events,
  sum(values_count) FILTER (WHERE hour >= :start) AS vals,
  sum(value_sum) FILTER (WHERE hour >= :start) AS vsum,
  max(value_max) FILTER (WHERE hour >= :start) AS vmax,
  (array_agg(latest_value ORDER BY latest_at DESC)
     FILTER (WHERE hour >= :start AND latest_at IS NOT NULL))[1] AS latest,
  max(latest_at) FILTER (WHERE hour >= :start) AS latest_at,
  sum(value_sum * extract(epoch FROM (CAST(:end AS timestamptz) - hour))
      - coalesce(value_time_sum, 0)) FILTER (WHERE hour >= :start AND code = ANY(:weighted))
      AS weighted,
  sum(value_sum) FILTER (WHERE hour < :start AND code = ANY(:recurring)) AS carried
FROM usage_rollups
WHERE external_subscription_id = :sub AND code = ANY(:codes)
  AND hour >= :since AND hour < :end
GROUP BY code, dims
"""
)


async def _grouped_rows(
    conn: AsyncConnection,
    subscription: str,
    metrics: Mapping[str, BillableMetric],
    period: Period,
    since: datetime | None,
) -> list[RollupRow]:
    recurring = sorted(code for code, m in metrics.items() if m.recurring)
    weighted = sorted(c for c, m in metrics.items() if m.aggregation_type == "weighted_sum_agg")
    found = await conn.execute(
        _GROUPED,
        {
            "sub": subscription,
            "codes": sorted(metrics),
            "start": period.start,
            "end": period.end,
            "since": _first_whole_hour(since) if recurring else period.start,
            "weighted": weighted,
            "recurring": recurring,
        },
    )
    span = seconds_between(period.start, period.end)
    rows: list[RollupRow] = []
    for r in found.mappings():
        if r["events"] is not None:
            cell = rollups.Cell()
            cell.events, cell.values = int(r["events"]), int(r["vals"] or 0)
            cell.sum, cell.max = r["vsum"], r["vmax"]
            cell.latest, cell.latest_at = r["latest"], r["latest_at"]
            if r["vsum"] is not None and r["weighted"] is not None:
                # As one row at the period start: sum x span - time_sum == the weighted part.
                with localcontext(EXACT):
                    cell.time_sum = r["vsum"] * span - r["weighted"]
            rows.append((r["code"], r["dims"], period.start, cell))
        if r["carried"] is not None:
            before = rollups.Cell()
            before.sum = r["carried"]
            rows.append((r["code"], r["dims"], EPOCH, before))
    return rows


async def _head_rows(
    conn: AsyncConnection,
    subscription: str,
    metrics: Mapping[str, BillableMetric],
    period: Period,
    since: datetime | None,
) -> list[dict[str, Any]]:
    """The recurring metrics' stored events from `since` to the next whole hour (before the
    period), whose rollup hour the external_id's earlier holder may share."""
    end = min(_first_whole_hour(since), period.start)
    recurring = [m for m in metrics.values() if m.recurring]
    if since is None or since >= end or not recurring:
        return []
    head = Period.of(since, end)
    found: list[dict[str, Any]] = []
    for metric in recurring:
        for e in await _raw_events(conn, subscription, metric, head, (), since):
            found.append(
                {
                    "transaction_id": e.transaction_id,
                    "external_subscription_id": subscription,
                    "code": e.code,
                    "timestamp": e.timestamp,
                    "properties": e.properties,
                }
            )
    return found


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _from_rollups(
    charge: Charge,
    metric: BillableMetric,
    rows: Iterable[RollupRow],
    period: Period,
    rounded: bool = True,
) -> dict[BucketKey, Aggregate]:
    inside: dict[BucketKey, list[tuple[datetime, rollups.Cell]]] = {
        k: [] for k in bucket_keys(charge)
    }
    before: dict[BucketKey, list[rollups.Cell]] = {k: [] for k in bucket_keys(charge)}
    buckets: dict[str, BucketKey] = {}
    for code, dims, hour, cell in rows:
        if code != metric.code or hour >= period.end:
            continue
        key = buckets.get(dims)
        if key is None:
            found = best_filter(charge.filters, orjson.loads(dims))
            key = buckets[dims] = (charge.code, None if found is None else found.key)
        if hour >= period.start:
            inside[key].append((hour, cell))
        else:
            before[key].append(cell)
    combined = {key: _combine(metric, inside[key], before[key], period) for key in inside}
    if not rounded:
        return combined
    return {key: apply_rounding(metric, raw) for key, raw in combined.items()}


@exact
def _combine(
    metric: BillableMetric,
    cells: list[tuple[datetime, rollups.Cell]],
    before: list[rollups.Cell],
    period: Period,
) -> Aggregate:
    kind = metric.aggregation_type
    values = sum(cell.values for _, cell in cells)
    if kind == "count_agg":
        units = Decimal(sum(cell.events for _, cell in cells))
        return Aggregate(units, int(units), (), units)
    if kind == "max_agg":
        units = max((c.max for _, c in cells if c.max is not None), default=ZERO)
        return Aggregate(units, values, total_aggregated_units=units)
    if kind == "latest_agg":
        newest = None
        for _, cell in cells:
            if cell.latest_at is not None and (
                newest is None or cell.latest_at >= newest.latest_at
            ):
                newest = cell
        if newest is None or newest.latest is None:
            return Aggregate()
        return Aggregate(newest.latest, values, (), newest.latest, latest_at=newest.latest_at)
    carried = sum((c.sum or ZERO for c in before), ZERO) if metric.recurring else ZERO
    added = sum((c.sum or ZERO for _, c in cells), ZERO)
    if kind == "sum_agg":
        total = carried + added
        return Aggregate(total, values, (), total)
    # weighted_sum_agg: level x seconds held, / period seconds
    numerator = carried * seconds_between(period.start, period.end)
    for hour, cell in cells:
        numerator += (cell.sum or ZERO) * seconds_between(hour, period.end)
        numerator -= cell.time_sum or ZERO
    units = (numerator / period.full_seconds).quantize(WEIGHTED_EXPONENT, rounding=ROUND_CEILING)
    return Aggregate(units, values, total_aggregated_units=carried + added)


# --- from raw events ---------------------------------------------------------------------


async def _raw_events(
    conn: AsyncConnection,
    subscription: str,
    metric: BillableMetric,
    period: Period,
    tail: Sequence[dict[str, Any]],
    since: datetime | None = None,
) -> list[Event]:
    c = events.c
    query = (
        select(c.transaction_id, c.code, c.timestamp, c.properties)
        .where(
            c.external_subscription_id == subscription,
            c.code == metric.code,
            c.timestamp < period.end,
        )
        .order_by(c.id)
    )
    start = since if metric.recurring else period.start
    if start is not None:
        query = query.where(c.timestamp >= start)
    found = [Event(r[0], r[1], _utc(r[2]), r[3] or {}) for r in await conn.execute(query)]
    # The requests' own events, where their records carry them. Ingestion order only breaks
    # ties between events of one timestamp, and a request's are ingested with it.
    found.extend(
        Event(e["transaction_id"], e["code"], _utc(e["timestamp"]), e["properties"])
        for e in await derived.of_subscription(conn, subscription, metric.code, start, period.end)
    )
    found.extend(
        Event(r["transaction_id"], r["code"], r["timestamp"], r.get("properties") or {})
        for r in tail
        if r["code"] == metric.code
    )
    return found


def _from_events(
    charge: Charge, metric: BillableMetric, found: list[Event], period: Period, rounded: bool
) -> dict[BucketKey, Aggregate]:
    carried = None
    if metric.recurring:
        earlier = [e for e in found if e.timestamp < period.start]
        if earlier:
            since = min(e.timestamp for e in earlier)
            carried = charge_aggregates(
                charge, metric, earlier, Period.of(since, period.start), rounded=False
            )
    inside = [e for e in found if period.start <= e.timestamp < period.end]
    return charge_aggregates(charge, metric, inside, period, carried=carried, rounded=rounded)
