"""Standard charge model: `amount` per unit (Lago `ChargeModels::StandardService`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import fields
from faregate.billing.charge_models.base import ChargeModel
from faregate.money import exact


@dataclass(frozen=True, slots=True)
class StandardProperties:
    amount: Decimal

    def to_dict(self) -> dict[str, object]:
        return {"amount": fields.text(self.amount)}


def validate(properties: Mapping[str, object]) -> StandardProperties:
    return StandardProperties(amount=fields.amount(properties, "amount"))


@exact
def fee(aggregate: Aggregate, properties: StandardProperties) -> Decimal:
    return aggregate.units * properties.amount


MODEL = ChargeModel("standard", StandardProperties, validate, fee)
