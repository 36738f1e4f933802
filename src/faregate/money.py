"""Exact money: Decimal in code, integer nanos (1e-9 of the unit) in storage.

Rounding rule, written once: amounts are rounded to the currency's minor unit only on an
invoice line, half away from zero (ROUND_HALF_UP), and totals are sums of rounded lines.
No float ever enters this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

NANOS_PER_UNIT = 10**9
_NANO = Decimal(1) / NANOS_PER_UNIT
ZERO = Decimal(0)
# The magnitude (exclusive) below which every usage number stays: an event's amount and its
# metric's value, a charge's amounts and counts. It is what `precise_total_amount_cents`'
# NUMERIC(40,15) holds on PostgreSQL; past it an event failed the insert of its whole batch,
# and a value such as 1e400 broke the decimal sums of current usage and of invoices.
MAX_USAGE_NUMBER = Decimal(10) ** 25
# The decimals a usage number may have (an event's value, a charge's amount or bound). With
# both bounds, every sum of usage numbers (up to 2^63 of them: 44 integer digits and 40
# decimals) and its product by a price (149 digits, 151 once divided by 100) fits USAGE_DIGITS.
MAX_USAGE_DECIMALS = 40
USAGE_DIGITS = 200
# The context usage arithmetic runs in: Python's default keeps 28 digits, so a sum of values
# with more (10**4 + 1.1234567890123456789012345) was silently rounded. Additions and
# products of bounded usage numbers are exact in it; only a true quotient (a weighted sum's
# time average, a unit price) is rounded, at 200 digits.
EXACT = Context(
    prec=USAGE_DIGITS,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
_LAST_DECIMAL = Decimal(1).scaleb(-MAX_USAGE_DECIMALS)

P = ParamSpec("P")
R = TypeVar("R")

# ISO 4217 minor units for the currencies we price in; everything else has two.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3, "TND": 3}


def to_nanos(amount: Decimal) -> int:
    """Decimal -> integer nanos, rounding half away from zero at the 9th decimal.

    The last two conversions are remembered by the identity of their (immutable) amounts: a
    request's cost and price are each converted by its budget or its wallet, then again by
    its record, and a conversion costs ~5,000 instructions where a look here costs ~50."""
    global _recent
    if not amount:  # zero is common (`saved` when nothing was cached)
        return 0
    older, last = _recent  # one read: consistent even if another thread converts meanwhile
    if last[0] is amount:
        return last[1]
    if older[0] is amount:
        return older[1]
    # Scaled exactly (a product at 28 digits could round ...4999 up to ...5 first), and
    # the rounding passed positionally: the keyword form costs a third of this function.
    nanos = int(amount.scaleb(9, EXACT).to_integral_value(ROUND_HALF_UP))
    _recent = (last, (amount, nanos))
    return nanos


_recent: tuple[tuple[Decimal, int], tuple[Decimal, int]] = ((ZERO, 0), (ZERO, 0))


def exact(function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` in the EXACT context (its callers' context is left as it was)."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(EXACT):
            return function(*args, **kwargs)

    return run


def within_usage_bounds(value: Decimal | int) -> bool:
    """Below MAX_USAGE_NUMBER in magnitude, with at most MAX_USAGE_DECIMALS non-zero decimals."""
    if type(value) is int:
        return -MAX_USAGE_NUMBER < value < MAX_USAGE_NUMBER
    assert isinstance(value, Decimal)
    if not value.is_finite() or not -MAX_USAGE_NUMBER < value < MAX_USAGE_NUMBER:
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    # Trailing zeros past the 40th decimal (1.50000...0) change nothing: compared exactly.
    return exponent >= -MAX_USAGE_DECIMALS or value == value.quantize(_LAST_DECIMAL, context=EXACT)


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


@exact
def tax_cents(fees_cents: int, tax_rate: Decimal, currency: str = "USD") -> int:
    """Taxes of fees summing to `fees_cents`, at `tax_rate` percent, rounded once (Lago rounds
    taxes at the invoice level). Exact: a rate with many digits is not rounded at 28 first."""
    return to_cents(Decimal(fees_cents).scaleb(-minor_units(currency)) * tax_rate / 100, currency)


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
