"""Image cost: per image by size x quality with written fallback rules, per step, per
megapixel; a usage that already counts every image is never multiplied by n again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from faregate.pricing import PriceCatalog, UnpricedUsage, cost_of, estimate_images_cost
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal


def images(
    n: int,
    width: int = 0,
    height: int = 0,
    quality: str | None = None,
    *,
    image_steps: int | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> Usage:
    return Usage(
        images=n,
        image_width=width,
        image_height=height,
        image_quality=quality,
        image_steps=image_steps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def test_dall_e_3_is_priced_by_size_and_quality(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-3", "openai", at=NOW)
    assert cost_of(images(2, 1024, 1792, "hd"), price, at=NOW) == D("0.240")
    assert cost_of(images(1, 1024, 1024, "standard"), price, at=NOW) == D("0.040")


def test_missing_quality_uses_the_declared_default(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-3", "openai", at=NOW)
    assert cost_of(images(1, 1792, 1024), price, at=NOW) == D("0.080")  # standard


def test_missing_size_uses_the_declared_default(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-3", "openai", at=NOW)
    assert cost_of(images(1, quality="hd"), price, at=NOW) == D("0.080")  # 1024x1024


def test_unknown_quality_without_default_is_priced_at_the_dearest_quality_of_the_size(
    shipped: PriceCatalog,
) -> None:
    price = shipped.require_price("gpt-image-1", "openai", at=NOW)
    assert cost_of(images(1, 1024, 1024), price, at=NOW) == D("0.167")
    assert cost_of(images(1, 1024, 1024, "auto"), price, at=NOW) == D("0.167")
    assert cost_of(images(1, 1024, 1536, "low"), price, at=NOW) == D("0.016")


def test_size_only_table_ignores_quality(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-2", "openai", at=NOW)
    assert cost_of(images(3, 512, 512, "standard"), price, at=NOW) == D("0.054")


def test_a_size_the_table_does_not_price_is_an_error_not_zero(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-3", "openai", at=NOW)
    with pytest.raises(UnpricedUsage):
        cost_of(images(1, 512, 512, "standard"), price, at=NOW)


def test_fallback_order_is_size_then_quality_then_wildcards(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - model: img
    mode: image
    effective_from: 2024-01-01
    images:
      1024x1024: {hd: 0.50, "*": 0.40}
      "*": {hd: 0.30, "*": 0.20}
""")
    price = catalog.require_price("img", at=NOW)
    assert cost_of(images(1, 1024, 1024, "hd"), price, at=NOW) == D("0.50")  # (size, q)
    assert cost_of(images(1, 1024, 1024, "low"), price, at=NOW) == D("0.40")  # (size, *)
    assert cost_of(images(1, 512, 512, "hd"), price, at=NOW) == D("0.30")  # (*, q)
    assert cost_of(images(1, 512, 512, "low"), price, at=NOW) == D("0.20")  # (*, *)
    assert cost_of(images(1, 512, 512), price, at=NOW) == D("0.30")  # dearest of (*, any)


def test_gpt_image_usage_counting_all_images_is_not_multiplied_by_n_again(
    shipped: PriceCatalog,
) -> None:
    price = shipped.require_price("gpt-image-1", "openai", at=NOW)
    # n=2: the provider's usage already covers both images (LiteLLM #31142 multiplied again)
    usage = images(2, 1536, 1024, "high", input_tokens=100, output_tokens=12_416)
    # 100 x 5 / 1e6 + 2 x 0.25; output image tokens are in the per-image price
    assert cost_of(usage, price, at=NOW) == D("0.5005")
    estimate = estimate_images_cost(price, 2, "1536x1024", "high", None, at=NOW, input_tokens=100)
    assert estimate == D("0.5005")


def test_token_priced_image_model_charges_image_tokens_once(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: tok-img, mode: image, effective_from: 2024-01-01, input: 5, output: 40}]"
    )
    price = catalog.require_price("tok-img", at=NOW)
    usage = images(1, 1024, 1024, "high", input_tokens=100, output_tokens=4160)
    # 100 x 5 + 4160 x 40 = 166900 per 1e6
    assert cost_of(usage, price, at=NOW) == D("0.1669")
    with pytest.raises(UnpricedUsage):  # images reported, image tokens missing
        cost_of(images(1, 1024, 1024, input_tokens=100), price, at=NOW)


def test_chat_model_without_image_prices_refuses_image_usage(shipped: PriceCatalog) -> None:
    with pytest.raises(UnpricedUsage):
        cost_of(images(1, 1024, 1024), shipped.require_price("mock-small", at=NOW), at=NOW)


def test_diffusion_is_base_plus_steps_times_per_step(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-diffusion", at=NOW)
    # 2 x (0.002 + 50 x 0.0002)
    assert cost_of(images(2, 1024, 1024, image_steps=50), price, at=NOW) == D("0.024")
    # default 30 steps: 0.002 + 30 x 0.0002
    assert cost_of(images(1, 1024, 1024), price, at=NOW) == D("0.008")


def test_step_table_prices_by_bracket(shipped: PriceCatalog) -> None:
    price = shipped.require_price("stability.stable-diffusion-xl-v1", "bedrock", at=NOW)
    assert cost_of(images(1, 1024, 1024, image_steps=50), price, at=NOW) == D("0.04")
    assert cost_of(images(1, 1024, 1024, image_steps=51), price, at=NOW) == D("0.08")
    assert cost_of(images(3, 1024, 1024), price, at=NOW) == D("0.12")  # default 30 steps


def test_step_beyond_a_closed_table_is_an_error(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: sd, mode: image, effective_from: 2024-01-01, steps: {table: {50: 0.04}}}]"
    )
    price = catalog.require_price("sd", at=NOW)
    with pytest.raises(UnpricedUsage):
        cost_of(images(1, image_steps=60), price, at=NOW)
    assert cost_of(images(1), price, at=NOW) == D("0.04")  # unknown steps: dearest bracket


def test_per_megapixel_price_scales_with_pixels(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: flux, mode: image, effective_from: 2024-01-01, per_megapixel: 0.025}]"
    )
    price = catalog.require_price("flux", at=NOW)
    # 1024 x 1024 = 1.048576 MP x 0.025 = 0.0262144
    assert cost_of(images(1, 1024, 1024), price, at=NOW) == D("0.0262144")
    with pytest.raises(UnpricedUsage):  # no size, no default: cannot count pixels
        cost_of(images(1), price, at=NOW)


def test_estimate_for_unknown_size_holds_the_dearest_size(shipped: PriceCatalog) -> None:
    price = shipped.require_price("dall-e-2", "openai", at=NOW)
    assert estimate_images_cost(price, 4, "auto", None, None, at=NOW) == D("0.080")  # default size
    price = shipped.require_price("gpt-image-1", "openai", at=NOW)
    assert estimate_images_cost(price, 1, "1536x1024", None, None, at=NOW) == D("0.25")


def test_step_table_can_bracket_by_image_size(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - model: sd
    mode: image
    effective_from: 2024-01-01
    steps:
      default: 30
      table:
        512x512: {50: 0.018, max: 0.036}
        1024x1024: {50: 0.036, max: 0.072}
""")
    price = catalog.require_price("sd", at=NOW)
    assert cost_of(images(2, 512, 512, image_steps=50), price, at=NOW) == D("0.036")
    assert cost_of(images(1, 768, 768), price, at=NOW) == D("0.036")  # the 1024 bracket
    assert cost_of(images(1, 1024, 1024, image_steps=51), price, at=NOW) == D("0.072")
    with pytest.raises(UnpricedUsage):  # larger than every bracket
        cost_of(images(1, 2048, 2048), price, at=NOW)
