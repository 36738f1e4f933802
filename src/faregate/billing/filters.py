"""Charge filters (Lago `charge_filters`): which events a filter selects, and which filter an
event falls into: the matching filter with the most keys, else the charge's default bucket."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from faregate.billing.charge_models import ChargeProperties
from faregate.billing.errors import BillingValidationError
from faregate.billing.events import text_property

# Lago's ChargeFilterValue::ALL_FILTER_VALUES: any value of that key matches.
ALL_FILTER_VALUES = "__ALL_FILTER_VALUES__"

FilterValues = Mapping[str, str | Sequence[str]]


def normalize(values: Mapping[str, object], field: str = "values") -> dict[str, tuple[str, ...]]:
    """`{key: [values]}` with keys sorted; a bare string counts as a one-value list."""
    result: dict[str, tuple[str, ...]] = {}
    for key in sorted(values):
        raw = values[key]
        if isinstance(raw, str):
            listed: tuple[object, ...] = (raw,)
        elif isinstance(raw, Sequence):
            listed = tuple(raw)
        else:
            raise BillingValidationError(f"{field}.{key}", "invalid_filter_values")
        if not key or not listed or not all(isinstance(v, str) and v for v in listed):
            raise BillingValidationError(f"{field}.{key}", "invalid_filter_values")
        result[key] = tuple(str(v) for v in listed)
    if not result:
        raise BillingValidationError(field, "invalid_filter_values")
    return result


def matches(values: FilterValues, properties: Mapping[str, object]) -> bool:
    """Every key of the filter is in the event with one of its values."""
    return _matches(normalize(values), properties)


def _matches(values: Mapping[str, Sequence[str]], properties: Mapping[str, object]) -> bool:
    for key, allowed in values.items():
        actual = text_property(properties, key)
        if actual is None or (ALL_FILTER_VALUES not in allowed and actual not in allowed):
            return False
    return True


@dataclass(frozen=True)
class ChargeFilter:
    """A slice of a charge priced with its own `properties` and billed on its own fee line."""

    values: Mapping[str, Sequence[str]]
    properties: ChargeProperties
    invoice_display_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", normalize(self.values, "filters.values"))

    @cached_property
    def key(self) -> str:
        """A stable identity for this filter within its charge (canonical JSON of `values`)."""
        return json.dumps({k: sorted(v) for k, v in self.values.items()}, separators=(",", ":"))

    def matches(self, properties: Mapping[str, object]) -> bool:
        return _matches(self.values, properties)

    def display_name(self) -> str:
        if self.invoice_display_name:
            return self.invoice_display_name
        return " • ".join(", ".join(v) for v in self.values.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": {k: list(v) for k, v in self.values.items()},
            "properties": self.properties.to_dict(),
            "invoice_display_name": self.invoice_display_name,
        }


def best_filter(
    filters: Sequence[ChargeFilter], properties: Mapping[str, object]
) -> ChargeFilter | None:
    """The matching filter with the most keys (the first one on a tie), None for the default."""
    best: ChargeFilter | None = None
    for candidate in filters:
        if candidate.matches(properties) and (
            best is None or len(candidate.values) > len(best.values)
        ):
            best = candidate
    return best
