"""What one upstream call cost us, exactly, and worst-case estimates before the call.

cost = ((uncached - cache writes) x input + 5-minute cache writes x cache_write
        + 1-hour cache writes x cache_write_1h + cached x cached_input + (output - reasoning) x output
        + reasoning x reasoning) / 1e6 + images x image price + seconds x per_second,
then x service-tier multiplier x time-of-day multiplier. `Usage.images` already counts
every generated image: it is never multiplied by the request's `n` again. `cost_parts`
gives the same cost per component (each token type, images, seconds), exactly.
"""

from __future__ import annotations

from datetime import datetime
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from functools import reduce
from typing import NamedTuple

from faregate.pricing.errors import UnpricedUsage
from faregate.pricing.images import image_unit_price, normalize_size
from faregate.pricing.price import ModelPrice, TokenRates
from faregate.usage import Usage

ZERO = Decimal(0)
# Every operation here must be exact; a rounding would raise instead of hiding.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
# The context's own operations trap as `localcontext(_EXACT)` would, without switching the
# thread's context: a switch costs about a microsecond, and a request priced three of them.
_mul, _add, _scaleb = _EXACT.multiply, _EXACT.add, _EXACT.scaleb


class CostParts(NamedTuple):
    """A call's cost per component, multipliers applied; `total` is their exact sum.
    `output` excludes reasoning tokens (the recorder's disjoint token types). A NamedTuple:
    made once per request, and a frozen dataclass's __init__ cost three times as much."""

    input: Decimal = ZERO
    cached_input: Decimal = ZERO
    output: Decimal = ZERO
    reasoning: Decimal = ZERO
    images: Decimal = ZERO
    seconds: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return reduce(_add, self)


def cost_of(usage: Usage, price: ModelPrice, *, at: datetime, tier: str | None = None) -> Decimal:
    """Exact USD cost of `usage` under `price` at instant `at` (tz-aware) and `tier`."""
    _require_aware(at)
    return _apply(
        _base_cost(usage, price), price.tier_multiplier(tier) * price.window_multiplier(at)
    )


def cost_parts(
    usage: Usage, price: ModelPrice, *, at: datetime, tier: str | None = None
) -> CostParts:
    """`cost_of` per component; the parts sum exactly to `cost_of(usage, price, ...)`
    (exact arithmetic distributes the multipliers)."""
    _require_aware(at)
    multiplier = price.tier_multiplier(tier) * price.window_multiplier(at)
    rates = price.rates_for(usage.input_tokens)
    visible, reasoning = _output_split(usage)
    images, seconds = _unit_costs(usage, price) if usage.images or usage.seconds else (ZERO, ZERO)
    parts = CostParts(
        _scaleb(_input_cost(usage, rates), -6),
        _scaleb(_mul(usage.cached_input_tokens, rates.cached_input), -6),
        _scaleb(_mul(visible, rates.output), -6),
        _scaleb(_mul(reasoning, rates.reasoning), -6),
        images,
        seconds,
    )
    if multiplier == 1:  # the usual case: no tier or time-of-day multiplier
        return parts
    return CostParts(*(_mul(part, multiplier) for part in parts))


def estimate_tokens_cost(
    price: ModelPrice,
    input_tokens: int,
    output_tokens: int,
    *,
    at: datetime,
    tier: str | None = None,
    worst_case_time: bool = False,
    cache_writes: bool = False,
    hour_writes: bool = False,
) -> Decimal:
    """Upper bound of a token call: no cache hits, output at the dearer of the output and
    reasoning rates. With `cache_writes` (the request asks the provider to cache its
    prompt), input at the dearer of the input and cache-write rates; with `hour_writes` too
    (a breakpoint asks for an hour), at the dearest of those and the 1-hour write rate. With
    `worst_case_time`, the dearest time-of-day window applies (for holds that may settle
    after a window boundary).

    The cost of that worst-case usage, `cost_of(Usage(input_tokens, output_tokens, ...))`,
    written out: every request is estimated, and the usage made and taken apart again cost
    more than the two products."""
    _require_aware(at)
    rates = price.rates_for(input_tokens)
    input_rate = rates.input
    if cache_writes:
        write = rates.dearest_cache_write if hour_writes else rates.cache_write
        if write > input_rate:
            input_rate = write
    output_rate = rates.reasoning if rates.reasoning > rates.output else rates.output
    total = _scaleb(_add(_mul(input_tokens, input_rate), _mul(output_tokens, output_rate)), -6)
    window = price.dearest_window_multiplier() if worst_case_time else price.window_multiplier(at)
    return _apply(total, price.tier_multiplier(tier) * window)


def estimate_images_cost(
    price: ModelPrice,
    n: int,
    size: str | None,
    quality: str | None,
    steps: int | None,
    *,
    at: datetime,
    tier: str | None = None,
    input_tokens: int = 0,
    worst_case_time: bool = False,
) -> Decimal:
    """Cost of generating `n` images; an unknown size or quality is priced at the dearest
    matching row (see faregate.pricing.images)."""
    if not price.prices_images:
        raise UnpricedUsage(f"{price.label}: images are priced per token; cannot estimate")
    width, height = _dimensions(size)
    usage = Usage(
        input_tokens=input_tokens,
        images=n,
        image_width=width,
        image_height=height,
        image_quality=quality,
        image_steps=steps,
    )
    return _estimate(usage, price, at, tier, worst_case_time)


def estimate_seconds_cost(
    price: ModelPrice,
    seconds: int | Decimal,
    *,
    at: datetime,
    tier: str | None = None,
    worst_case_time: bool = False,
) -> Decimal:
    """Cost of `seconds` of audio at the entry's per-second price (UnpricedUsage without
    one: a model billed per token prices its tokens, not its seconds)."""
    return _estimate(Usage(seconds=Decimal(seconds)), price, at, tier, worst_case_time)


def _estimate(
    usage: Usage, price: ModelPrice, at: datetime, tier: str | None, worst_case_time: bool
) -> Decimal:
    if not worst_case_time:
        return cost_of(usage, price, at=at, tier=tier)
    _require_aware(at)
    multiplier = price.tier_multiplier(tier) * price.dearest_window_multiplier()
    return _apply(_base_cost(usage, price), multiplier)


def _apply(total: Decimal, multiplier: Decimal) -> Decimal:
    return total if multiplier == 1 else _mul(total, multiplier)


def _base_cost(usage: Usage, price: ModelPrice) -> Decimal:
    total = _token_cost(usage, price.rates_for(usage.input_tokens))
    if usage.images or usage.seconds:
        total = reduce(_add, _unit_costs(usage, price), total)
    return total


def _token_cost(usage: Usage, rates: TokenRates) -> Decimal:
    visible, reasoning = _output_split(usage)
    per_million = reduce(
        _add,
        (
            _mul(usage.cached_input_tokens, rates.cached_input),
            _mul(visible, rates.output),
            _mul(reasoning, rates.reasoning),
        ),
        _input_cost(usage, rates),
    )
    return _scaleb(per_million, -6)  # exact: per 1M tokens


def _input_cost(usage: Usage, rates: TokenRates) -> Decimal:
    """The uncached input per 1M tokens: what was written to the provider's prompt cache at
    the cache-write rate of its lifetime (a part of the uncached input, never more; the
    1-hour writes a part of the writes), the rest at input's."""
    uncached = usage.uncached_input_tokens
    writes = usage.cache_write_tokens
    if not writes:
        return _mul(uncached, rates.input)
    if writes > uncached:
        writes = uncached
    hour = usage.cache_write_1h_tokens
    if hour > writes:
        hour = writes
    return reduce(
        _add,
        (_mul(writes - hour, rates.cache_write), _mul(hour, rates.cache_write_1h)),
        _mul(uncached - writes, rates.input),
    )


def _output_split(usage: Usage) -> tuple[int, int]:
    """The output tokens billed at the output rate and at the reasoning rate: the reasoning
    share is at most the output."""
    visible = usage.visible_output_tokens
    return visible, usage.output_tokens - visible


def _unit_costs(usage: Usage, price: ModelPrice) -> tuple[Decimal, Decimal]:
    """The images' and the seconds' cost, exactly (an image rule may divide: per
    megapixel)."""
    with localcontext(_EXACT):
        images = _image_cost(usage, price) if usage.images else ZERO
        seconds = ZERO
        if usage.seconds:
            if price.per_second is None:
                raise UnpricedUsage(f"{price.label}: no per-second price")
            seconds = usage.seconds * price.per_second
        return images, seconds


def _image_cost(usage: Usage, price: ModelPrice) -> Decimal:
    if not price.prices_images:
        # A token-priced image model: the images are the output tokens already counted.
        if price.mode == "image" and usage.output_tokens > 0 and price.output > 0:
            return ZERO
        raise UnpricedUsage(f"{price.label}: no price for generated images")
    size = usage.image_size if usage.image_width and usage.image_height else None
    unit = image_unit_price(price, size, usage.image_quality, usage.image_steps)
    return usage.images * unit


def _dimensions(size: str | None) -> tuple[int, int]:
    normal = normalize_size(size)
    if normal is None or "x" not in normal:
        return 0, 0
    width, height = normal.split("x")
    return int(width), int(height)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("`at` must be a timezone-aware datetime")
