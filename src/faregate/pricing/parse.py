"""Validate one catalog entry (a mapping from YAML, a config override or the LiteLLM
importer) into a ModelPrice. Unknown fields, missing prices and implausible per-1M token
prices are errors naming the entry; nothing defaults to a free price by omission."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faregate.pricing.fields import (
    check_keys,
    fail,
    to_count,
    to_decimal,
    to_instant,
    to_list,
    to_mapping,
    to_minute,
    to_text,
)
from faregate.pricing.images import normalize_size, size_pixels
from faregate.pricing.price import (
    ANY,
    MODES,
    ContextBand,
    ImageRate,
    Mode,
    ModelPrice,
    StepBracket,
    StepRule,
    TimeWindow,
    TokenRates,
)

# A per-1M token price above this is almost surely a per-1K or per-token price typed in the
# wrong unit (LiteLLM #20615); below FLOOR, a per-token price typed as per-1M.
CEILING = Decimal(1000)
FLOOR = Decimal("0.001")

ENTRY_KEYS = frozenset({
    "provider", "model", "aliases", "mode", "effective_from", "source", "notes",
    "input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning",
    "long_context",
    "images", "image_default_size", "image_default_quality", "per_megapixel", "steps",
    "per_second", "max_input_tokens", "max_output_tokens", "tiers", "windows",
    "allow_high_price", "allow_low_price",
})  # fmt: skip
PROVIDER_KEYS = frozenset({"tiers", "windows"})
_BAND_KEYS = frozenset(
    {
        "above_input_tokens",
        "input",
        "output",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "reasoning",
    }
)
_WINDOW_KEYS = frozenset({"start", "end", "tz", "multiplier"})
_STEP_KEYS = frozenset({"default", "base", "per_step", "table"})


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    """Multipliers declared once for every model of a provider."""

    tiers: tuple[tuple[str, Decimal], ...] = ()
    windows: tuple[TimeWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    price: ModelPrice
    aliases: tuple[str, ...]


def parse_provider(raw: Any, where: str) -> ProviderDefaults:
    spec = to_mapping(raw if raw is not None else {}, where, "provider settings")
    check_keys(spec, PROVIDER_KEYS, where)
    return ProviderDefaults(
        tiers=parse_tiers(spec.get("tiers"), where),
        windows=parse_windows(spec.get("windows"), where),
    )


def entry_label(raw: Any, where: str) -> str:
    if isinstance(raw, dict) and raw.get("model"):
        provider = raw.get("provider")
        return f"{where} ({provider}/{raw['model']})" if provider else f"{where} ({raw['model']})"
    return where


def parse_entry(
    raw: Any, where: str, providers: Mapping[str, ProviderDefaults] | None = None
) -> ParsedEntry:
    where = entry_label(raw, where)
    spec = to_mapping(raw, where, "entry")
    check_keys(spec, ENTRY_KEYS, where)
    provider = to_text(spec["provider"], where, "provider") if "provider" in spec else None
    mode = spec.get("mode", "chat")
    if mode not in MODES:
        raise fail(where, f"mode must be one of {', '.join(sorted(MODES))}, got {mode!r}")
    if "effective_from" not in spec:
        raise fail(where, "effective_from is required (the date this price applies from)")
    defaults = (providers or {}).get(provider or "", ProviderDefaults())
    price = ModelPrice(
        model=to_text(spec.get("model"), where, "model"),
        provider=provider,
        effective_from=to_instant(spec["effective_from"], where, "effective_from"),
        mode=cast(Mode, mode),
        rates=_rates(spec, where, mode),
        long_context=_bands(spec.get("long_context"), where),
        images=_images(spec.get("images"), where),
        image_default_size=_default_size(spec.get("image_default_size"), where),
        image_default_quality=_lower(spec.get("image_default_quality"), where),
        per_megapixel=_optional_decimal(spec, "per_megapixel", where),
        steps=_steps(spec.get("steps"), where),
        per_second=_optional_decimal(spec, "per_second", where),
        max_input_tokens=_optional_count(spec, "max_input_tokens", where),
        max_output_tokens=_optional_count(spec, "max_output_tokens", where),
        tiers=_merge_tiers(defaults.tiers, parse_tiers(spec.get("tiers"), where)),
        windows=(parse_windows(spec["windows"], where) if "windows" in spec else defaults.windows),
        source=to_text(spec["source"], where, "source") if spec.get("source") else None,
    )
    _check_mode(price, where)
    _check_plausible(price, spec, where)
    notes = spec.get("notes", [])
    if not all(isinstance(n, str) for n in (notes if isinstance(notes, list) else [notes])):
        raise fail(where, "notes must be a string or a list of strings")
    aliases = tuple(
        to_text(a, where, "aliases") for a in to_list(spec.get("aliases", []), where, "aliases")
    )
    return ParsedEntry(price=price, aliases=aliases)


def _rates(spec: dict[Any, Any], where: str, mode: str) -> TokenRates:
    required = {"chat": ("input", "output"), "embedding": ("input",), "moderation": ("input",)}
    for field in required.get(mode, ()):
        if field not in spec:
            raise fail(where, f"{field} (USD per 1M tokens) is required for mode {mode}")
    zero = Decimal(0)
    input_ = to_decimal(spec.get("input", zero), where, "input")
    output = to_decimal(spec.get("output", zero), where, "output")
    cached = to_decimal(spec.get("cached_input", input_), where, "cached_input")
    reasoning = to_decimal(spec.get("reasoning", output), where, "reasoning")
    cache_write = to_decimal(spec.get("cache_write", input_), where, "cache_write")
    # A 1-hour write costs at least a 5-minute one: an entry that names no 1-hour rate prices
    # 1-hour writes at `cache_write`, as before the rates were told apart.
    cache_write_1h = to_decimal(spec.get("cache_write_1h", cache_write), where, "cache_write_1h")
    return TokenRates(
        input=input_,
        output=output,
        cached_input=cached,
        reasoning=reasoning,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
    )


def _bands(raw: Any, where: str) -> tuple[ContextBand, ...]:
    bands = []
    for i, item in enumerate(to_list(raw if raw is not None else [], where, "long_context")):
        at = f"{where} long_context[{i}]"
        spec = to_mapping(item, at, "band")
        check_keys(spec, _BAND_KEYS, at)
        for field in ("above_input_tokens", "input", "output"):
            if field not in spec:
                raise fail(at, f"{field} is required")
        rates = _rates(spec, at, "chat")
        bands.append(
            ContextBand(to_count(spec["above_input_tokens"], at, "above_input_tokens"), rates)
        )
    bands.sort(key=lambda band: band.above_input_tokens)
    return tuple(bands)


def _images(raw: Any, where: str) -> tuple[ImageRate, ...]:
    rows = []
    for size_key, value in to_mapping(raw if raw is not None else {}, where, "images").items():
        size = normalize_size(str(size_key))
        if size is None or (size != ANY and size_pixels(size) is None):
            raise fail(where, f'images: size must be "WxH" or "*", got {size_key!r}')
        at = f"{where} images[{size_key}]"
        qualities = value if isinstance(value, dict) else {ANY: value}
        for quality, amount in qualities.items():
            name = str(quality).strip().lower()
            rows.append(ImageRate(size, name, to_decimal(amount, at, f"quality {quality}")))
    return tuple(rows)


def _steps(raw: Any, where: str) -> StepRule | None:
    if raw is None:
        return None
    at = f"{where} steps"
    spec = to_mapping(raw, at, "steps")
    check_keys(spec, _STEP_KEYS, at)
    default = to_count(spec["default"], at, "default") if "default" in spec else None
    if ("per_step" in spec) == ("table" in spec):
        raise fail(at, "declare exactly one of per_step or table")
    if "per_step" in spec:
        if default is None:
            raise fail(at, "per_step needs default (the provider's default step count)")
        return StepRule(
            default_steps=default,
            base=to_decimal(spec.get("base", 0), at, "base"),
            per_step=to_decimal(spec["per_step"], at, "per_step"),
        )
    if "base" in spec:
        raise fail(at, "base applies to per_step, not to a table")
    return StepRule(default_steps=default, table=_step_table(spec["table"], at))


def _step_table(raw: Any, where: str) -> tuple[StepBracket, ...]:
    """{max_steps: price} for any size, or {max_size: {max_steps: price}} where a size key
    "WxH" means "images up to that many pixels" and "max" means any size."""
    table = to_mapping(raw, where, "table")
    sized = [isinstance(v, dict) for v in table.values()]
    if any(sized) and not all(sized):
        raise fail(where, "table: use {steps: price} or {size: {steps: price}}, not both")
    groups = table.items() if all(sized) and table else [(None, table)]
    brackets = []
    for size_key, steps in groups:
        max_size = None if size_key in (None, "max", ANY) else normalize_size(str(size_key))
        if size_key not in (None, "max", ANY) and size_pixels(max_size) is None:
            raise fail(where, f'table: size must be "WxH" or "max", got {size_key!r}')
        for key, amount in steps.items():
            limit = None if key == "max" else to_count(key, where, "table key (max steps)")
            brackets.append(
                StepBracket(max_size, limit, to_decimal(amount, where, f"table[{key}]"))
            )
    if not brackets:
        raise fail(where, "table is empty")
    brackets.sort(key=_bracket_order)
    return tuple(brackets)


def _bracket_order(b: StepBracket) -> tuple[bool, int, bool, int]:
    return (b.max_size is None, size_pixels(b.max_size) or 0, b.max_steps is None, b.max_steps or 0)


def parse_tiers(raw: Any, where: str) -> tuple[tuple[str, Decimal], ...]:
    tiers = to_mapping(raw if raw is not None else {}, where, "tiers")
    out = []
    for name, multiplier in tiers.items():
        value = to_decimal(multiplier, where, f"tiers.{name}")
        if value == 0:
            raise fail(where, f"tiers.{name} must be > 0")
        out.append((to_text(name, where, "tier name").lower(), value))
    return tuple(out)


def parse_windows(raw: Any, where: str) -> tuple[TimeWindow, ...]:
    windows = []
    for i, item in enumerate(to_list(raw if raw is not None else [], where, "windows")):
        at = f"{where} windows[{i}]"
        spec = to_mapping(item, at, "window")
        check_keys(spec, _WINDOW_KEYS, at)
        for field in ("start", "end", "multiplier"):
            if field not in spec:
                raise fail(at, f"{field} is required")
        tz = to_text(spec.get("tz", "UTC"), at, "tz")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise fail(at, f"unknown time zone {tz!r}") from None
        start, end = to_minute(spec["start"], at, "start"), to_minute(spec["end"], at, "end")
        if start == end:
            raise fail(at, "start and end must differ")
        windows.append(TimeWindow(start, end, tz, to_decimal(spec["multiplier"], at, "multiplier")))
    return tuple(windows)


def _merge_tiers(
    base: tuple[tuple[str, Decimal], ...], own: tuple[tuple[str, Decimal], ...]
) -> tuple[tuple[str, Decimal], ...]:
    merged = dict(base)
    merged.update(own)
    return tuple(merged.items())


def _check_mode(price: ModelPrice, where: str) -> None:
    if price.mode == "image":
        if not price.prices_images and price.output == 0:
            raise fail(where, "an image model needs images, per_megapixel, steps or output")
        if price.prices_images and price.output > 0:
            raise fail(where, "price generated images per image or per output token, not both")
    if price.mode == "audio_transcription" and price.per_second is None and price.input == 0:
        raise fail(where, "an audio_transcription model needs per_second or token prices")
    if price.image_default_size and not price.prices_images:
        raise fail(where, "image_default_size without any image price")


def _check_plausible(price: ModelPrice, spec: dict[Any, Any], where: str) -> None:
    allow_high = spec.get("allow_high_price") is True
    allow_low = spec.get("allow_low_price") is True
    for rates, label in [(price.rates, "")] + [
        (b.rates, f"long_context above {b.above_input_tokens}: ") for b in price.long_context
    ]:
        for field in ("input", "output", "cached_input", "cache_write", "cache_write_1h",
                      "reasoning"):  # fmt: skip
            value: Decimal = getattr(rates, field)
            if value > CEILING and not allow_high:
                raise fail(where, f"{label}{field} {value} USD per 1M tokens is above {CEILING}: "
                           "a per-token or per-1K price in the wrong unit? Set "
                           "allow_high_price: true if it is real")  # fmt: skip
            if 0 < value < FLOOR and not allow_low:
                raise fail(where, f"{label}{field} {value} USD per 1M tokens is below {FLOOR}: "
                           "a per-token price typed as per-1M? Set allow_low_price: true if "
                           "it is real")  # fmt: skip


def _optional_decimal(spec: dict[Any, Any], field: str, where: str) -> Decimal | None:
    return to_decimal(spec[field], where, field) if spec.get(field) is not None else None


def _optional_count(spec: dict[Any, Any], field: str, where: str) -> int | None:
    return to_count(spec[field], where, field) if spec.get(field) is not None else None


def _default_size(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    size = normalize_size(str(raw))
    if size is None or size_pixels(size) is None:
        raise fail(where, f'image_default_size must be "WxH", got {raw!r}')
    return size


def _lower(raw: Any, where: str) -> str | None:
    return None if raw is None else to_text(raw, where, "image_default_quality").lower()
