"""cost_of against amounts computed by hand: tokens, cache, reasoning, long context, tiers,
time-of-day windows, images and seconds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from faregate.errors import FaregateError
from faregate.pricing import PriceCatalog, UnpricedUsage, cost_of
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal


def test_mistral_large_costs_input_and_output_per_million_exactly(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mistral-large", "mistral", at=NOW)
    cost = cost_of(Usage(input_tokens=1234, output_tokens=567), price, at=NOW)
    # 1234 x 4 / 1e6 + 567 x 12 / 1e6 = 0.004936 + 0.006804
    assert cost == D("0.011740")
    assert isinstance(cost, Decimal)


def test_cached_and_reasoning_tokens_use_their_own_rates(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - {model: m, effective_from: 2024-01-01, input: 1, cached_input: 0.1, output: 2, reasoning: 3}
""")
    price = catalog.require_price("m", at=NOW)
    usage = Usage(
        input_tokens=1000, cached_input_tokens=400, output_tokens=500, reasoning_tokens=200
    )
    # 600 x 1 + 400 x 0.1 + 300 x 2 + 200 x 3 = 1840 per 1e6
    assert cost_of(usage, price, at=NOW) == D("0.00184")


def test_cached_defaults_to_input_and_reasoning_to_output(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 1, output: 2}]"
    )
    usage = Usage(
        input_tokens=1000, cached_input_tokens=400, output_tokens=500, reasoning_tokens=200
    )
    # 1000 x 1 + 500 x 2 = 2000 per 1e6
    assert cost_of(usage, catalog.require_price("m", at=NOW), at=NOW) == D("0.002")


def test_o3_reasoning_tokens_are_billed_at_the_output_rate(shipped: PriceCatalog) -> None:
    price = shipped.require_price("o3", "openai", at=NOW)
    usage = Usage(
        input_tokens=10_000, cached_input_tokens=4_000, output_tokens=3_000, reasoning_tokens=2_000
    )
    # 6000 x 2 + 4000 x 0.5 + 1000 x 8 + 2000 x 8 = 38000 per 1e6
    assert cost_of(usage, price, at=NOW) == D("0.038")


def test_long_prompt_moves_every_token_to_the_long_context_rates(shipped: PriceCatalog) -> None:
    price = shipped.require_price("gemini-2.5-pro", "gemini", at=NOW)
    short = Usage(input_tokens=200_000, output_tokens=1_000)
    long = Usage(input_tokens=250_000, output_tokens=1_000)
    # 200000 x 1.25 + 1000 x 10 = 260000; 250000 x 2.5 + 1000 x 15 = 640000 (per 1e6)
    assert cost_of(short, price, at=NOW) == D("0.26")
    assert cost_of(long, price, at=NOW) == D("0.64")


def test_priority_tier_multiplies_the_whole_cost(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-large", at=NOW)
    usage = Usage(input_tokens=1000, output_tokens=1000)
    # (1000 x 2.5 + 1000 x 10) / 1e6 = 0.0125; x 1.75 priority; x 0.5 flex
    assert cost_of(usage, price, at=NOW) == D("0.0125")
    assert cost_of(usage, price, at=NOW, tier="priority") == D("0.021875")
    assert cost_of(usage, price, at=NOW, tier="flex") == D("0.00625")
    assert cost_of(usage, price, at=NOW, tier="default") == D("0.0125")


def test_provider_wide_batch_tier_applies_to_each_model(shipped: PriceCatalog) -> None:
    price = shipped.require_price("gpt-4.1", "openai", at=NOW)
    usage = Usage(input_tokens=1_000_000)
    assert cost_of(usage, price, at=NOW, tier="batch") == D("1.00")
    assert cost_of(usage, price, at=NOW, tier="priority") == D("3.50")


def test_an_undeclared_service_tier_is_an_error_not_the_standard_price(
    shipped: PriceCatalog,
) -> None:
    price = shipped.require_price("mock-small", at=NOW)
    with pytest.raises(UnpricedUsage) as info:
        cost_of(Usage(input_tokens=10), price, at=NOW, tier="priority")
    assert isinstance(info.value, FaregateError)
    assert info.value.code == "unknown_service_tier"


@pytest.mark.parametrize(
    ("clock", "discounted"),
    [
        ("2025-03-01T16:29:59", False),
        ("2025-03-01T16:30:00", True),
        ("2025-03-01T23:59:59", True),
        ("2025-03-02T00:00:00", True),
        ("2025-03-02T00:29:59", True),
        ("2025-03-02T00:30:00", False),
        ("2025-03-02T08:00:00", False),
    ],
)
def test_deepseek_off_peak_window_wraps_midnight(
    shipped: PriceCatalog, clock: str, discounted: bool
) -> None:
    at = datetime.fromisoformat(clock).replace(tzinfo=UTC)
    price = shipped.require_price("deepseek-chat", "deepseek", at=at)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    # 0.27 + 1.10 = 1.37 at the standard rate; half of it off-peak
    assert cost_of(usage, price, at=at) == (D("0.685") if discounted else D("1.37"))


def test_window_is_read_in_its_own_time_zone(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - model: m
    effective_from: 2024-01-01
    input: 1
    output: 1
    windows: [{start: "00:30", end: "08:30", tz: Asia/Shanghai, multiplier: 0.5}]
""")
    price = catalog.require_price("m", at=NOW)
    usage = Usage(input_tokens=1_000_000)
    beijing_0100 = datetime(2025, 3, 1, 17, 0, tzinfo=UTC)  # 01:00 in Beijing
    beijing_1600 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert cost_of(usage, price, at=beijing_0100) == D("0.5")
    assert cost_of(usage, price, at=beijing_1600) == D("1")
    elsewhere = beijing_0100.astimezone(timezone(timedelta(hours=5)))
    assert cost_of(usage, price, at=elsewhere) == D("0.5")


def test_tier_and_window_multipliers_compose(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - model: m
    effective_from: 2024-01-01
    input: 2
    output: 2
    tiers: {priority: 1.5}
    windows: [{start: "22:00", end: "06:00", multiplier: 0.5}]
""")
    price = catalog.require_price("m", at=NOW)
    night = datetime(2025, 1, 1, 23, 0, tzinfo=UTC)
    # 1e6 x 2 / 1e6 = 2; x 1.5 x 0.5
    assert cost_of(Usage(input_tokens=1_000_000), price, at=night, tier="priority") == D("1.5")


def test_seconds_are_priced_per_second(catalog_from_yaml: Callable[[str], PriceCatalog]) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 0, output: 0, per_second: 0.0001}]"
    )
    usage = Usage(seconds=D("12.5"))
    assert cost_of(usage, catalog.require_price("m", at=NOW), at=NOW) == D("0.00125")


def test_seconds_without_a_per_second_price_are_an_error(shipped: PriceCatalog) -> None:
    with pytest.raises(UnpricedUsage):
        cost_of(Usage(seconds=D(3)), shipped.require_price("mock-small", at=NOW), at=NOW)


def test_free_moderation_costs_zero(shipped: PriceCatalog) -> None:
    price = shipped.require_price("omni-moderation-latest", "openai", at=NOW)
    assert cost_of(Usage(input_tokens=5000), price, at=NOW) == 0


def test_naive_instants_are_refused(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-small", at=NOW)
    with pytest.raises(ValueError):
        cost_of(Usage(input_tokens=1), price, at=datetime(2026, 1, 1))


def test_one_hour_cache_writes_cost_the_one_hour_rate_apart_from_five_minute_ones(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - {model: m, effective_from: 2024-01-01, input: 3, cache_write: 3.75, cache_write_1h: 6,
     output: 15}
""")
    usage = Usage(
        input_tokens=10_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000, output_tokens=10
    )
    # 7000 x 3 + 2000 x 3.75 + 1000 x 6 + 10 x 15 = 34650 per 1e6
    assert cost_of(usage, catalog.require_price("m", at=NOW), at=NOW) == D("0.03465")


def test_without_a_one_hour_rate_one_hour_writes_cost_the_write_rate(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 3, cache_write: 3.75, output: 15}]"
    )
    usage = Usage(input_tokens=1000, cache_write_tokens=1000, cache_write_1h_tokens=1000)
    assert cost_of(usage, catalog.require_price("m", at=NOW), at=NOW) == D("0.00375")


def test_the_shipped_claude_models_write_the_one_hour_cache_at_twice_input(
    shipped: PriceCatalog,
) -> None:
    price = shipped.require_price("claude-sonnet-4", "anthropic", at=NOW)
    assert (price.rates.cache_write, price.rates.cache_write_1h) == (D("3.75"), D("6"))
    assert price.long_context[0].rates.cache_write_1h == D("12")
    usage = Usage(input_tokens=2000, cache_write_tokens=1000, cache_write_1h_tokens=1000)
    # 1000 x 3 + 1000 x 6 = 9000 per 1e6
    assert cost_of(usage, price, at=NOW) == D("0.009")
