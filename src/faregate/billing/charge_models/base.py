"""The charge-model contract: a `validate` that turns Lago's `properties` JSON into a typed,
Decimal-only value, and a pure `fee` over an `Aggregate`. No I/O, no rounding to cents here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

from faregate.billing.aggregate import Aggregate


class ChargeProperties(Protocol):
    """Validated properties of one charge model; `to_dict` gives Lago's JSON (amounts as strings)."""

    def to_dict(self) -> dict[str, object]: ...


P = TypeVar("P", bound=ChargeProperties)


def _never(properties: object) -> bool:
    return False


@dataclass(frozen=True)
class ChargeModel(Generic[P]):
    """One registry entry. `fee(aggregate, properties)` is the period-to-date amount of a bucket,
    exact, and zero for an empty aggregate, which is what makes marginal fees telescope."""

    name: str
    properties_type: type[P]
    validate: Callable[[Mapping[str, object]], P]
    fee: Callable[[Aggregate, P], Decimal]
    # True when `fee` reads Aggregate.event_values (per-event pricing).
    needs_event_values: Callable[[P], bool] = _never
    # Lago forbids pay_in_advance with volume: a later event can lower earlier fees.
    pay_in_advance: bool = True
