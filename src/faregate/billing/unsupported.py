"""Lago catalog fields faregate does not implement, refused with a 422 naming the field
(`value_is_not_supported`) unless sent with their default or a neutral value, so a client is
never told a setting took effect that billing ignores. Checked on request bodies only."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from faregate.billing.errors import BillingValidationError
from faregate.billing.lago_json import refuse_unsupported

METRIC_FIELDS = ("expression",)
PLAN_FIELDS = ("minimum_commitment", "usage_thresholds", "tax_codes")
SUBSCRIPTION_FIELDS = ("plan_overrides",)
CHARGE_FIELDS = ("tax_codes",)


def check_metric(data: Mapping[str, object], stored: Mapping[str, object] | None = None) -> None:
    """A metric's create body (or update body with the stored definition). Lago requires
    `weighted_interval` on a weighted sum; it is not defaulted."""
    refuse_unsupported(data, METRIC_FIELDS)
    merged = {**(stored or {}), **data}
    if merged.get("aggregation_type") == "weighted_sum_agg" and not merged.get("weighted_interval"):
        raise BillingValidationError("weighted_interval", "value_is_invalid")


def check_plan(data: Mapping[str, object]) -> None:
    """A plan's create or update body, its charges included."""
    refuse_unsupported(data, PLAN_FIELDS)
    if not _zero_or_absent(data.get("trial_period")):
        raise BillingValidationError("trial_period", "value_is_not_supported")
    charges = data.get("charges")
    if isinstance(charges, list):
        for charge in charges:
            if isinstance(charge, Mapping):
                _check_charge(charge)


def check_subscription(data: Mapping[str, object]) -> None:
    refuse_unsupported(data, SUBSCRIPTION_FIELDS)


def _check_charge(charge: Mapping[str, object]) -> None:
    refuse_unsupported(charge, CHARGE_FIELDS, "charges.")
    # Every charge is invoiceable and none prorated: the defaults pass, their opposites not.
    if charge.get("invoiceable") not in (None, True):
        raise BillingValidationError("charges.invoiceable", "value_is_not_supported")
    if charge.get("prorated") not in (None, False):
        raise BillingValidationError("charges.prorated", "value_is_not_supported")


def _zero_or_absent(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return Decimal(str(value)) == 0
    except InvalidOperation:
        return False
