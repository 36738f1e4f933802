"""Exact money helpers: nanos round half away from zero, decimal strings are plain."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from faregate.money import EXACT, decimal_str, to_nanos

finite = st.decimals(allow_nan=False, allow_infinity=False)


def test_to_nanos_rounds_half_away_from_zero_at_the_ninth_decimal() -> None:
    assert to_nanos(Decimal("0.0000000015")) == 2
    assert to_nanos(Decimal("-0.0000000015")) == -2
    assert to_nanos(Decimal("0.00000000149")) == 1
    assert to_nanos(Decimal("0.0000138")) == 13_800
    assert to_nanos(Decimal("-0E-8")) == 0
    assert to_nanos(Decimal("12")) == 12_000_000_000


@given(st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=12), max_size=8))
def test_to_nanos_remembers_nothing_that_changes_an_answer(amounts: list[Decimal]) -> None:
    """The last conversions are remembered by identity: converting the same objects again,
    in any order, and equal amounts that are other objects, gives what a fresh conversion
    gives."""
    fresh = [int(a.scaleb(9, EXACT).to_integral_value(ROUND_HALF_UP)) for a in amounts]
    for order in (amounts, amounts[::-1], amounts + amounts):
        expected = {id(a): n for a, n in zip(amounts, fresh, strict=True)}
        assert [to_nanos(a) for a in order] == [expected[id(a)] for a in order]
    assert [to_nanos(Decimal(str(a))) for a in amounts] == fresh


def test_decimal_str_is_plain_without_trailing_zeros() -> None:
    assert decimal_str(Decimal("0.00001380")) == "0.0000138"
    assert decimal_str(Decimal("1E+3")) == "1000"
    assert decimal_str(Decimal("1.5E-9")) == "0.0000000015"
    assert decimal_str(Decimal("-0E-8")) == "0"
    assert decimal_str(Decimal("100.0")) == "100"


@given(finite)
def test_decimal_str_parses_back_to_the_same_value_in_plain_notation(value: Decimal) -> None:
    text = decimal_str(value)
    assert "E" not in text and text != "-0"
    assert Decimal(text) == value  # exactly: no rounding to the context's 28 digits


def test_decimal_str_keeps_every_digit() -> None:
    """`normalize()` rounded these to 28 significant digits."""
    assert decimal_str(Decimal("12345678901234567890.123456789012345")) == (
        "12345678901234567890.123456789012345"
    )
    assert decimal_str(Decimal("1234567890123456789012345.1234560")) == (
        "1234567890123456789012345.123456"
    )
