"""Field-by-field mapping of one LiteLLM price entry onto faregate's entry schema: token
rates per 1M, long-context bands, image prices by mode, service-tier multipliers."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, localcontext
from typing import Any

MILLION = Decimal(1_000_000)
BANDS = ((128_000, "128k"), (200_000, "200k"), (256_000, "256k"), (272_000, "272k"),
         (512_000, "512k"))  # fmt: skip
TIER_SUFFIXES = (("priority", "_priority"), ("flex", "_flex"), ("batch", "_batches"))
_TIERED_FIELDS = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost")
_EXACT = Context(prec=80, traps=[Inexact])


def number(spec: dict[str, Any], name: str) -> Decimal | None:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return None
    return Decimal(value)


def positive(spec: dict[str, Any], name: str) -> Decimal | None:
    value = number(spec, name)
    return value if value is not None and value > 0 else None


def per_million(spec: dict[str, Any], name: str) -> Decimal | None:
    value = number(spec, name)
    if value is None:
        return None
    with localcontext(_EXACT):
        return value * MILLION


def times_pixels(per_pixel: Decimal, size: str) -> Decimal:
    """A per-pixel price times the pixels of "WxH": the price of one such image."""
    width, height = (int(v) for v in size.split("x"))
    with localcontext(_EXACT):
        return per_pixel * width * height


def token_fields(base: dict[str, Any], mode: str) -> dict[str, Any]:
    """input/cached_input/cache_write(_1h)/output/reasoning per 1M, and long-context bands. On an image
    model the output tokens are image tokens: their own rate wins (LiteLLM #31142)."""
    out: dict[str, Any] = {}
    output_name = "output_cost_per_token"
    if mode == "image" and number(base, "output_cost_per_image_token") is not None:
        output_name = "output_cost_per_image_token"
    cached_name = "cache_read_input_token_cost"
    if number(base, cached_name) is None:
        cached_name = "input_cost_per_token_cache_hit"  # DeepSeek entries
    for field, name in (("input", "input_cost_per_token"),
                        ("cached_input", cached_name),
                        ("cache_write", "cache_creation_input_token_cost"),
                        ("cache_write_1h", "cache_creation_input_token_cost_above_1hr"),
                        ("output", output_name),
                        ("reasoning", "output_cost_per_reasoning_token")):  # fmt: skip
        value = per_million(base, name)
        if value is not None:
            out[field] = value
    bands = _bands(base, out)
    if bands:
        out["long_context"] = bands
    return out


def _bands(base: dict[str, Any], rates: dict[str, Any]) -> list[dict[str, Any]]:
    bands = []
    for threshold, label in BANDS:
        band_input = per_million(base, f"input_cost_per_token_above_{label}_tokens")
        band_output = per_million(base, f"output_cost_per_token_above_{label}_tokens")
        if band_input is None and band_output is None:
            continue
        band: dict[str, Any] = {
            "above_input_tokens": threshold,
            "input": band_input if band_input is not None else rates.get("input", Decimal(0)),
            "output": band_output if band_output is not None else rates.get("output", Decimal(0)),
        }
        cached = per_million(base, f"cache_read_input_token_cost_above_{label}_tokens")
        if cached is not None:
            band["cached_input"] = cached
        write = per_million(base, f"cache_creation_input_token_cost_above_{label}_tokens")
        if write is not None:
            band["cache_write"] = write
        hour = per_million(base, f"cache_creation_input_token_cost_above_1hr_above_{label}_tokens")
        if hour is not None:
            band["cache_write_1h"] = hour
        bands.append(band)
    return bands


def image_fields(
    base: dict[str, Any],
    mode: str,
    rows: dict[tuple[str, str], Decimal],
    brackets: dict[tuple[str | None, int | None], Decimal],
    entry: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """images / per_megapixel / steps. What an image field means depends on `mode`."""
    rows = dict(rows)
    out: dict[str, Any] = {}
    if mode == "image":
        flat = positive(base, "output_cost_per_image") or positive(base, "input_cost_per_image")
        per_pixel = positive(base, "input_cost_per_pixel") or positive(
            base, "output_cost_per_pixel"
        )
        if flat is not None:
            rows.setdefault(("*", "*"), flat)
        elif per_pixel is not None:
            with localcontext(_EXACT):
                out["per_megapixel"] = per_pixel * MILLION
    else:
        generated = positive(base, "output_cost_per_image")
        if generated is not None:
            rows.setdefault(("*", "*"), generated)
        if positive(base, "input_cost_per_image") is not None:
            notes.append("input_cost_per_image (per input image) is not modelled")
    if rows:
        out["images"] = _table(rows)
    if brackets:
        out["steps"] = {"table": _step_table(brackets)}
    if mode == "image" and out and entry.get("output"):
        entry.pop("output")
        notes.append("output token price dropped: generated images are priced per image")
    return out


def _table(rows: dict[tuple[str, str], Decimal]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for (size, quality), price in sorted(rows.items()):
        table.setdefault(size, {})[quality] = price
    return {
        size: (qualities["*"] if list(qualities) == ["*"] else qualities)
        for size, qualities in table.items()
    }


def _step_table(brackets: dict[tuple[str | None, int | None], Decimal]) -> dict[Any, Any]:
    """{steps: price}, or {size: {steps: price}} when a bracket names a size."""

    def steps_of(size: str | None) -> dict[Any, Decimal]:
        chosen = sorted((k[1] is None, k[1] or 0) for k in brackets if k[0] == size)
        return {("max" if none else n): brackets[(size, None if none else n)] for none, n in chosen}

    sizes = {size for size, _ in brackets}
    if sizes == {None}:
        return steps_of(None)
    return {("max" if size is None else size): steps_of(size) for size in sorted(sizes, key=str)}


def unused_prices(base: dict[str, Any]) -> list[str]:
    """Non-zero price fields this importer does not map (cache writes, audio, ...)."""
    used = {
        "input_cost_per_token", "output_cost_per_token", "output_cost_per_image_token",
        "cache_read_input_token_cost", "input_cost_per_token_cache_hit",
        "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr",
        "output_cost_per_reasoning_token", "input_cost_per_image", "output_cost_per_image",
        "input_cost_per_pixel", "output_cost_per_pixel", "input_cost_per_second",
        "output_cost_per_second",
        *(f"{f}{suffix}" for f in _TIERED_FIELDS for _, suffix in TIER_SUFFIXES),
        *(f"{f}_above_{label}_tokens" for _, label in BANDS
          for f in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                    "cache_creation_input_token_cost",
                    "cache_creation_input_token_cost_above_1hr")),
    }  # fmt: skip
    return sorted(
        name
        for name, value in base.items()
        if "cost" in name and name not in used and (positive(base, name) or _is_structure(value))
    )


def _is_structure(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def tiers(base: dict[str, Any], notes: list[str]) -> dict[str, Decimal]:
    """A tier multiplier for `_priority`/`_flex`/`_batches` rates when one exact ratio
    fits every rate the entry gives for that tier."""
    out: dict[str, Decimal] = {}
    for tier, suffix in TIER_SUFFIXES:
        ratios = [
            _ratio(number(base, name + suffix), number(base, name))
            for name in _TIERED_FIELDS
            if number(base, name + suffix) is not None
        ]
        if not ratios:
            continue
        first = ratios[0]
        if first is not None and all(r == first for r in ratios):
            out[tier] = first
        else:
            notes.append(f"{tier} rates are not one multiplier of the standard rates; not imported")
    return out


def _ratio(variant: Decimal | None, ordinary: Decimal | None) -> Decimal | None:
    if variant is None or ordinary is None or ordinary <= 0 or variant <= 0:
        return None
    try:
        with localcontext(_EXACT):
            return (variant / ordinary).normalize()
    except Inexact:
        return None
