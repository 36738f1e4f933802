"""Package charge model: `amount` per started package of `package_size` units, after
`free_units` (Lago `ChargeModels::PackageService`: a package counts from its first unit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import fields
from faregate.billing.charge_models.base import ChargeModel
from faregate.money import exact

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PackageProperties:
    amount: Decimal
    package_size: int
    free_units: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "amount": fields.text(self.amount),
            "package_size": self.package_size,
            "free_units": self.free_units,
        }


def validate(properties: Mapping[str, object]) -> PackageProperties:
    return PackageProperties(
        amount=fields.amount(properties, "amount"),
        package_size=fields.integer(
            properties, "package_size", error="invalid_package_size", minimum=1
        ),
        free_units=fields.integer(
            properties, "free_units", error="invalid_free_units", minimum=0, default=0
        ),
    )


def packages(units: Decimal, properties: PackageProperties) -> int:
    """Packages started by `units`: one token past a boundary starts a whole package."""
    paid = units - properties.free_units
    if paid <= 0:
        return 0
    whole, rest = divmod(paid, properties.package_size)
    return int(whole) + (1 if rest else 0)


@exact
def fee(aggregate: Aggregate, properties: PackageProperties) -> Decimal:
    return packages(aggregate.units, properties) * properties.amount


MODEL = ChargeModel("package", PackageProperties, validate, fee)
