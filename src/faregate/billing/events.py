"""Plain usage-event records as billing reads them (Lago's event: transaction_id, code,
timestamp, properties), and how their properties are read. No storage, no ingestion rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from faregate.billing.errors import BillingValidationError
from faregate.money import decimal_str, parse_decimal


@dataclass(frozen=True, slots=True)
class Event:
    transaction_id: str
    code: str
    timestamp: datetime
    properties: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timestamp.utcoffset() is None:
            raise BillingValidationError(
                "timestamp", "invalid_format", "timestamp needs a timezone"
            )


def numeric_property(event: Event, name: str) -> Decimal | None:
    """The event's numeric `name` property, None when absent (such events are not aggregated,
    as in Lago); a value that is not a number is a 422 naming `properties.<name>`."""
    value = event.properties.get(name)
    if value is None:
        return None
    try:
        number = parse_decimal(value)
    except (ValueError, ArithmeticError):
        raise BillingValidationError(f"properties.{name}", "invalid_value") from None
    if not number.is_finite():
        raise BillingValidationError(f"properties.{name}", "invalid_value")
    return number


def text_property(properties: Mapping[str, object], name: str) -> str | None:
    """A property as the text Lago compares (`properties->>'name'`): booleans are true/false."""
    value = properties.get(name)
    if type(value) is str:  # most properties, and what rollups read for every event
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_str(value)
    if type(value) is tuple:  # the gateway's `tags`: stored, and read back, as a list
        value = list(value)
    return str(value)
