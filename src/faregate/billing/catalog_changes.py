"""Lago's rules for changing a catalog in use: updating a plan or a billable metric, and
what deleting a metric does to the plans charging it. Pure functions over Lago JSON; the
API stores what they return."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from faregate.billing.errors import BillingValidationError
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan

# Fields a plan update may carry (Lago's plan params faregate models).
PLAN_FIELDS = frozenset(
    {
        "name",
        "code",
        "interval",
        "amount_cents",
        "amount_currency",
        "pay_in_advance",
        "bill_charges_monthly",
        "invoice_display_name",
        "description",
        "charges",
    }
)
# What periods and invoices of existing subscriptions are computed from: fixed once a
# subscription exists (Lago ignores such changes; faregate refuses them, naming the field).
PLAN_FIELDS_FIXED_BY_SUBSCRIPTIONS = (
    "interval",
    "amount_currency",
    "pay_in_advance",
    "bill_charges_monthly",
)
# A metric charged by a plan keeps how it aggregates (Lago: only name, description and
# filters of such a metric are editable).
METRIC_FIELDS_FIXED_BY_PLANS = (
    "aggregation_type",
    "field_name",
    "recurring",
    "weighted_interval",
    "rounding_function",
    "rounding_precision",
)
_CHARGE_IDS = uuid.UUID("5b0e3f38-8f55-4f5e-9a55-3c1f3c6f7a21")


def charge_id(plan_id: str, charge_code: str) -> str:
    """A charge's stable `lago_id`: the same for the same plan and charge code."""
    return str(uuid.uuid5(_CHARGE_IDS, f"{plan_id}\0{charge_code}"))


def updated_plan(
    plan_id: str, stored: Mapping[str, Any], changes: Mapping[str, Any], *, subscribed: bool
) -> dict[str, Any]:
    """The plan's Lago JSON after a `PUT /plans/{code}`: the fields given replace the stored
    ones; `charges`, when given, replace every charge (a charge named by its `id`, the
    `lago_id` of a stored charge, keeps that charge's code). The code never changes: the
    plan's subscriptions and invoices name it."""
    code = changes.get("code")
    if code is not None and code != stored["code"]:
        raise BillingValidationError("code", "value_is_immutable")
    if subscribed:
        for field in PLAN_FIELDS_FIXED_BY_SUBSCRIPTIONS:
            if field in changes and changes[field] != stored.get(field):
                raise BillingValidationError(field, "plan_has_subscriptions")
    merged = {**stored, **{k: v for k, v in changes.items() if k in PLAN_FIELDS}}
    if "charges" in changes and isinstance(changes["charges"], list):
        codes = {charge_id(plan_id, c["code"]): c["code"] for c in stored.get("charges", [])}
        charges = []
        for charge in changes["charges"]:
            if isinstance(charge, Mapping) and not charge.get("code") and charge.get("id"):
                known = codes.get(str(charge["id"]))
                if known is None:
                    raise BillingValidationError("charges.id", "charge_not_found")
                charge = {**charge, "code": known}
            charges.append(charge)
        merged["charges"] = charges
    return merged


def updated_metric(
    stored: BillableMetric, changes: Mapping[str, Any], *, charged: bool
) -> BillableMetric:
    """The metric after a `PUT /billable_metrics/{code}`: given fields replace stored ones.
    Its code never changes (events and plans name it); a metric a plan charges keeps how it
    aggregates."""
    code = changes.get("code")
    if code is not None and code != stored.code:
        raise BillingValidationError("code", "value_is_immutable")
    before = metric_json(stored)
    after = {**before, **{k: v for k, v in changes.items() if k in before and k != "code"}}
    metric = BillableMetric.from_dict(after)
    if charged:
        for field in METRIC_FIELDS_FIXED_BY_PLANS:
            if getattr(metric, field) != getattr(stored, field):
                raise BillingValidationError(field, "billable_metric_charged_by_plans")
    return metric


def metric_json(metric: BillableMetric) -> dict[str, Any]:
    """The stored definition of a metric (Lago's billable_metric fields)."""
    return {
        "code": metric.code,
        "name": metric.name,
        "aggregation_type": metric.aggregation_type,
        "field_name": metric.field_name,
        "recurring": metric.recurring,
        "rounding_function": metric.rounding_function,
        "rounding_precision": metric.rounding_precision,
        "weighted_interval": metric.weighted_interval,
        "description": metric.description,
        "filters": [{"key": f.key, "values": list(f.values)} for f in metric.filters],
    }


def charges_metric(plan: Plan, code: str) -> bool:
    return any(charge.billable_metric_code == code for charge in plan.charges)


def without_metric(stored: Mapping[str, Any], code: str) -> dict[str, Any]:
    """The plan's JSON with its charges on metric `code` removed (Lago discards the charges
    of a deleted metric)."""
    charges = [c for c in stored.get("charges", []) if c.get("billable_metric_code") != code]
    return {**stored, "charges": charges}
