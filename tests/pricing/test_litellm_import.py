"""Import of LiteLLM's model_prices_and_context_window.json, on a small inline sample that
holds each trap of that file; the output loads back as a catalog with the same prices."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from faregate.pricing import PriceCatalog, PriceCatalogError, cost_of, load_catalog
from faregate.pricing.litellm_import import convert_litellm, dump_yaml, import_file, import_litellm
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WHEN = date(2026, 7, 24)
D = Decimal

SAMPLE = """{
  "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
                  "max_input_tokens": "max input tokens, if the provider specifies it", "mode": "one of: chat, embedding"},
  "last_updated": "2026-07-24",
  "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "max_input_tokens": 128000, "max_output_tokens": 16384,
             "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
             "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
             "cache_read_input_token_cost_priority": 2.125e-06,
             "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06,
             "input_cost_per_image": 0.001},
  "openai/gpt-4o": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
  "azure/gpt-4o": {"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 2.75e-06, "output_cost_per_token": 1.1e-05},
  "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
  "o4-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.1e-06, "output_cost_per_token": 4.4e-06,
              "input_cost_per_token_priority": 2e-06, "output_cost_per_token_priority": 8e-06,
              "input_cost_per_token_flex": 5.5e-07, "output_cost_per_token_flex": 2.2e-06},
  "reasoner": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
               "output_cost_per_reasoning_token": 3e-06},
  "gemini/gemini-2.5-pro": {"litellm_provider": "gemini", "mode": "chat", "max_input_tokens": 1048576,
             "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 3.1e-07,
             "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
             "cache_read_input_token_cost_above_200k_tokens": 6.25e-07},
  "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 2e-08, "output_cost_per_token": 0.0},
  "omni-moderation-latest": {"litellm_provider": "openai", "mode": "moderation", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
  "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_image": 0.04},
  "standard/1024-x-1024/dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_pixel": 3.81469e-08, "output_cost_per_pixel": 0.0},
  "hd/1024-x-1024/dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_pixel": 7.629e-08, "output_cost_per_pixel": 0.0},
  "256-x-256/dall-e-2": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_pixel": 2.4414e-07, "output_cost_per_pixel": 0.0},
  "gpt-image-1": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 5e-06,
                  "output_cost_per_token": 1e-05, "output_cost_per_image_token": 4e-05, "input_cost_per_image_token": 1e-05},
  "low/1024-x-1024/gpt-image-1": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_image": 0.011},
  "high/1024-x-1536/gpt-image-1": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_image": 0.25},
  "azure/high/1024-x-1024/gpt-image-1": {"litellm_provider": "azure", "mode": "image_generation", "input_cost_per_pixel": 1.59263611e-07},
  "gpt-image-2": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 8e-06,
                  "output_cost_per_token": 1e-05, "output_cost_per_image_token": 3e-05},
  "vertex_ai/imagen-3.0-generate-002": {"litellm_provider": "vertex_ai-image-models", "mode": "image_generation", "output_cost_per_image": 0.04},
  "gemini/gemini-2.5-flash-image": {"litellm_provider": "gemini", "mode": "image_generation", "input_cost_per_token": 3e-07,
                  "output_cost_per_token": 2.5e-06, "output_cost_per_image": 0.039, "output_cost_per_image_token": 3e-05},
  "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.04},
  "1024-x-1024/max-steps/stability.stable-diffusion-xl-v1": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.08},
  "512-x-512/50-steps/stability.stable-diffusion-xl-v0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.018},
  "512-x-512/max-steps/stability.stable-diffusion-xl-v0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.036},
  "max-x-max/50-steps/stability.stable-diffusion-xl-v0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.036},
  "max-x-max/max-steps/stability.stable-diffusion-xl-v0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.072},
  "512-x-512/no-price-model": {"litellm_provider": "acme", "mode": "image_generation"},
  "amazon.nova-canvas-v1:0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.06},
  "1024-x-1024/50-steps/bedrock/amazon.nova-canvas-v1:0": {"litellm_provider": "bedrock", "mode": "image_generation", "output_cost_per_image": 0.06},
  "deepseek/deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat", "input_cost_per_token": 2.8e-07,
                  "input_cost_per_token_cache_hit": 2.8e-08, "output_cost_per_token": 4.2e-07},
  "claude-sonnet-4": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06,
                  "output_cost_per_token": 1.5e-05, "cache_read_input_token_cost": 3e-07,
                  "cache_creation_input_token_cost": 3.75e-06,
                  "cache_creation_input_token_cost_above_1hr": 6e-06,
                  "input_cost_per_token_above_200k_tokens": 6e-06,
                  "output_cost_per_token_above_200k_tokens": 2.25e-05,
                  "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
                  "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
                  "search_context_cost_per_query":
                  {"search_context_size_low": 0.01}, "input_cost_per_audio_token": 0.0},
  "whisper-1": {"litellm_provider": "openai", "mode": "audio_transcription", "input_cost_per_second": 0.0001},
  "null-mode-model": {"litellm_provider": "acme", "mode": null, "input_cost_per_token": 1e-06},
  "per-1k-typo": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": 0.003, "output_cost_per_token": 0.006}
}"""


@pytest.fixture(scope="module")
def converted() -> Any:
    return convert_litellm(SAMPLE, effective_from=WHEN)


def entry(converted: Any, provider: str | None, model: str) -> dict[str, Any]:
    found = [e for e in converted.entries if e.get("provider") == provider and e["model"] == model]
    assert len(found) == 1, f"{provider}/{model} not imported"
    return dict(found[0])


def test_per_token_prices_become_exact_per_million_prices(converted: Any) -> None:
    gpt = entry(converted, "openai", "gpt-4o")
    assert (gpt["input"], gpt["cached_input"], gpt["output"]) == (D("2.5"), D("1.25"), D(10))
    mini = entry(converted, "openai", "gpt-4o-mini")
    assert str(mini["input"].normalize()) == "0.15"  # never 0.15000000000000002
    assert (gpt["max_input_tokens"], gpt["max_output_tokens"]) == (128000, 16384)
    assert gpt["effective_from"] == WHEN


def test_priority_flex_and_batch_rates_become_exact_tier_multipliers(converted: Any) -> None:
    assert entry(converted, "openai", "gpt-4o")["tiers"] == {
        "priority": D("1.7"),
        "batch": D("0.5"),
    }
    o4 = entry(converted, "openai", "o4-mini")
    assert o4["tiers"] == {"flex": D("0.5")}  # priority 2.00/1.10 is no exact multiplier
    assert any("priority rates are not one multiplier" in n for n in o4["notes"])


def test_reasoning_cache_and_long_context_rates_are_kept(converted: Any) -> None:
    assert entry(converted, "acme", "reasoner")["reasoning"] == D(3)
    pro = entry(converted, "gemini", "gemini-2.5-pro")
    assert pro["long_context"] == [
        {
            "above_input_tokens": 200000,
            "input": D("2.5"),
            "output": D(15),
            "cached_input": D("0.625"),
        }
    ]


def test_provider_prefix_equal_to_litellm_provider_is_dropped(converted: Any) -> None:
    assert entry(converted, "azure", "gpt-4o")["input"] == D("2.75")
    assert entry(converted, "vertex_ai-image-models", "vertex_ai/imagen-3.0-generate-002")[
        "images"
    ] == {"*": D("0.04")}
    assert ("openai/gpt-4o", "same model as gpt-4o") in converted.skipped


def test_chat_input_cost_per_image_prices_an_input_image_and_is_not_an_output_price(
    converted: Any,
) -> None:
    gpt = entry(converted, "openai", "gpt-4o")
    assert "images" not in gpt
    assert any("per input image" in n for n in gpt["notes"])


def test_image_generation_input_fields_price_the_output_image(converted: Any) -> None:
    dalle = entry(converted, "openai", "dall-e-3")
    assert dalle["mode"] == "image"
    assert dalle["images"] == {
        "*": D("0.04"),  # input_cost_per_image on the bare key
        "1024x1024": {
            "hd": D("7.629e-08") * 1024 * 1024,  # per pixel x pixels = 0.07999...
            "standard": D("3.81469e-08") * 1024 * 1024,
        },
    }
    assert entry(converted, "openai", "dall-e-2")["images"] == {
        "256x256": D("2.4414e-07") * 256 * 256
    }


def test_quality_and_size_in_the_key_build_one_table_per_provider(converted: Any) -> None:
    openai = entry(converted, "openai", "gpt-image-1")
    assert openai["images"] == {"1024x1024": {"low": D("0.011")}, "1024x1536": {"high": D("0.25")}}
    assert openai["input"] == D(5)
    assert "output" not in openai  # images are priced per image: never also per output token
    assert any("output token price dropped" in n for n in openai["notes"])
    azure = entry(converted, "azure", "gpt-image-1")
    assert azure["images"] == {"1024x1024": {"high": D("1.59263611e-07") * 1024 * 1024}}


def test_token_priced_image_model_uses_the_image_token_rate_not_the_text_rate(
    converted: Any,
) -> None:
    image2 = entry(converted, "openai", "gpt-image-2")
    assert (image2["input"], image2["output"]) == (D(8), D(30))  # not 10 (LiteLLM #31142)


def test_gemini_image_model_is_priced_per_generated_image(converted: Any) -> None:
    flash = entry(converted, "gemini", "gemini-2.5-flash-image")
    assert flash["images"] == {"*": D("0.039")}
    assert "output" not in flash


def test_step_keys_become_a_step_table_bracketed_by_size(converted: Any) -> None:
    v1 = entry(converted, "bedrock", "stability.stable-diffusion-xl-v1")
    assert v1["steps"] == {"table": {"1024x1024": {50: D("0.04"), "max": D("0.08")}}}
    v0 = entry(converted, "bedrock", "stability.stable-diffusion-xl-v0")
    assert v0["steps"] == {
        "table": {
            "512x512": {50: D("0.018"), "max": D("0.036")},
            "max": {50: D("0.036"), "max": D("0.072")},
        }
    }


def test_imported_step_prices_depend_on_size_and_steps(converted: Any, tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    path.write_text(dump_yaml(converted.entries))
    v0 = load_catalog([path], include_builtin=False).require_price(
        "stability.stable-diffusion-xl-v0", "bedrock", at=NOW
    )

    def one(width: int, steps: int | None) -> Decimal:
        usage = Usage(images=1, image_width=width, image_height=width, image_steps=steps)
        return cost_of(usage, v0, at=NOW)

    assert (one(512, 30), one(512, 80), one(1024, 30), one(1024, 80)) == (
        D("0.018"), D("0.036"), D("0.036"), D("0.072"),
    )  # fmt: skip
    assert one(0, None) == D("0.072")  # size and steps unknown: the dearest bracket


def test_schema_sample_metadata_null_modes_and_unpriced_modes_are_skipped(converted: Any) -> None:
    reasons = dict(converted.skipped)
    assert reasons["sample_spec"] == "schema sample"
    assert reasons["last_updated"] == "not a price entry"
    assert reasons["null-mode-model"] == "mode is null"
    assert reasons["512-x-512/no-price-model"] == "no per-image price in a size/quality/steps entry"
    imported = {e["model"]: e for e in converted.entries}
    assert not {"sample_spec", "last_updated", "null-mode-model", "no-price-model"} & set(imported)
    # A transcription model priced per second is imported as such.
    whisper = imported["whisper-1"]
    assert (whisper["mode"], whisper["per_second"]) == ("audio_transcription", D("0.0001"))


def test_a_per_token_price_typed_per_1k_is_skipped_not_imported(converted: Any) -> None:
    reasons = dict(converted.skipped)
    assert "above 1000" in reasons["per-1k-typo"]  # 0.003 per token = 3000 per 1M (#20615)
    assert all(e["model"] != "per-1k-typo" for e in converted.entries)


def test_import_litellm_returns_the_entries(converted: Any) -> None:
    assert import_litellm(SAMPLE, effective_from=WHEN) == converted.entries


def test_dumped_yaml_loads_back_with_the_same_prices(converted: Any, tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    path.write_text(dump_yaml(converted.entries, converted.skipped))
    catalog: PriceCatalog = load_catalog([path], include_builtin=False)
    assert len(catalog) == len(converted.entries)
    mini = catalog.require_price("gpt-4o-mini", "openai", at=NOW)
    assert (mini.input, mini.output) == (D("0.15"), D("0.6"))
    hd = catalog.require_price("dall-e-3", "openai", at=NOW)
    usage = Usage(images=2, image_width=1024, image_height=1024, image_quality="hd")
    assert cost_of(usage, hd, at=NOW) == 2 * D("7.629e-08") * 1024 * 1024
    assert catalog.require_price("gpt-4o", "openai", at=NOW).tier_multiplier("priority") == D("1.7")


def test_import_file_writes_a_catalog_file_and_counts_models(tmp_path: Path) -> None:
    source = tmp_path / "model_prices_and_context_window.json"
    source.write_text(SAMPLE)
    output = tmp_path / "prices.yaml"
    count = import_file(source, output, effective_from=WHEN)
    assert count == len(convert_litellm(SAMPLE, effective_from=WHEN).entries)
    text = output.read_text()
    assert text.startswith(
        f"# Imported from LiteLLM model_prices_and_context_window.json: {count} models."
    )
    assert "# skipped per-1k-typo:" in text
    assert len(load_catalog([output], include_builtin=False)) == count


def test_import_file_without_output_writes_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prices.json"
    source.write_text(SAMPLE)
    import_file(source, None, effective_from=WHEN)
    assert "models:" in capsys.readouterr().out


def test_not_a_price_map_is_a_clear_error() -> None:
    with pytest.raises(PriceCatalogError, match="not a LiteLLM price map"):
        import_litellm("[1, 2]", effective_from=WHEN)
    with pytest.raises(PriceCatalogError, match="not a LiteLLM price map"):
        import_litellm('{"m": {"mode": "chat", "input_cost_per_token": NaN}}', effective_from=WHEN)


def test_provider_prefix_after_the_steps_segment_joins_the_base_model(
    converted: Any, tmp_path: Path
) -> None:
    canvas = entry(converted, "bedrock", "amazon.nova-canvas-v1:0")
    assert canvas["images"] == {"*": D("0.06")}
    assert canvas["steps"] == {"table": {"1024x1024": {50: D("0.06")}}}
    path = tmp_path / "litellm.yaml"
    path.write_text(dump_yaml(converted.entries))
    price = load_catalog([path], include_builtin=False).require_price(
        "amazon.nova-canvas-v1:0", "bedrock", at=NOW
    )
    # 2048x2048 is outside the step table: the flat per-image price covers it
    usage = Usage(images=1, image_width=2048, image_height=2048)
    assert cost_of(usage, price, at=NOW) == D("0.06")


def test_deepseek_cache_hit_price_becomes_the_cached_input_rate(converted: Any) -> None:
    deepseek = entry(converted, "deepseek", "deepseek-chat")
    assert (deepseek["input"], deepseek["cached_input"]) == (D("0.28"), D("0.028"))


def test_price_fields_that_are_not_imported_are_listed_in_notes(converted: Any) -> None:
    sonnet = entry(converted, "anthropic", "claude-sonnet-4")
    assert "not imported: search_context_cost_per_query" in sonnet["notes"]


def test_the_cache_creation_price_becomes_the_cache_write_rate(converted: Any) -> None:
    sonnet = entry(converted, "anthropic", "claude-sonnet-4")
    assert (sonnet["input"], sonnet["cache_write"]) == (D("3"), D("3.75"))


def test_the_one_hour_cache_creation_price_becomes_the_cache_write_1h_rate(
    converted: Any,
) -> None:
    sonnet = entry(converted, "anthropic", "claude-sonnet-4")
    assert sonnet["cache_write_1h"] == D("6")
    band = sonnet["long_context"][0]
    assert (band["cache_write"], band["cache_write_1h"]) == (D("7.5"), D("12"))
    assert "cache_creation_input_token_cost_above_1hr" not in str(sonnet.get("notes"))
