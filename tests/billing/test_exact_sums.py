"""Usage sums and prices are exact whatever the caller's decimal context: values below 10^25
with up to 40 decimals used to be added at Python's 28 digits, so 10^4 + 1.1234...0123
lost its last decimals. Checked against Fraction arithmetic, which never rounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.billing import aggregations
from faregate.billing.aggregate import Aggregate
from faregate.billing.charge_models import graduated, percentage, standard
from faregate.billing.events import Event
from faregate.billing.marginal import marginal_fee
from faregate.metering import rollups
from faregate.money import MAX_USAGE_DECIMALS, tax_cents, within_usage_bounds

START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = aggregations.Window(START, START + timedelta(days=31), Decimal(31 * 86400))


@st.composite
def usage_numbers(draw: st.DrawFn, signed: bool = True) -> Decimal:
    """A usage number at the bounds: |x| < 10^25, up to 40 decimals, often all 65 digits."""
    decimals = draw(st.integers(0, MAX_USAGE_DECIMALS))
    limit = 10 ** (25 + decimals) - 1
    digits = draw(st.integers(-limit if signed else 0, limit))
    return Decimal(f"{digits}E-{decimals}")  # scaleb() would round to the context's digits


def _events(values: list[Decimal]) -> list[Event]:
    return [
        Event(f"t{i}", "m", START + timedelta(seconds=i), {"v": str(v)})
        for i, v in enumerate(values)
    ]


def test_the_example_that_lost_its_last_digits_sums_exactly() -> None:
    values = [Decimal(10**4), Decimal("1.123456789012345678901234567890123")]
    result = aggregations.sum_("v", _events(values), WINDOW, None)
    assert result.units == Decimal("10001.123456789012345678901234567890123")


@settings(max_examples=200, deadline=None)
@given(st.lists(usage_numbers(), min_size=1, max_size=30), st.integers(1, 27))
def test_sum_agg_and_its_rollups_equal_the_exact_sum_in_any_caller_context(
    values: list[Decimal], caller_digits: int
) -> None:
    exact = sum(map(Fraction, values), Fraction(0))
    with localcontext(prec=caller_digits):  # a caller's coarse context changes nothing
        result = aggregations.sum_("v", _events(values), WINDOW, None)
        spec = rollups.MetricSpec("m", "sum_agg", "v", ())
        rows = [
            {
                "code": "m",
                "external_subscription_id": "s",
                "timestamp": e.timestamp,
                "properties": e.properties,
            }
            for e in _events(values)
        ]
        half = len(rows) // 2
        left: dict[rollups.RollupKey, rollups.Cell] = {}
        right: dict[rollups.RollupKey, rollups.Cell] = {}
        rollups.accumulate(left, {"m": spec}, rows[:half])
        rollups.accumulate(right, {"m": spec}, rows[half:])
        (key,) = right
        merged = rollups.merge_cells(left[key], right[key]) if left else right[key]
    assert Fraction(result.units) == exact
    assert Fraction(Decimal(merged.sum or 0)) == exact


@settings(max_examples=200, deadline=None)
@given(
    st.lists(usage_numbers(signed=False), min_size=1, max_size=20),
    usage_numbers(signed=False),
    st.integers(0, 100),
)
def test_charge_models_price_exact_sums_exactly(
    values: list[Decimal], price: Decimal, rate: int
) -> None:
    units = sum(map(Fraction, values), Fraction(0))
    with localcontext(prec=10):
        usage = Aggregate.of_values(*values)
        flat = standard.fee(usage, standard.StandardProperties(price))
        share = percentage.fee(usage, percentage.PercentageProperties(Decimal(rate), price))
        tiers = graduated.validate(
            {
                "graduated_ranges": [
                    {
                        "from_value": 0,
                        "to_value": "1.5",
                        "per_unit_amount": str(price),
                        "flat_amount": "0",
                    },
                    {
                        "from_value": "1.5",
                        "to_value": None,
                        "per_unit_amount": "0.3",
                        "flat_amount": str(price),
                    },
                ]
            }
        )
        tiered = graduated.fee(usage, tiers)
        delta = marginal_fee("standard", standard.StandardProperties(price), Aggregate(), usage)
    assert Fraction(flat) == Fraction(delta) == units * Fraction(price)
    assert Fraction(share) == units * rate / 100 + len(values) * Fraction(price)
    first = min(units, Fraction(3, 2))
    above = units - first
    expected = first * Fraction(price) + (above * Fraction(3, 10) + Fraction(price) if above else 0)
    assert Fraction(tiered) == expected


def test_taxes_of_a_rate_with_many_digits_are_rounded_once() -> None:
    # 1 cent x 49.99...9% is 0.4999...9 cents: rounded to 28 digits first it became half a
    # cent, and then a whole one.
    rate = Decimal("49." + "9" * 29)
    with localcontext(prec=28):
        assert tax_cents(1, rate) == 0


def test_a_usage_number_has_at_most_forty_significant_decimals() -> None:
    assert within_usage_bounds(Decimal("1." + "1" * 40))
    assert within_usage_bounds(Decimal("1.5" + "0" * 60))  # trailing zeros are no decimals
    assert not within_usage_bounds(Decimal("1." + "1" * 41))
    assert not within_usage_bounds(Decimal("1e-41"))
    assert not within_usage_bounds(Decimal(10) ** 25)
