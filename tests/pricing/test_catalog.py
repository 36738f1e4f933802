"""Catalog lookup: versions by effective date, provider fallback by model alone, aliases,
and a missing model that is visible (None / PriceNotFound), never a zero price."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from faregate.errors import FaregateError
from faregate.pricing import PriceCatalog, PriceNotFound, cost_of
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal

TWO_PROVIDERS = """
models:
  - {provider: openai, model: gpt-4o, effective_from: 2024-01-01, input: 2.5, output: 10}
  - {provider: azure, model: gpt-4o, effective_from: 2024-01-01, input: 2.75, output: 11}
  - {provider: openai, model: solo, aliases: [solo-2025], effective_from: 2024-01-01, input: 1, output: 1}
  - {model: shared, effective_from: 2024-01-01, input: 3, output: 3}
  - {provider: acme, model: shared, effective_from: 2024-01-01, input: 4, output: 4}
"""


def test_price_version_changes_at_its_effective_instant(shipped: PriceCatalog) -> None:
    before = datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC)
    after = datetime(2025, 6, 10, 0, 0, tzinfo=UTC)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    old = shipped.require_price("o3", "openai", at=before)
    new = shipped.require_price("o3", "openai", at=after)
    assert (old.input, old.output) == (D("10.00"), D("40.00"))
    assert cost_of(usage, old, at=before) == D("50")
    assert cost_of(usage, new, at=after) == D("10")


def test_versions_with_datetimes_switch_at_the_exact_second(shipped: PriceCatalog) -> None:
    cut = datetime(2025, 9, 5, 16, 0, tzinfo=UTC)
    assert shipped.require_price("deepseek-chat", "deepseek", at=cut).input == D("0.56")
    earlier = shipped.require_price(
        "deepseek-chat", at=datetime(2025, 9, 5, 15, 59, 59, tzinfo=UTC)
    )
    assert earlier.input == D("0.27")
    assert earlier.windows and not shipped.require_price("deepseek-chat", at=cut).windows


def test_before_the_first_version_there_is_no_price(shipped: PriceCatalog) -> None:
    at = datetime(2020, 1, 1, tzinfo=UTC)
    assert shipped.price_for("o3", "openai", at=at) is None
    with pytest.raises(PriceNotFound, match="first price is from 2025-04-16"):
        shipped.require_price("o3", "openai", at=at)


def test_unknown_model_is_none_and_require_price_raises_a_faregate_error(
    shipped: PriceCatalog,
) -> None:
    assert shipped.price_for("no-such-model", at=NOW) is None
    with pytest.raises(PriceNotFound) as info:
        shipped.require_price("no-such-model", "openai", at=NOW)
    assert isinstance(info.value, FaregateError)
    assert info.value.code == "price_not_found"
    assert "no-such-model" in info.value.message


def test_unknown_provider_falls_back_to_the_model_alone(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-small", "my-mock-deployment", at=NOW)
    assert (price.provider, price.input) == ("mock", D("0.15"))


def test_provider_entry_wins_over_the_fallback(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(TWO_PROVIDERS)
    assert catalog.require_price("gpt-4o", "azure", at=NOW).input == D("2.75")
    assert catalog.require_price("gpt-4o", "openai", at=NOW).input == D("2.5")
    assert catalog.require_price("azure/gpt-4o", at=NOW).input == D("2.75")


def test_model_priced_by_several_providers_needs_a_provider(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(TWO_PROVIDERS)
    assert catalog.price_for("gpt-4o", at=NOW) is None
    with pytest.raises(PriceNotFound, match=r"several providers \(azure, openai\)"):
        catalog.require_price("gpt-4o", at=NOW)


def test_provider_agnostic_entry_answers_for_the_model_alone(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(TWO_PROVIDERS)
    assert catalog.require_price("shared", at=NOW).input == D("3")
    assert catalog.require_price("shared", "other", at=NOW).input == D("3")
    assert catalog.require_price("shared", "acme", at=NOW).input == D("4")


def test_aliases_resolve_to_the_same_versions(
    catalog_from_yaml: Callable[[str], PriceCatalog], shipped: PriceCatalog
) -> None:
    catalog = catalog_from_yaml(TWO_PROVIDERS)
    assert catalog.require_price("solo-2025", "openai", at=NOW).model == "solo"
    assert catalog.require_price("solo-2025", at=NOW).model == "solo"
    dated = shipped.require_price("claude-sonnet-4-20250514", "anthropic", at=NOW)
    assert dated.model == "claude-sonnet-4"


def test_catalog_lists_versions_oldest_first(shipped: PriceCatalog) -> None:
    versions = shipped.versions("deepseek-chat", "deepseek")
    assert [v.input for v in versions] == [D("0.27"), D("0.56"), D("0.28")]
    assert "deepseek-chat" in shipped
    assert "nope" not in shipped


def test_catalog_cannot_be_changed_after_load(shipped: PriceCatalog) -> None:
    price = shipped.require_price("mock-small", at=NOW)
    with pytest.raises(AttributeError):
        price.rates = price.rates  # type: ignore[misc]
    with pytest.raises(AttributeError):
        shipped.extra = 1
