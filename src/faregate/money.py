"""Exact money: Decimal in code, integer nanos (1e-9 of the unit) in storage.

Rounding rule, written once: amounts are rounded to the currency's minor unit only on an
invoice line, half away from zero (ROUND_HALF_UP), and totals are sums of rounded lines.
No float ever enters this module.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

NANOS_PER_UNIT = 10**9
_NANO = Decimal(1) / NANOS_PER_UNIT
ZERO = Decimal(0)
# The magnitude (exclusive) below which every usage number stays: an event's amount and its
# metric's value, a charge's amounts and counts. It is what `precise_total_amount_cents`'
# NUMERIC(40,15) holds on PostgreSQL; past it an event failed the insert of its whole batch,
# and a value such as 1e400 broke the decimal sums of current usage and of invoices.
MAX_USAGE_NUMBER = Decimal(10) ** 25

# ISO 4217 minor units for the currencies we price in; everything else has two.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3, "TND": 3}


def to_nanos(amount: Decimal) -> int:
    """Decimal -> integer nanos, rounding half away from zero at the 9th decimal."""
    if not amount:  # zero is common (`saved` when nothing was cached)
        return 0
    # Rounding passed positionally: the keyword form costs a third of this function.
    return int((amount * NANOS_PER_UNIT).to_integral_value(ROUND_HALF_UP))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_UNIT


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency.upper(), 2)


def round_to_minor(amount: Decimal, currency: str = "USD") -> Decimal:
    exponent = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(exponent, rounding=ROUND_HALF_UP)


def to_cents(amount: Decimal, currency: str = "USD") -> int:
    """An amount rounded to the minor unit, as an integer count of minor units."""
    return int(round_to_minor(amount, currency).scaleb(minor_units(currency)))


def decimal_str(amount: Decimal) -> str:
    """Plain (non-scientific) string of an exact decimal, trailing zeros removed. Exact
    whatever its digits: `normalize()` would round to the context's 28."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_decimal(value: object) -> Decimal:
    """Parse a client-supplied amount; floats are converted through their shortest repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        return Decimal(value.strip())
    raise ValueError("not a number")
