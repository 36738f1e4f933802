"""Tier ranges shared by graduated and volume: `[{from_value, to_value, per_unit_amount,
flat_amount}]`, validated with Lago's bounds rules (first from 0, last to null, contiguous)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.charge_models import fields
from faregate.billing.errors import BillingValidationError

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Range:
    """Units in (previous range's to_value, to_value]; `to_value` None is unbounded.

    Lago accepts stepped bounds (0-10, 11-20: from = previous to + 1) and adjacent bounds
    (0-10, 10-20). Both mean the same tiers: the range after `to_value: 10` starts above 10
    units, so 10.5 units put 0.5 in the second range either way.
    """

    from_value: Decimal
    to_value: Decimal | None
    per_unit_amount: Decimal
    flat_amount: Decimal

    def to_dict(self) -> dict[str, object]:
        return {
            "from_value": int(self.from_value)
            if self.from_value == self.from_value.to_integral_value()
            else fields.text(self.from_value),
            "to_value": None
            if self.to_value is None
            else int(self.to_value)
            if self.to_value == self.to_value.to_integral_value()
            else fields.text(self.to_value),
            "per_unit_amount": fields.text(self.per_unit_amount),
            "flat_amount": fields.text(self.flat_amount),
        }


def parse(properties: Mapping[str, object], key: str) -> tuple[Range, ...]:
    """Parse and check `properties[key]`; errors name e.g. `volume_ranges[1].from_value`."""
    raw = properties.get(key)
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise BillingValidationError(key, f"missing_{key}")
    ranges = tuple(_parse_one(item, f"{key}[{index}].", key) for index, item in enumerate(raw))
    _check_bounds(ranges, key)
    return ranges


def _parse_one(item: object, path: str, key: str) -> Range:
    if not isinstance(item, Mapping):
        raise BillingValidationError(path.rstrip("."), f"invalid_{key}")
    from_value = fields.bound(item, "from_value", path=path, error=f"invalid_{key}")
    return Range(
        from_value=ZERO if from_value is None else from_value,
        to_value=fields.bound(item, "to_value", path=path, error=f"invalid_{key}"),
        per_unit_amount=fields.amount(item, "per_unit_amount", path=path),
        flat_amount=fields.amount(item, "flat_amount", path=path),
    )


def _check_bounds(ranges: tuple[Range, ...], key: str) -> None:
    previous_to = ZERO
    for index, current in enumerate(ranges):
        path = f"{key}[{index}]."
        first_ok = current.from_value == 0
        follows = current.from_value in (previous_to, previous_to + 1)
        if not (first_ok if index == 0 else follows):
            raise BillingValidationError(path + "from_value", f"invalid_{key}")
        last = index == len(ranges) - 1
        if last != (current.to_value is None):
            raise BillingValidationError(path + "to_value", f"invalid_{key}")
        if current.to_value is not None:
            if current.to_value <= current.from_value:
                raise BillingValidationError(path + "to_value", f"invalid_{key}")
            previous_to = current.to_value
