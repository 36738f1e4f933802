"""Graduated charge model: each tier prices the units that fall in it, plus its `flat_amount`
once usage reaches the tier (Lago `ChargeModels::GraduatedService`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import ranges
from faregate.billing.charge_models.base import ChargeModel
from faregate.money import exact

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class GraduatedProperties:
    graduated_ranges: tuple[ranges.Range, ...]

    def to_dict(self) -> dict[str, object]:
        return {"graduated_ranges": [r.to_dict() for r in self.graduated_ranges]}


def validate(properties: Mapping[str, object]) -> GraduatedProperties:
    return GraduatedProperties(ranges.parse(properties, "graduated_ranges"))


@exact
def fee(aggregate: Aggregate, properties: GraduatedProperties) -> Decimal:
    """Sum over reached tiers of units-in-tier x per_unit_amount + flat_amount; zero usage
    reaches no tier, so it costs nothing (Lago adds flat amounts only when units > 0)."""
    units = aggregate.units
    if units <= 0:
        return ZERO
    total = ZERO
    lower = ZERO
    for tier in properties.graduated_ranges:
        top = units if tier.to_value is None else min(units, tier.to_value)
        total += (top - lower) * tier.per_unit_amount + tier.flat_amount
        if tier.to_value is None or units <= tier.to_value:
            break
        lower = tier.to_value
    return total


MODEL = ChargeModel("graduated", GraduatedProperties, validate, fee)
