"""Parsing of Lago `properties` values into Decimal and int, each failure naming its field.
Amounts are strings or integers, as Lago requires; a float is refused, never converted."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from faregate.billing.errors import BillingValidationError
from faregate.money import MAX_USAGE_NUMBER, decimal_str, within_usage_bounds

ZERO = Decimal(0)
OUT_OF_RANGE = "value_is_out_of_range"


def _to_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool | float):
        return None
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return result if result.is_finite() else None


def amount(
    raw: Mapping[str, object], key: str, *, path: str = "", error: str = "invalid_amount"
) -> Decimal:
    """A required non-negative decimal amount, below MAX_USAGE_NUMBER with at most
    MAX_USAGE_DECIMALS decimals (so that pricing usage with it stays exact)."""
    value = _to_decimal(raw.get(key))
    if value is None or value < 0:
        raise BillingValidationError(path + key, error)
    if not within_usage_bounds(value):
        raise BillingValidationError(path + key, OUT_OF_RANGE)
    return value


def optional_amount(
    raw: Mapping[str, object], key: str, *, path: str = "", error: str = "invalid_amount"
) -> Decimal | None:
    if raw.get(key) is None or raw.get(key) == "":
        return None
    return amount(raw, key, path=path, error=error)


def bound(raw: Mapping[str, object], key: str, *, path: str, error: str) -> Decimal | None:
    """A range bound: a non-negative number, or None for an open upper bound."""
    if raw.get(key) is None:
        return None
    return amount(raw, key, path=path, error=error)


def integer(
    raw: Mapping[str, object], key: str, *, error: str, minimum: int, default: int | None = None
) -> int:
    """An integer property (`package_size`, `free_units`); integral decimals are accepted."""
    value = raw.get(key)
    if value is None and default is not None:
        return default
    number = _to_decimal(value)
    if number is None or number != number.to_integral_value() or number < minimum:
        raise BillingValidationError(key, error)
    if number >= MAX_USAGE_NUMBER:
        raise BillingValidationError(key, OUT_OF_RANGE)
    return int(number)


def text(value: Decimal | None) -> str | None:
    """Lago serializes amounts as plain decimal strings."""
    return None if value is None else decimal_str(value)
