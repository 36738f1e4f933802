"""Invariants of token cost: additive over any split of a usage, exact, never negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from faregate.money import from_nanos, to_nanos
from faregate.pricing import PriceCatalog, cost_of, cost_parts, estimate_tokens_cost, load_catalog
from faregate.pricing.loader import build_catalog
from faregate.pricing.price import ModelPrice
from faregate.pricing.yamlio import load_yaml
from faregate.usage import Usage

CATALOG: PriceCatalog = load_catalog()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Token-priced models without long-context bands: their cost is linear in every count.
LINEAR = sorted(
    (p for p in CATALOG if p.mode != "image" and not p.long_context),
    key=lambda p: (p.provider or "", p.model, p.effective_from),
)
MILLI = Decimal("0.001")
# Prices with what an estimate must respect: a dearer reasoning rate, long-context bands,
# tiers, a premium and a discount time-of-day window.
SHAPED = build_catalog(
    [
        (
            "shaped.yaml",
            load_yaml(
                """
models:
  - model: reasoner
    effective_from: 2024-01-01
    input: 1.25
    output: 2
    reasoning: 7.5
    cache_write: 1.5625
    cache_write_1h: 2.5
    long_context:
      - {above_input_tokens: 200000, input: 2.5, output: 4, reasoning: 15, cache_write: 3.125,
         cache_write_1h: 5}
      - {above_input_tokens: 1000000, input: 5, output: 3, reasoning: 2}
    tiers: {priority: 1.75, flex: 0.5}
    windows: [{start: "09:00", end: "12:00", tz: Asia/Shanghai, multiplier: 2}]
  - model: nightly
    effective_from: 2024-01-01
    input: 0.27
    output: 1.1
    tiers: {batch: 0.5}
    windows: [{start: "16:30", end: "00:30", multiplier: 0.5}]
""",
                name="shaped.yaml",
            ),
        )
    ]
)


# Every token-priced model, long-context bands, tiers and time-of-day windows included.
def _token_priced(catalog: PriceCatalog) -> list[ModelPrice]:
    prices = (p for p in catalog if p.mode != "image")
    return sorted(prices, key=lambda p: (p.provider or "", p.model, p.effective_from))


@st.composite
def token_usages(draw: st.DrawFn) -> Usage:
    input_tokens = draw(st.integers(0, 2_000_000))
    output_tokens = draw(st.integers(0, 200_000))
    cached = draw(st.integers(0, input_tokens))
    writes = draw(st.integers(0, input_tokens - cached))
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=writes,
        cache_write_1h_tokens=draw(st.integers(0, writes)),
        output_tokens=output_tokens,
        reasoning_tokens=draw(st.integers(0, output_tokens)),
    )


@st.composite
def priced_instants(draw: st.DrawFn) -> tuple[ModelPrice, datetime, str | None]:
    price = draw(st.sampled_from(LINEAR))
    at = max(T0 + timedelta(minutes=draw(st.integers(0, 60 * 24 * 800))), price.effective_from)
    tier = draw(st.sampled_from([None, "default", *(name for name, _ in price.tiers)]))
    return price, at, tier


def add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )


@given(priced=priced_instants(), a=token_usages(), b=token_usages())
def test_cost_is_additive_over_any_split_of_a_usage(
    priced: tuple[ModelPrice, datetime, str | None], a: Usage, b: Usage
) -> None:
    price, at, tier = priced
    whole = cost_of(add(a, b), price, at=at, tier=tier)
    assert cost_of(a, price, at=at, tier=tier) + cost_of(b, price, at=at, tier=tier) == whole
    assert whole >= 0


def test_every_shipped_token_rate_has_at_most_three_decimals() -> None:
    rates = [
        r
        for p in CATALOG
        for r in (
            p.input,
            p.cached_input,
            p.rates.cache_write,
            p.rates.cache_write_1h,
            p.output,
            p.reasoning,
        )
    ]
    assert all(r == r.quantize(MILLI) for r in rates)


@given(price=st.sampled_from(LINEAR), usage=token_usages())
def test_untiered_token_cost_fits_integer_nanos_exactly(price: ModelPrice, usage: Usage) -> None:
    # A rate with three decimals per 1M tokens is a whole number of nanos per token.
    cost = cost_of(usage, price, at=max(T0, price.effective_from) + timedelta(hours=8))
    assert from_nanos(to_nanos(cost)) == cost


@given(priced=priced_instants(), usage=token_usages())
def test_cost_parts_sum_exactly_to_the_cost(
    priced: tuple[ModelPrice, datetime, str | None], usage: Usage
) -> None:
    price, at, tier = priced
    parts = cost_parts(usage, price, at=at, tier=tier)
    assert parts.total == cost_of(usage, price, at=at, tier=tier)
    assert min(parts.input, parts.cached_input, parts.output, parts.reasoning) >= 0


@given(
    price=st.sampled_from(_token_priced(SHAPED)) | st.sampled_from(_token_priced(CATALOG)),
    minutes=st.integers(0, 60 * 24 * 800),
    input_tokens=st.integers(0, 3_000_000),
    output_tokens=st.integers(0, 200_000),
    worst_case_time=st.booleans(),
    cache_writes=st.booleans(),
    hour_writes=st.booleans(),
    data=st.data(),
)
def test_a_token_estimate_is_the_cost_of_its_worst_case_usage(
    price: ModelPrice,
    minutes: int,
    input_tokens: int,
    output_tokens: int,
    worst_case_time: bool,
    cache_writes: bool,
    hour_writes: bool,
    data: st.DataObject,
) -> None:
    # The estimate is written out for speed; it must stay what it is defined as: the cost of
    # no cache hits, every input token written to the cache when the request may write and
    # that costs more, every output token at the dearer of the output and reasoning rates,
    # at the window in force (or the dearest one), under the tier asked for.
    at = max(T0 + timedelta(minutes=minutes), price.effective_from)
    tier = data.draw(st.sampled_from([None, "default", *(name for name, _ in price.tiers)]))
    rates = price.rates_for(input_tokens)
    hour = hour_writes and rates.cache_write_1h > rates.cache_write
    write_rate = rates.cache_write_1h if hour else rates.cache_write
    writes = input_tokens if cache_writes and write_rate > rates.input else 0
    worst = Usage(
        input_tokens=input_tokens,
        cache_write_tokens=writes,
        cache_write_1h_tokens=writes if hour else 0,
        output_tokens=output_tokens,
        reasoning_tokens=output_tokens if rates.reasoning > rates.output else 0,
    )
    estimate = estimate_tokens_cost(
        price,
        input_tokens,
        output_tokens,
        at=at,
        tier=tier,
        worst_case_time=worst_case_time,
        cache_writes=cache_writes,
        hour_writes=hour_writes,
    )
    cost = cost_of(worst, price, at=at, tier=tier)
    if not worst_case_time:
        assert estimate == cost
        return
    # At the dearest window's multiplier (never below the standard rate) instead of `at`'s.
    assert estimate >= cost
    with localcontext(Context(prec=100)):
        assert estimate * price.window_multiplier(at) == cost * price.dearest_window_multiplier()
