"""A/B experiment reports from the stored request records: the durable, all-replica view
of what `routing.experiments.ExperimentStats` keeps live in one process. Same report shape.
Queries only; portable between SQLite and PostgreSQL (quantiles by ORDER BY … OFFSET)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from faregate.money import from_nanos
from faregate.routing.experiments import arm_report, interpolate
from faregate.store.tables.metering import requests as r


def _window(experiment: str, since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    clauses = [r.c.experiment == experiment]
    if since is not None:
        clauses.append(r.c.created_at >= since)
    if until is not None:
        clauses.append(r.c.created_at < until)
    return and_(*clauses)


async def list_experiments(conn: AsyncConnection) -> dict[str, int]:
    """Experiment id -> number of stored requests."""
    rows = await conn.execute(
        select(r.c.experiment, func.count())
        .where(r.c.experiment.is_not(None))
        .group_by(r.c.experiment)
    )
    return {row[0]: int(row[1]) for row in rows}


async def experiment_report(
    conn: AsyncConnection,
    experiment: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Per arm: requests, errors (status >= 400), cost, price, tokens, p50/p95 latency of
    the successful requests (ms, linearly interpolated as in ExperimentStats)."""
    where = _window(experiment, since, until)
    failed = func.sum(case((r.c.status >= 400, 1), else_=0)).cast(Integer)
    rows = await conn.execute(
        select(
            r.c.arm,
            func.count(),
            failed,
            func.coalesce(func.sum(r.c.cost_nanos), 0),
            func.coalesce(func.sum(r.c.price_nanos), 0),
            func.coalesce(func.sum(r.c.input_tokens), 0),
            func.coalesce(func.sum(r.c.output_tokens), 0),
        )
        .where(where)
        .group_by(r.c.arm)
        .order_by(r.c.arm)
    )
    arms = []
    for arm, count, errors, cost, price, tokens_in, tokens_out in rows.all():
        p50, p95 = await _latency_quantiles(conn, where, arm, (0.50, 0.95))
        arms.append(
            arm_report(
                str(arm),
                requests=int(count),
                errors=int(errors or 0),
                cost=from_nanos(int(cost)),
                price=from_nanos(int(price)),
                input_tokens=int(tokens_in),
                output_tokens=int(tokens_out),
                p50_ms=p50,
                p95_ms=p95,
            )
        )
    return {"experiment": experiment, "arms": arms}


async def _latency_quantiles(
    conn: AsyncConnection, where: ColumnElement[bool], arm: str | None, qs: tuple[float, ...]
) -> list[float | None]:
    ok = and_(where, r.c.arm == arm, r.c.status < 400, r.c.latency_ms.is_not(None))
    n = int((await conn.execute(select(func.count()).where(ok))).scalar_one())
    if n == 0:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        pos = q * (n - 1)
        pair = (
            await conn.execute(
                select(r.c.latency_ms).where(ok).order_by(r.c.latency_ms).limit(2).offset(int(pos))
            )
        ).scalars()
        values = [float(v) for v in pair]
        high = values[1] if len(values) > 1 else values[0]
        out.append(round(interpolate(values[0], high, pos), 3))
    return out
