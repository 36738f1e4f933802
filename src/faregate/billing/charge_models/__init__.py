"""Charge models, one module each, and the one registry that picks them by Lago's name.

A new charge model is one module exposing `MODEL` plus one line in `CHARGE_MODELS`."""

from __future__ import annotations

from typing import Any

from faregate.billing.charge_models import graduated, package, percentage, standard, volume
from faregate.billing.charge_models.base import ChargeModel, ChargeProperties
from faregate.billing.errors import BillingValidationError

__all__ = ["CHARGE_MODELS", "ChargeModel", "ChargeProperties", "get"]

CHARGE_MODELS: dict[str, ChargeModel[Any]] = {
    "standard": standard.MODEL,
    "package": package.MODEL,
    "graduated": graduated.MODEL,
    "volume": volume.MODEL,
    "percentage": percentage.MODEL,
}


def get(name: str) -> ChargeModel[Any]:
    """The charge model called `name`; an unknown name is a 422 on `charge_model`."""
    try:
        return CHARGE_MODELS[name]
    except KeyError:
        raise BillingValidationError("charge_model", "invalid_charge_model") from None
