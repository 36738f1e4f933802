"""Loading price files and config overrides: exact numbers, later entries add versions,
clear errors naming the entry, and the guard against prices typed in the wrong unit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from faregate.pricing import PriceCatalog, PriceCatalogError, catalog_from_section, load_catalog
from faregate.pricing.loader import builtin_prices_text
from faregate.pricing.yamlio import load_yaml

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal


@pytest.mark.parametrize(
    ("model", "input_", "output"),
    [
        ("open-mistral-7b", "0.25", "0.25"),
        ("open-mixtral-8x7b", "0.7", "0.7"),
        ("open-mixtral-8x22b", "2", "6"),
        ("mistral-small", "1", "3"),
        ("mistral-medium", "2.7", "8.1"),
        ("mistral-large", "4", "12"),
    ],
)
def test_shipped_mistral_prices(
    shipped: PriceCatalog, model: str, input_: str, output: str
) -> None:
    price = shipped.require_price(model, "mistral", at=NOW)
    assert (price.input, price.output) == (D(input_), D(output))


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", m)
        for m in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3",
                  "o3-mini", "o4-mini", "text-embedding-3-small", "text-embedding-3-large",
                  "dall-e-3", "dall-e-2", "gpt-image-1", "omni-moderation-latest")
    ]
    + [("anthropic", m) for m in ("claude-3-5-haiku", "claude-sonnet-4", "claude-opus-4",
                                  "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6")]
    + [("gemini", m) for m in ("gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro")]
    + [("mistral", "mistral-embed"), ("deepseek", "deepseek-chat")]
    + [("mock", m) for m in ("mock-small", "mock-large", "mock-image", "mock-diffusion")],
)  # fmt: skip
def test_shipped_catalog_covers_the_adapters_models(
    shipped: PriceCatalog, provider: str, model: str
) -> None:
    assert shipped.price_for(model, provider, at=NOW) is not None


def test_every_shipped_entry_names_its_source() -> None:
    document = load_yaml(builtin_prices_text(), name="prices.yaml")
    missing = [e["model"] for e in document["models"] if not e.get("source")]
    assert missing == []


def test_shipped_anthropic_cache_reads_are_a_tenth_of_input(shipped: PriceCatalog) -> None:
    for model in ("claude-3-5-haiku", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4-5"):
        price = shipped.require_price(model, "anthropic", at=NOW)
        assert price.cached_input * 10 == price.input


def test_yaml_numbers_are_exact_decimals(catalog_from_yaml: Callable[[str], PriceCatalog]) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 0.1, output: 1_00.30}]"
    )
    price = catalog.require_price("m", at=NOW)
    assert price.input == D("0.1") and str(price.input) == "0.1"
    assert price.output == D("100.30")


def test_overrides_add_a_version_from_their_date() -> None:
    override = {"models": [{"provider": "mistral", "model": "mistral-large",
                            "effective_from": "2030-01-01", "input": 2, "output": 6}]}  # fmt: skip
    catalog = load_catalog(overrides=override)
    before = datetime(2029, 12, 31, 23, 59, tzinfo=UTC)
    assert catalog.require_price("mistral-large", "mistral", at=before).input == D("4")
    assert catalog.require_price(
        "mistral-large", "mistral", at=datetime(2030, 1, 1, tzinfo=UTC)
    ).input == D("2")


def test_an_override_with_the_same_date_replaces_that_version(tmp_path: Path) -> None:
    path = tmp_path / "negotiated.yaml"
    path.write_text("""
models:
  - {provider: openai, model: gpt-4o, effective_from: 2024-10-01, input: 2.00, output: 8.00}
""")
    catalog = load_catalog([path])
    assert len(catalog.versions("gpt-4o", "openai")) == 1
    price = catalog.require_price("gpt-4o", "openai", at=NOW)
    assert (price.input, price.output, price.cached_input) == (D("2.00"), D("8.00"), D("2.00"))


def test_overrides_parsed_by_the_config_loader_keep_exact_values() -> None:
    # Settings.section("prices") comes from yaml.safe_load: floats, dates, base-60 ints.
    section = yaml.safe_load("""
include_builtin: false
models:
  - {model: m, effective_from: 2024-01-01, input: 0.1, output: 0.3}
""")
    assert isinstance(section["models"][0]["input"], float)
    price = catalog_from_section(section).require_price("m", at=NOW)
    assert (price.input, price.output) == (D("0.1"), D("0.3"))


def test_an_unquoted_clock_time_from_the_config_loader_is_explained() -> None:
    section = yaml.safe_load("""
include_builtin: false
models:
  - model: m
    effective_from: 2024-01-01
    input: 1
    output: 1
    windows: [{start: 16:30, end: "00:30", multiplier: 0.5}]
""")
    with pytest.raises(PriceCatalogError, match='quoted time like "16:30"'):
        catalog_from_section(section)


def test_unquoted_clock_times_in_price_files_are_read_as_times(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
models:
  - {model: m, effective_from: 2024-01-01, input: 1, output: 1,
     windows: [{start: 16:30, end: 00:30, multiplier: 0.5}]}
""")
    window = catalog.require_price("m", at=NOW).windows[0]
    assert (window.start_minute, window.end_minute) == (990, 30)


def test_catalog_from_section_reads_files_and_can_drop_the_shipped_prices(tmp_path: Path) -> None:
    path = tmp_path / "own.yaml"
    path.write_text(
        "models: [{provider: acme, model: a1, effective_from: 2024-01-01, input: 1, output: 2}]"
    )
    catalog = catalog_from_section({"files": [str(path)], "include_builtin": False})
    assert catalog.require_price("a1", at=NOW).output == D("2")
    assert catalog.price_for("gpt-4o", at=NOW) is None


def test_provider_tiers_merge_and_model_windows_replace_provider_windows(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml("""
providers:
  acme:
    tiers: {batch: 0.5, priority: 2}
    windows: [{start: "22:00", end: "06:00", multiplier: 0.5}]
models:
  - {provider: acme, model: a, effective_from: 2024-01-01, input: 1, output: 1, tiers: {priority: 1.5}}
  - {provider: acme, model: b, effective_from: 2024-01-01, input: 1, output: 1, windows: []}
""")
    a = catalog.require_price("a", "acme", at=NOW)
    assert dict(a.tiers) == {"batch": D("0.5"), "priority": D("1.5")}
    assert len(a.windows) == 1
    assert catalog.require_price("b", "acme", at=NOW).windows == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{provider: acme, model: m, effective_from: 2024-01-01, input: 2500, output: 1}",
         r"models\[0\] \(acme/m\): input 2500 USD per 1M tokens is above 1000.*allow_high_price"),
        ("{model: m, effective_from: 2024-01-01, input: 2.5e-07, output: 1}",
         r"input 2\.5E-7 USD per 1M tokens is below 0\.001.*allow_low_price"),
        ("{model: m, effective_from: 2024-01-01, input: 1, ouput: 1}", r"unknown field\(s\) ouput"),
        ("{model: m, input: 1, output: 1}", "effective_from is required"),
        ("{model: m, effective_from: 2024-01-01, input: 1}", "output .* is required for mode chat"),
        ("{model: m, effective_from: 2024-01-01, mode: audio, input: 1}", "mode must be one of"),
        ("{model: m, effective_from: 2024-01-01, input: -1, output: 1}", "input must be a finite number >= 0"),
        ("{model: m, mode: image, effective_from: 2024-01-01, output: 40, images: {1024x1024: 0.1}}",
         "per image or per output token, not both"),
        ("{model: m, mode: image, effective_from: 2024-01-01, images: {huge: 0.1}}", "size must be"),
        ("{model: m, effective_from: 2024-01-01, input: 1, output: 1, windows: [{start: '1:00', end: '2:00', tz: Mars/Base, multiplier: 1}]}",
         "unknown time zone"),
        ("{model: m, mode: image, effective_from: 2024-01-01, steps: {per_step: 0.001}}", "needs default"),
    ],
)  # fmt: skip
def test_invalid_entries_are_refused_naming_the_entry(
    catalog_from_yaml: Callable[[str], PriceCatalog], entry: str, message: str
) -> None:
    with pytest.raises(PriceCatalogError, match=message):
        catalog_from_yaml(f"models:\n  - {entry}\n")


def test_a_real_high_price_is_accepted_when_declared(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    catalog = catalog_from_yaml(
        "models: [{model: m, effective_from: 2024-01-01, input: 1500, output: 6000, allow_high_price: true}]"
    )
    assert catalog.require_price("m", at=NOW).output == D("6000")


def test_duplicate_keys_and_repeated_entries_are_errors(
    catalog_from_yaml: Callable[[str], PriceCatalog],
) -> None:
    with pytest.raises(PriceCatalogError, match="duplicate key 'input'"):
        catalog_from_yaml(
            "models: [{model: m, effective_from: 2024-01-01, input: 1, input: 2, output: 1}]"
        )
    with pytest.raises(PriceCatalogError, match=r"models\[1\] repeats models\[0\]"):
        catalog_from_yaml("""
models:
  - {model: m, effective_from: 2024-01-01, input: 1, output: 1}
  - {model: m, effective_from: 2024-01-01, input: 2, output: 2}
""")


def test_missing_price_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriceCatalogError, match="cannot read price file"):
        load_catalog([tmp_path / "absent.yaml"])


def test_a_deployment_priced_by_price_key_on_another_provider_finds_the_model(
    shipped: PriceCatalog,
) -> None:
    # bench config: {provider: mock-fast, model: mock-small, price_key: gpt-4o-mini}
    price = shipped.require_price("gpt-4o-mini", "mock-fast", at=NOW)
    assert (price.provider, price.input, price.output) == ("openai", D("0.15"), D("0.60"))
