"""Spend attribution: request records grouped by customer, team, key, tag, model, provider,
deployment and day, with tokens, provider cost, price and savings; as rows or as CSV.
Reads the `requests` table only (an admin report, never on the request path)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Text, and_, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.errors import InvalidRequest
from faregate.money import decimal_str, from_nanos
from faregate.store.tables.gateway import api_keys, teams
from faregate.store.tables.metering import requests

# dimension -> the column it groups by ("tag" expands the JSON list of tags in Python).
_COLUMNS = {
    "customer": requests.c.external_customer_id,
    "team": teams.c.name,
    "key": requests.c.key_id,
    "key_name": api_keys.c.name,
    "model": requests.c.model_requested,
    "served_model": requests.c.model_served,
    "provider": requests.c.provider,
    "deployment": requests.c.deployment,
    "kind": requests.c.kind,
    "day": func.date(requests.c.created_at),
}
DIMENSIONS = (*_COLUMNS, "tag")
METRICS = (
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cost",
    "price",
    "saved",
)
_SUMS = {
    "requests": func.count(),
    "errors": func.sum(case((requests.c.status >= 400, 1), else_=0)),
    "cache_hits": func.sum(case((requests.c.cache_hit.is_(True), 1), else_=0)),
    "input_tokens": func.sum(requests.c.input_tokens),
    "output_tokens": func.sum(requests.c.output_tokens),
    "cost": func.sum(requests.c.cost_nanos),
    "price": func.sum(requests.c.price_nanos),
    "saved": func.sum(requests.c.saved_nanos),
}
_MONEY = ("cost", "price", "saved")


@dataclass(frozen=True, slots=True)
class SpendQuery:
    by: tuple[str, ...]
    since: datetime
    until: datetime
    filters: dict[str, str] = field(default_factory=dict)  # dimension -> value


@dataclass(slots=True)
class SpendReport:
    query: SpendQuery
    rows: list[dict[str, Any]]  # dimension values, then metrics (money as Decimal)
    totals: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        q = self.query
        return {
            "by": list(q.by),
            "since": q.since.isoformat(),
            "until": q.until.isoformat(),
            "filters": q.filters,
            "rows": [_render(r) for r in self.rows],
            "totals": _render(self.totals),
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            rendered = _render(row)
            writer.writerow(["" if rendered[c] is None else rendered[c] for c in self.columns])
        return out.getvalue()

    @property
    def columns(self) -> list[str]:
        return [*self.query.by, *METRICS]


def _render(row: dict[str, Any]) -> dict[str, Any]:
    return {k: decimal_str(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def parse_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    by = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise InvalidRequest(
            f"Unknown spend dimension(s) {', '.join(unknown)}; use {', '.join(DIMENSIONS)}.",
            param="by",
        )
    return by


def parse_instant(value: str | None, param: str, *, end: bool = False) -> datetime | None:
    """ISO 8601 date or datetime; a bare date means its start (or, for `until`, its end)."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1 if end else 0), time(), UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{param}' must be an ISO 8601 date or time.", param=param) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_query(
    by: str | Sequence[str] | None,
    since: str | None,
    until: str | None,
    filters: dict[str, str] | None = None,
    now: datetime | None = None,
) -> SpendQuery:
    """Defaults: from the start of the current UTC month until now."""
    now = now or datetime.now(UTC)
    start = parse_instant(since, "since") or now.replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    end = parse_instant(until, "until", end=True) or now
    if end <= start:
        raise InvalidRequest("'until' must be after 'since'.", param="until")
    bad = [d for d in (filters or {}) if d not in DIMENSIONS or d == "day"]
    if bad:
        raise InvalidRequest(f"Cannot filter on {', '.join(bad)}.", param=bad[0])
    return SpendQuery(parse_by(by), start, end, dict(filters or {}))


def _tags(raw: Any) -> list[str | None]:
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raw = None
    tags = [str(t) for t in raw] if isinstance(raw, list) else []
    return list(dict.fromkeys(tags)) or [None]


def _add(into: dict[str, Any], row: Any) -> None:
    for metric in METRICS:
        value = int(row[metric] or 0)
        into[metric] = into.get(metric, 0) + value


def _finish(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {m: int(metrics.get(m, 0)) for m in METRICS}
    for m in _MONEY:
        out[m] = from_nanos(out[m])
    return out


async def spend_report(conn: AsyncConnection, query: SpendQuery) -> SpendReport:
    """Group in SQL by every dimension but `tag`; a request counts once under each of its
    tags (so rows grouped by tag may add up to more than the totals)."""
    grouped = {d: _COLUMNS[d] for d in query.by if d != "tag"}
    tag_filter = query.filters.get("tag")
    need_tags = "tag" in query.by or tag_filter is not None
    if need_tags:
        grouped["_tags"] = cast(requests.c.tags, Text)
    conditions = [requests.c.created_at >= query.since, requests.c.created_at < query.until]
    conditions += [_COLUMNS[d] == v for d, v in query.filters.items() if d != "tag"]
    source = requests.outerjoin(teams, requests.c.team_id == teams.c.id).outerjoin(
        api_keys, requests.c.key_id == api_keys.c.id
    )
    stmt = (
        select(
            *(col.label(name) for name, col in grouped.items()),
            *(agg.label(m) for m, agg in _SUMS.items()),
        )
        .select_from(source)
        .where(and_(*conditions))
    )
    if grouped:
        stmt = stmt.group_by(*grouped.values())
    result = (await conn.execute(stmt)).mappings().all()
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[str, Any] = {}
    for row in result:
        tags: list[str | None] = _tags(row["_tags"]) if need_tags else [None]
        if tag_filter is not None:
            if tag_filter not in tags:
                continue
            tags = [tag_filter]
        _add(totals, row)
        for tag in tags if "tag" in query.by else [None]:
            key = tuple(tag if d == "tag" else _plain(row[d]) for d in query.by)
            _add(groups.setdefault(key, {}), row)
    rows = [
        dict(zip(query.by, key, strict=True)) | _finish(metrics)
        for key, metrics in sorted(groups.items(), key=_order)
    ]
    return SpendReport(query, rows, _finish(totals))


def _order(item: tuple[tuple[Any, ...], dict[str, Any]]) -> tuple[int, str]:
    """Most expensive first; ties in a stable order."""
    return -int(item[1].get("cost", 0)), repr(item[0])


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
