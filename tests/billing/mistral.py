"""The Mistral-on-Lago plan used across billing tests: tokens priced per 1M by model and type."""

from __future__ import annotations

from datetime import UTC, datetime

from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan


def mistral_metric() -> BillableMetric:
    return BillableMetric.from_dict(
        {
            "code": "tokens",
            "name": "Tokens",
            "aggregation_type": "sum_agg",
            "field_name": "tokens",
            "filters": [
                {"key": "model", "values": ["mistral-large", "mistral-small"]},
                {"key": "type", "values": ["input", "output"]},
            ],
        }
    )


def per_million(amount: str) -> dict[str, object]:
    return {"amount": amount, "package_size": 1_000_000, "free_units": 0}


def mistral_plan(charge: dict[str, object] | None = None, **overrides: object) -> Plan:
    filters = [
        ("mistral-large", "input", "4"),
        ("mistral-large", "output", "12"),
        ("mistral-small", "input", "1"),
        ("mistral-small", "output", "3"),
    ]
    charge_data: dict[str, object] = {
        "code": "tokens",
        "billable_metric_code": "tokens",
        "charge_model": "package",
        "properties": per_million("0"),
        "filters": [
            {
                "values": {"model": [model], "type": [kind]},
                "properties": per_million(price),
                "invoice_display_name": f"{model} {kind}",
            }
            for model, kind, price in filters
        ],
    }
    charge_data.update(charge or {})
    data: dict[str, object] = {
        "code": "mistral",
        "name": "Mistral API",
        "interval": "monthly",
        "amount_cents": 2000,
        "amount_currency": "EUR",
        "charges": [charge_data],
    }
    data.update(overrides)
    return Plan.from_dict(data)


JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
