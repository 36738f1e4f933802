"""Volume charge model: every unit at the rate of the tier the total falls in, plus that tier's
`flat_amount` (Lago `ChargeModels::VolumeService`). Crossing into a cheaper tier lowers the fee."""

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
class VolumeProperties:
    volume_ranges: tuple[ranges.Range, ...]

    def to_dict(self) -> dict[str, object]:
        return {"volume_ranges": [r.to_dict() for r in self.volume_ranges]}


def validate(properties: Mapping[str, object]) -> VolumeProperties:
    return VolumeProperties(ranges.parse(properties, "volume_ranges"))


def tier(units: Decimal, properties: VolumeProperties) -> ranges.Range:
    """The tier whose (previous to_value, to_value] holds `units` (the last one is open)."""
    for candidate in properties.volume_ranges:
        if candidate.to_value is None or units <= candidate.to_value:
            return candidate
    return properties.volume_ranges[-1]


@exact
def fee(aggregate: Aggregate, properties: VolumeProperties) -> Decimal:
    """No usage, no fee: unlike Lago, the first tier's flat amount is not billed on zero units,
    so that fee(empty) = 0 and real-time debits telescope."""
    units = aggregate.units
    if units <= 0:
        return ZERO
    matched = tier(units, properties)
    return units * matched.per_unit_amount + matched.flat_amount


MODEL = ChargeModel("volume", VolumeProperties, validate, fee, pay_in_advance=False)
