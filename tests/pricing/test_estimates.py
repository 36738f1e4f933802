"""Estimates for routing and holds: worst case over what is not known yet, never below
what the call can cost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from faregate.pricing import (
    PriceCatalog,
    UnpricedUsage,
    cost_of,
    estimate_images_cost,
    estimate_tokens_cost,
)
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal


def test_token_estimate_prices_input_uncached_and_output_in_full(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-small", at=NOW)
    # 1000 x 0.15 + 500 x 0.60 = 450 per 1e6
    assert estimate_tokens_cost(price, 1000, 500, at=NOW) == D("0.00045")
    cached = Usage(input_tokens=1000, cached_input_tokens=800, output_tokens=500)
    assert cost_of(cached, price, at=NOW) < estimate_tokens_cost(price, 1000, 500, at=NOW)


def test_token_estimate_uses_a_dearer_reasoning_rate(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 1, output: 2, reasoning: 3}]"
    )
    # 100 x 1 + 100 x 3 = 400 per 1e6
    assert estimate_tokens_cost(catalog.require_price("m", at=NOW), 100, 100, at=NOW) == D("0.0004")


def test_token_estimate_applies_the_tier_and_the_window_in_force(shipped: PriceCatalog) -> None:
    large = shipped.require_price("mock-large", at=NOW)
    assert estimate_tokens_cost(large, 1000, 1000, at=NOW, tier="priority") == D("0.021875")
    offpeak = shipped.require_price("mock-offpeak", at=NOW)
    night = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)
    # 1e6 x 0.27 + 1e6 x 1.10 = 1.37; half at night
    assert estimate_tokens_cost(offpeak, 1_000_000, 1_000_000, at=night) == D("0.685")


def test_hold_estimate_can_take_the_dearest_window(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - model: peaky
    effective_from: 2024-01-01
    input: 1
    output: 1
    windows: [{start: "09:00", end: "12:00", tz: Asia/Shanghai, multiplier: 2}]
""")
    price = catalog.require_price("peaky", at=NOW)
    off_peak = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # 20:00 in Beijing
    assert estimate_tokens_cost(price, 1_000_000, 0, at=off_peak) == D("1")
    assert estimate_tokens_cost(price, 1_000_000, 0, at=off_peak, worst_case_time=True) == D("2")


def test_hold_estimate_of_a_discount_window_never_goes_below_the_standard_rate(
    shipped: PriceCatalog,
) -> None:
    price = shipped.require_price("mock-offpeak", at=NOW)
    night = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)
    assert estimate_tokens_cost(price, 1_000_000, 0, at=night, worst_case_time=True) == D("0.27")


def test_image_estimate_multiplies_by_n_once(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-image", at=NOW)
    assert estimate_images_cost(price, 3, "1024x1024", "hd", None, at=NOW) == D("0.24")
    assert estimate_images_cost(price, 3, None, None, None, at=NOW) == D("0.12")  # defaults


def test_image_estimate_for_diffusion_uses_the_requested_steps(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-diffusion", at=NOW)
    # 0.002 + 40 x 0.0002 = 0.010
    assert estimate_images_cost(price, 1, "1024x1024", None, 40, at=NOW) == D("0.010")


def test_image_estimate_of_a_token_priced_image_model_is_refused(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: tok-img, mode: image, effective_from: 2024-01-01, input: 5, output: 40}]"
    )
    with pytest.raises(UnpricedUsage):
        estimate_images_cost(
            catalog.require_price("tok-img", at=NOW), 1, "1024x1024", None, None, at=NOW
        )
