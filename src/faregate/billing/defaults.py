"""The built-in billable metrics, one per event code the gateway emits (metering/recorder.py):
`tokens`, `images`, `seconds`, `requests`. Seeded at startup, idempotently: a missing one is
created; one created by seeding (`"builtin": true`) gains the filter values of newly
configured models and providers; a metric the user created under the same code is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.billing import repository as repo
from faregate.billing.errors import BillingValidationError
from faregate.billing.metrics import BillableMetric

TOKEN_TYPES = ("input", "output", "cached_input", "reasoning")
IMAGE_SIZES = (
    "256x256",
    "512x512",
    "1024x1024",
    "1024x1536",
    "1536x1024",
    "1024x1792",
    "1792x1024",
)
IMAGE_QUALITIES = ("standard", "hd", "low", "medium", "high")
IMAGE_STEPS = ("10", "20", "25", "30", "40", "50")


def _metric(
    code: str, name: str, field: str, description: str, filters: list[tuple[str, Iterable[str]]]
) -> dict[str, Any]:
    return {
        "code": code,
        "name": name,
        "aggregation_type": "sum_agg",
        "field_name": field,
        "recurring": False,
        "rounding_function": None,
        "rounding_precision": None,
        "weighted_interval": None,
        "description": description,
        "filters": [{"key": k, "values": sorted(set(v))} for k, v in filters if v],
        "builtin": True,
    }


def default_metrics(models: Iterable[str], providers: Iterable[str]) -> list[dict[str, Any]]:
    """Lago JSON of the built-in metrics; `models` and `providers` become filter values."""
    models, providers = sorted(set(models)), sorted(set(providers))
    return [
        _metric(
            "tokens",
            "Tokens",
            "tokens",
            "Tokens used, one event per type (input, output, cached_input, reasoning).",
            [("model", models), ("type", TOKEN_TYPES), ("provider", providers)],
        ),
        _metric(
            "images",
            "Images",
            "images",
            "Images generated.",
            [
                ("model", models),
                ("size", IMAGE_SIZES),
                ("quality", IMAGE_QUALITIES),
                ("steps", IMAGE_STEPS),
            ],
        ),
        _metric(
            "seconds",
            "Seconds",
            "seconds",
            "Seconds of audio or video processed.",
            [("model", models), ("provider", providers)],
        ),
        _metric(
            "requests",
            "Requests",
            "requests",
            "Requests served (one per request).",
            [("model", models), ("provider", providers)],
        ),
    ]


def _merged(existing: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The existing built-in definition with `wanted`'s filter values added; None if none
    are new. Values are never removed: a plan may price them."""
    filters = {f["key"]: list(f["values"]) for f in existing.get("filters") or []}
    changed = False
    for item in wanted["filters"]:
        values = filters.setdefault(item["key"], [])
        new = [v for v in item["values"] if v not in values]
        if new:
            values.extend(new)
            changed = True
    if not changed:
        return None
    merged = dict(existing)
    merged["filters"] = [{"key": k, "values": sorted(v)} for k, v in filters.items()]
    return merged


async def seed_default_metrics(engine: AsyncEngine, definitions: list[dict[str, Any]]) -> None:
    """Create or extend the built-ins, one transaction each (replicas may race here)."""
    for definition in definitions:
        BillableMetric.from_dict(definition)  # the built-ins are valid Lago metrics
        try:
            async with engine.begin() as conn:
                row = await repo.metric_by_code(conn, definition["code"])
                if row is None:
                    await repo.insert_metric(conn, definition)
                elif row["definition"].get("builtin"):
                    merged = _merged(row["definition"], definition)
                    if merged is not None:
                        await repo.update_metric_definition(conn, row["id"], merged)
        except BillingValidationError:  # another replica seeded it just now
            continue
