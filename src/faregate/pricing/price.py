"""One price version of one model, as immutable values: token rates, image rules, service
tier and time-of-day multipliers. No parsing and no arithmetic on usage here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from faregate.pricing.errors import UnpricedUsage

Mode = Literal["chat", "embedding", "image", "moderation", "audio_transcription"]
MODES: frozenset[str] = frozenset(
    {"chat", "embedding", "image", "moderation", "audio_transcription"}
)
ANY = "*"
ONE = Decimal(1)
# Tier names that mean "the ordinary rate" unless an entry declares them explicitly.
STANDARD_TIERS: frozenset[str] = frozenset({"default", "standard", "auto"})


@dataclass(frozen=True, slots=True)
class TokenRates:
    """USD per 1M tokens. `cache_write`: input written to the provider's prompt cache for
    its default lifetime (Anthropic's 5-minute cache_creation_input_tokens, 1.25x its input
    rate); `input` where a provider charges no premium. `cache_write_1h`: input written to
    Anthropic's 1-hour cache (`"ttl": "1h"`, 2x its input rate); `cache_write` by default."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    reasoning: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal

    @property
    def dearest_cache_write(self) -> Decimal:
        return self.cache_write_1h if self.cache_write_1h > self.cache_write else self.cache_write


@dataclass(frozen=True, slots=True)
class ContextBand:
    """Rates for every token of a request whose input exceeds `above_input_tokens`."""

    above_input_tokens: int
    rates: TokenRates


@dataclass(frozen=True, slots=True)
class ImageRate:
    """USD per generated image of `size` ("WxH" or "*") at `quality` (or "*")."""

    size: str
    quality: str
    price: Decimal


@dataclass(frozen=True, slots=True)
class StepBracket:
    """USD per image of at most `max_size` pixels ("WxH"; None: any size) made with at
    most `max_steps` steps (None: any number)."""

    max_size: str | None
    max_steps: int | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class StepRule:
    """Diffusion pricing: `base + steps x per_step` per image, or a table of brackets
    sorted smallest size first, then fewest steps first."""

    default_steps: int | None
    base: Decimal = Decimal(0)
    per_step: Decimal | None = None
    table: tuple[StepBracket, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily window [start, end) in `tz`, in minutes after midnight; start > end wraps
    past midnight (16:30-00:30)."""

    start_minute: int
    end_minute: int
    tz: str
    multiplier: Decimal

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What a provider charges for one model from `effective_from` (UTC) on.

    Token prices are USD per 1M tokens; image, step and second prices are USD per unit.
    `tiers` and `windows` already include the provider-wide declarations.
    """

    model: str
    provider: str | None
    effective_from: datetime
    mode: Mode
    rates: TokenRates
    long_context: tuple[ContextBand, ...] = ()
    images: tuple[ImageRate, ...] = ()
    image_default_size: str | None = None
    image_default_quality: str | None = None
    per_megapixel: Decimal | None = None
    steps: StepRule | None = None
    per_second: Decimal | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    tiers: tuple[tuple[str, Decimal], ...] = ()
    windows: tuple[TimeWindow, ...] = ()
    source: str | None = None

    @property
    def input(self) -> Decimal:
        return self.rates.input

    @property
    def output(self) -> Decimal:
        return self.rates.output

    @property
    def cached_input(self) -> Decimal:
        return self.rates.cached_input

    @property
    def charges_cache_writes(self) -> bool:
        """Whether input written to the prompt cache costs more than input, at any length
        (read for every priced call: no generator for the bands most prices lack)."""
        rates = self.rates
        if rates.cache_write > rates.input or rates.cache_write_1h > rates.input:
            return True
        return bool(self.long_context) and any(
            band.rates.dearest_cache_write > band.rates.input for band in self.long_context
        )

    @property
    def reasoning(self) -> Decimal:
        return self.rates.reasoning

    @property
    def prices_images(self) -> bool:
        """True when generated images have their own price (table, megapixels or steps)."""
        return bool(self.images) or self.per_megapixel is not None or self.steps is not None

    def rates_for(self, input_tokens: int) -> TokenRates:
        """The token rates for a request with this many input tokens (long-context bands)."""
        rates = self.rates
        for band in self.long_context:
            if input_tokens > band.above_input_tokens:
                rates = band.rates
        return rates

    def tier_multiplier(self, tier: str | None) -> Decimal:
        if tier is None:
            return ONE
        name = tier.lower()
        for declared, multiplier in self.tiers:
            if declared == name:
                return multiplier
        if name in STANDARD_TIERS:
            return ONE
        raise UnpricedUsage(
            f"{self.label}: no price for service tier {tier!r}", code="unknown_service_tier"
        )

    def window_multiplier(self, at: datetime) -> Decimal:
        """The multiplier of the first declared window containing `at`, else 1."""
        for window in self.windows:
            if window.contains(at):
                return window.multiplier
        return ONE

    def dearest_window_multiplier(self) -> Decimal:
        if not self.windows:
            return ONE
        return max((w.multiplier for w in self.windows), default=ONE).max(ONE)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.provider else self.model
